"""Deterministic, useful answers for the four text AI functions, picked by schema name.

Each answer is derived from a hash of the request, so a retried activity gets the same
answer (what makes simulated runs reproducible), and it uses the caller's own keywords and
titles, so a demo pipeline produces content that reads like the real thing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from domain.titles import normalise_title
from simulator.article import WORDS, Brief, is_question, noun_topic, outline, write_article
from simulator.clustering import cluster_intent, cluster_keywords, cluster_name
from simulator.prompts import (
    headings,
    parse_sections,
    section_int,
    section_keywords,
    section_text,
    seeded_rng,
    title_case,
)

Generator = Callable[["PromptInput"], dict[str, Any]]


class PromptInput:
    """The request as a generator sees it: labelled sections, full text and a seeded RNG."""

    def __init__(self, schema_name: str, system: str, user: str, schema: dict[str, Any] | None):
        self.schema_name = schema_name
        self.text = user
        self.schema = schema
        self.sections = {**parse_sections(system), **parse_sections(user)}
        self.rng: random.Random = seeded_rng(schema_name, system, user)

    def keywords(self) -> list[str]:
        return section_keywords(self.sections)

    def listed(self, label: str) -> list[str]:
        """A list section's entries, without placeholders such as "(none)"."""
        entries = section_keywords(self.sections, label)
        return [e for e in entries if not (e.startswith("(") and e.endswith(")"))]

    def value(self, label: str, default: str = "") -> str:
        return section_text(self.sections, label, default)


def generate(
    schema_name: str, system: str, user: str, schema: dict[str, Any] | None
) -> dict[str, Any]:
    """Answer for `schema_name`; unknown names get an object built from the schema."""
    request = PromptInput(schema_name, system, user, schema)
    generator = GENERATORS.get(schema_name, _generic)
    return generator(request)


# --------------------------------------------------------------------------- auto_cluster

_CLUSTER_DESCRIPTIONS = {
    "informational": (
        'People learning about {name}, with searches such as "{first}" ({count}).',
        'Searchers who want {name} explained, starting from "{first}" ({count}).',
    ),
    "commercial": (
        'Shoppers comparing {name} before they buy, e.g. "{first}" ({count}).',
        'Buyers weighing options and reviews of {name}, led by "{first}" ({count}).',
    ),
    "transactional": (
        'Searchers ready to buy or book {name}, e.g. "{first}" ({count}).',
        'People looking for prices and deals on {name}, led by "{first}" ({count}).',
    ),
    "navigational": (
        'Searchers looking for a specific {name} site or page, e.g. "{first}" ({count}).',
    ),
}


def auto_cluster(request: PromptInput) -> dict[str, Any]:
    """Every input keyword in exactly one cluster, grouped by shared stems, each cluster
    with the intent most of its keywords signal."""
    clusters = []
    used: set[str] = set()
    for head, members in cluster_keywords(request.listed("KEYWORDS")):
        name = _unique(title_case(cluster_name(head, members)), used)
        intent = cluster_intent(members)
        template = request.rng.choice(_CLUSTER_DESCRIPTIONS[intent])
        count = f"{len(members)} keyword{'s' if len(members) != 1 else ''}"
        description = template.format(name=name.lower(), count=count, first=members[0])
        clusters.append(
            {"name": name, "intent": intent, "description": description, "keywords": members}
        )
    return {"clusters": clusters}


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate.lower() in used:
        candidate, n = f"{name} ({n})", n + 1
    used.add(candidate.lower())
    return candidate


# --------------------------------------------------------------------------- generate_ideas

