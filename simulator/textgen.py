"""Deterministic, useful answers for the four text AI functions, picked by schema name.

Each answer is derived from a hash of the request, so a retried activity gets the same
answer (what makes simulated runs reproducible), and it uses the caller's own keywords and
titles, so a demo pipeline produces content that reads like the real thing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from simulator.article import write_article
from simulator.clustering import cluster_keywords, cluster_name
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

_CLUSTER_DESCRIPTIONS = (
    'Searches about {name}, sharing one intent and led by "{first}" ({count}).',
    'People researching {name}: questions, comparisons and buying queries such as "{first}".',
    'Covers {name} end to end, starting from "{first}" ({count} in total).',
)


def auto_cluster(request: PromptInput) -> dict[str, Any]:
    """Every input keyword in exactly one cluster, grouped by shared stems."""
    clusters = []
    used: set[str] = set()
    for head, members in cluster_keywords(request.keywords()):
        name = _unique(title_case(cluster_name(head, members)), used)
        template = request.rng.choice(_CLUSTER_DESCRIPTIONS)
        count = f"{len(members)} keyword{'s' if len(members) != 1 else ''}"
        description = template.format(name=name.lower(), count=count, first=members[0])
        clusters.append({"name": name, "description": description, "keywords": members})
    return {"clusters": clusters}


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate.lower() in used:
        candidate, n = f"{name} ({n})", n + 1
    used.add(candidate.lower())
    return candidate


# --------------------------------------------------------------------------- generate_ideas

_IDEA_TITLES = (
    "The Complete Guide to {c}",
    "{c}: {n} Practical Tips for Better Results",
    "How to Choose the Right {c}",
    "{c} Explained: What Beginners Need to Know",
    "Common {c} Mistakes (and How to Avoid Them)",
    "{c} Compared: Options, Costs and Trade-offs",
    "A Step-by-Step Plan for {c}",
)
_IDEA_ANGLES = (
    'a practical walkthrough for readers searching "{kw}"',
    'an evidence-based explainer aimed at people comparing options for "{kw}"',
    'a beginner-friendly guide that answers the questions behind "{kw}"',
    'a checklist-style article for readers ready to act on "{kw}"',
)


def generate_ideas(request: PromptInput) -> dict[str, Any]:
    """Two or three distinct article ideas that split the cluster's keywords between them."""
    cluster = request.value("CLUSTER") or request.value("TOPIC") or "This Topic"
    keywords = request.keywords() or [cluster.lower()]
    count = 3 if len(keywords) >= 3 and request.rng.random() < 0.6 else 2
    templates = request.rng.sample(_IDEA_TITLES, count)
    ideas = []
    for index, template in enumerate(templates):
        targets = keywords[index::count] or [keywords[0]]
        ideas.append(_idea(request.rng, title_case(cluster), template, targets))
    return {"ideas": ideas}


def _idea(rng: random.Random, cluster: str, template: str, targets: list[str]) -> dict[str, Any]:
    title = template.format(c=cluster, n=rng.choice((5, 7, 9, 10, 12)))
    angle = rng.choice(_IDEA_ANGLES).format(kw=targets[0])
    extra = f" Also targets {', '.join(targets[1:])}." if len(targets) > 1 else ""
    return {
        "title": title,
        "description": f"{angle[0].upper()}{angle[1:]}, with examples and clear next steps.{extra}",
        "content_type": "post",
        "content_structure": "article",
        "target_keywords": targets,
    }


# --------------------------------------------------------------------------- generate_content


def generate_content(request: PromptInput) -> dict[str, Any]:
    """A 600-1200 word HTML article with h2 sections, paragraphs and a list."""
    keywords = request.keywords()
    title = request.value("TITLE") or f"A Practical Guide to {title_case(_topic(keywords))}"
    return write_article(request.rng, title, keywords or [_topic(keywords, title)])


def _topic(keywords: list[str], title: str = "") -> str:
    return keywords[0] if keywords else (title.lower() or "the topic")


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