# (content_structure, title template): {K} the keyword, {B} it without "best"/"top".
_TOPIC_IDEAS = (
    ("guide", "The Complete Guide to {K}"),
    ("listicle", "{K}: {n} Practical Tips for Better Results"),
    ("comparison", "How to Choose the Right {B}"),
    ("article", "{K} Explained: What Beginners Need to Know"),
    ("listicle", "Common {B} Mistakes (and How to Avoid Them)"),
    ("comparison", "{B} Compared: Options, Costs and Trade-offs"),
    ("how_to", "A Step-by-Step Plan for {K}"),
)
_COMMERCIAL_IDEAS = (
    ("comparison", "{n} Best {B} Compared"),
    ("review", "{B} Reviews: What Is Actually Worth Buying"),
    ("guide", "{B} Buying Guide: What to Look For"),
)
_QUESTION_IDEAS = (
    ("how_to", "{K}: A Step-by-Step Guide"),
    ("guide", "{K}: Everything You Need to Know"),
    ("faq", "{K}: Simple Answers and Expert Tips"),
)
_IDEA_ANGLES = (
    'A practical walkthrough for readers searching "{kw}".',
    'An evidence-based explainer for people comparing options around "{kw}".',
    'A beginner-friendly guide that answers the questions behind "{kw}".',
    'A checklist-style article for readers ready to act on "{kw}".',
)


def generate_ideas(request: PromptInput) -> dict[str, Any]:
    """Two or three distinct ideas that split the cluster's keywords between them. A title
    is derived from its main keyword (so ideas differ across clusters and the same keyword
    gets the same title), skipping titles listed under EXISTING_TITLES verbatim."""
    cluster = request.value("CLUSTER") or request.value("TOPIC") or "This Topic"
    keywords = request.listed("KEYWORDS") or [cluster.lower()]
    used = {t.lower() for t in request.listed("EXISTING_TITLES")}
    count = 3 if len(keywords) >= 3 and request.rng.random() < 0.6 else 2
    ideas = []
    for index in range(count):
        targets = keywords[index::count] or [keywords[index % len(keywords)]]
        idea = _idea(cluster, targets, used)
        used.add(idea["title"].lower())
        ideas.append(idea)
    return {"ideas": ideas}


def _idea(cluster: str, targets: list[str], used: set[str]) -> dict[str, Any]:
    main = targets[0]
    rng = seeded_rng("idea", normalise_title(main))  # the keyword's own, not the prompt's
    kinds = list(_idea_kinds(main))
    rng.shuffle(kinds)
    n = rng.choice((5, 7, 9, 10, 12))
    base = title_case(noun_topic(main))
    titles = [(s, t.format(K=title_case(main), B=base, n=n)) for s, t in kinds]
    structure, title = next(((s, t) for s, t in titles if t.lower() not in used), titles[0])
    if title.lower() in used:
        title = f"{title}: {len(used) + 1} More Ideas"
    sections = outline(rng, noun_topic(main, cluster), targets, rng.randint(4, 6))
    angle = rng.choice(_IDEA_ANGLES).format(kw=main)
    also = f" Also targets {', '.join(targets[1:])}." if len(targets) > 1 else ""
    return {
        "title": title,
        "description": "\n".join([f"{angle}{also}", "Sections:", *sections]),
        "content_type": "post",
        "content_structure": structure,
        "target_keywords": targets,
    }


def _idea_kinds(keyword: str) -> tuple[tuple[str, str], ...]:
    if is_question(keyword):
        return _QUESTION_IDEAS
    if cluster_intent([keyword]) == "commercial":
        return _COMMERCIAL_IDEAS + _TOPIC_IDEAS[:2]
    return _TOPIC_IDEAS


# --------------------------------------------------------------------------- generate_content

_OUTLINE_NOISE = re.compile(r"^(?:sections?|outline)\b", re.IGNORECASE)


def generate_content(request: PromptInput) -> dict[str, Any]:
    """A 900-1,400 word HTML article on the brief, with its SEO fields."""
    keywords = request.listed("KEYWORDS")
    topic = keywords[0] if keywords else ""
    title = request.value("TITLE") or f"A Practical Guide to {title_case(topic or 'the topic')}"
    focus = request.value("FOCUS_KEYWORD") or topic or title.lower()
    brief = Brief(
        title=title,
        focus=focus,
        keywords=keywords or [focus],
        secondary=request.listed("SECONDARY_KEYWORDS"),
        outline=[h for h in request.listed("OUTLINE") if _is_heading(h)],
        words=_word_range(request.value("WORDS")),
    )
    return write_article(request.rng, brief)


def _is_heading(line: str) -> bool:
    """An outline line that reads as a section heading, not the idea's summary."""
    return 0 < len(line) <= 90 and not line.endswith((".", ":")) and not _OUTLINE_NOISE.match(line)


def _word_range(text: str) -> tuple[int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", text.replace(",", ""))]
    if len(numbers) >= 2 and 300 <= numbers[0] < numbers[1]:
        return numbers[0], numbers[1]
    return WORDS


# --------------------------------------------------------------------------- image prompts

_STYLES = (
    "A bright editorial photograph",
    "A clean, modern flat illustration",
    "A cinematic wide-angle photo",
    "A warm lifestyle photograph",
    "A detailed isometric illustration",
)
_COMPOSITIONS = (
    "soft natural light, shallow depth of field",
    "top-down view on a neutral background",
    "balanced composition with a muted colour palette",
    "close-up detail, crisp focus, high resolution",
    "wide shot with plenty of negative space",
)


def generate_image_prompts(request: PromptInput) -> dict[str, Any]:
    """One featured image and exactly MAX_IN_ARTICLE in-article images, each a prompt with
    its alt text."""
    title = request.value("TITLE") or "the article"
    count = max(0, section_int(request.sections, "MAX_IN_ARTICLE", 2))
    subjects = headings(request.text) or request.keywords() or [title]
    featured = {
        "prompt": _image_prompt(request.rng, title, title),
        "alt_text": _alt_text(title, title),
    }
    in_article = []
    for i in range(count):
        subject = _subject(subjects, i)
        in_article.append(
            {
                "prompt": _image_prompt(request.rng, subject, title, i),
                "alt_text": _alt_text(subject, title),
            }
        )
    return {"featured": featured, "in_article": in_article}


def _alt_text(subject: str, title: str) -> str:
    """Short and descriptive, as accessibility guidelines ask (under 125 characters)."""
    text = f"Illustration of {subject}" if subject != title else f"Featured image: {title}"
    return text if len(text) <= 120 else text[:117].rstrip() + "..."


def _subject(subjects: list[str], index: int) -> str:
    """Cycle through the sections; a second pass gets a distinct label so prompts differ."""
    subject = subjects[index % len(subjects)]
    lap = index // len(subjects)
    return subject if lap == 0 else f"{subject}, detail {lap + 1}"


def _image_prompt(rng: random.Random, subject: str, title: str, variant: int = -1) -> str:
    style = rng.choice(_STYLES)
    composition = rng.choice(_COMPOSITIONS)
    if variant < 0:
        where = f'the featured image of an article titled "{title}"'
    else:
        where = f'the part about "{subject}" in an article titled "{title}"'
    return f"{style} for {where}; {composition}; no text, no logos."


# --------------------------------------------------------------------------- anything else


def _generic(request: PromptInput) -> dict[str, Any]:
    """Unknown function: satisfy whatever schema came with it, or a plain result object."""
    if request.schema and request.schema.get("type") == "object":
        value = _from_schema(request.schema, request.rng, "result")
        if isinstance(value, dict):
            return value
    return {"result": f"Simulated answer for {request.schema_name or 'an unnamed request'}"}


def _from_schema(schema: dict[str, Any], rng: random.Random, name: str) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _from_schema(schema["anyOf"][0], rng, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: _from_schema(sub, rng, key) for key, sub in props.items()}
    if kind == "array":
        return [_from_schema(schema.get("items", {"type": "string"}), rng, name)]
    return _scalar(kind, rng, name)


def _scalar(kind: Any, rng: random.Random, name: str) -> Any:
    if kind == "integer":
        return rng.randint(1, 10)
    if kind == "number":
        return round(rng.uniform(0, 1), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return f"simulated {name.replace('_', ' ')}"


GENERATORS: dict[str, Generator] = {
    "auto_cluster": auto_cluster,
    "generate_ideas": generate_ideas,
    "generate_content": generate_content,
    "generate_image_prompts": generate_image_prompts,
}
