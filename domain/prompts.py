"""The prompts of the text AI functions: plain text with UPPERCASE labelled sections
(`TITLE: …`, `KEYWORDS:` then one per line), which a model reads as well as a person does
and the simulator parses to answer with the caller's own words.

Pure functions of their inputs, so they are unit-tested without a database or a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape

from domain.titles import META_DESCRIPTION_MAX, META_TITLE_MAX

H2 = re.compile(r"<h2[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
TAGS = re.compile(r"<[^>]+>")
ALT_TEXT_MAX = 125
ARTICLE_WORDS = (900, 1400)
EXISTING_TITLES_MAX = 50  # enough for the model to see what the site has, bounded in cost


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str


@dataclass(frozen=True)
class SiteContext:
    name: str
    url: str = ""
    sector: str = ""


def text_of(html: str) -> str:
    return " ".join(unescape(TAGS.sub(" ", html or "")).split())


def headings(html: str) -> list[str]:
    return [h for h in (text_of(m) for m in H2.findall(html or "")) if h]


def one_line(text: str) -> str:
    """A value on one prompt line: a newline in a keyword or title cannot open a section."""
    return " ".join((text or "").split())


def _site_lines(site: SiteContext) -> list[str]:
    lines = [f"SITE: {one_line(site.name)}"]
    if site.url:
        lines.append(f"SITE_URL: {one_line(site.url)}")
    if site.sector:
        lines.append(f"SECTOR: {one_line(site.sector)}")
    return lines


def _bullets(items: list[str], empty: str = "(none)") -> list[str]:
    lines = [f"- {one_line(i)}" for i in items if one_line(i)]
    return lines or [f"- {empty}"]


# --------------------------------------------------------------------------- auto_cluster

_CLUSTER_SYSTEM = """\
You are a senior SEO strategist building the topical map of a website. You group the
site's keywords into clusters: one cluster is one topic that a single article can rank for.
Rules:
- Group by search intent first, then by topic. Intents: informational (wants to learn or
  solve a problem), commercial (compares options before buying: best, vs, review),
  transactional (ready to act: buy, price, deal, near me), navigational (looks for one
  brand, site or page). Keywords in one cluster share both intent and topic: never put a
  "how to" question and a "buy" query together.
- Every input keyword appears in exactly one cluster, copied verbatim (same spelling and
  case). Invent no keyword, drop none, repeat none.
- Prefer meaningful clusters of 2 to 10 keywords; a keyword that fits nowhere gets a
  cluster of its own rather than a forced match.
- name: 2 to 5 words naming the topic as a reader would say it (e.g. "Burr Coffee
  Grinders"), unique within the answer, without intent words or the site's name.
- intent: the cluster's shared intent.
- description: one line (under 160 characters) on what these searchers want to find.
Answer with JSON that matches the schema."""


def cluster_prompt(site: SiteContext, keywords: list[str]) -> Prompt:
    """Group one batch of the site's keywords into clusters by intent and topic."""
    user = "\n".join(
        [
            *_site_lines(site),
            f"KEYWORD_COUNT: {len(keywords)}",
            "",
            "KEYWORDS:",
            *_bullets(keywords),
            "",
            f"Cluster all {len(keywords)} keywords above; each in exactly one cluster.",
        ]
    )
    return Prompt(_CLUSTER_SYSTEM, user)


# --------------------------------------------------------------------------- generate_ideas

_IDEAS_SYSTEM = """\
You are the content strategist of a website. For one keyword cluster you propose the
articles the site should publish next, that it does not have yet.
Rules:
- Propose 2 or 3 ideas, each a distinct angle on the cluster (a complete guide, a how-to,
  a comparison, a list of tips...); never two articles answering the same question.
- title: specific and useful, under 70 characters, with the idea's main keyword in it
  naturally; no clickbait, no year unless the topic is about one.
- Never reuse or lightly reword a title listed under EXISTING_TITLES: the site already
  has those articles, and a second one on the same title competes with the first.
- description: one sentence on the angle and the reader, then the line "Sections:" and
  4 to 7 H2 headings, one per line, in reading order.
- target_keywords: 1 to 4 keywords copied verbatim from KEYWORDS, the idea's main
  keyword first; spread the cluster's keywords across the ideas so each is targeted.
- content_type: "post" for a blog article, "page" for an evergreen landing page.
- content_structure: the shape that serves the intent: how_to for a task, listicle for
  tips or picks, comparison or review for choosing, guide for a broad topic, faq for many
  small questions, article otherwise.
Answer with JSON that matches the schema."""


def ideas_prompt(
    site: SiteContext,
    cluster: str,
    description: str,
    keywords: list[str],
    existing_titles: list[str],
) -> Prompt:
    """2-3 article ideas for a cluster, steering clear of the site's existing titles."""
    user = "\n".join(
        [
            *_site_lines(site),
            f"CLUSTER: {one_line(cluster)}",
            f"CLUSTER_DESCRIPTION: {one_line(description) or '(none)'}",
            "",
            "KEYWORDS:",
            *_bullets(keywords),
            "",
            "EXISTING_TITLES:",
            *_bullets(existing_titles[:EXISTING_TITLES_MAX]),
            "",
            "Propose 2 or 3 new article ideas for this cluster, none of them on a title the",
            "site already has (EXISTING_TITLES).",
        ]
    )
    return Prompt(_IDEAS_SYSTEM, user)


# --------------------------------------------------------------------------- generate_content


@dataclass(frozen=True)
class ArticleBrief:
    """What the writer is asked for: one task's title and keywords, its idea's outline."""

    title: str
    focus_keyword: str
    target_keywords: list[str]
    secondary_keywords: list[str]
    outline: str = ""
    content_structure: str = "article"
    audience: str = ""
    tone: str = "Friendly, confident and expert: plain language, second person, no hype"


_CONTENT_SYSTEM = f"""\
You are an experienced SEO content writer. You write one complete, original article from
the brief below, for people first and search engines second.
Length and structure:
- {ARTICLE_WORDS[0]} to {ARTICLE_WORDS[1]} words of article text.
- An introduction of 2 short paragraphs that states the reader's problem and what they
  will get; no heading before it.
- 4 to 7 <h2> sections following the OUTLINE (adapt it where it helps the reader),
  with <h3> subsections where a section has distinct parts.
- At least one <ul> or <ol> list (steps, tips, checklist or comparison points).
- End with an FAQ section (<h2> then 2 to 4 questions as <h3> with short answers) or a
  conclusion with a clear next step.
On-page SEO rules:
- Use the FOCUS_KEYWORD in the first 100 words and in at least one <h2>, then naturally;
  never stuff keywords (at most about 1 use per 100 words); use the KEYWORDS and
  SECONDARY_KEYWORDS where they fit, with close variants and related terms.
- meta_title: at most {META_TITLE_MAX} characters, the focus keyword near the start.
- meta_description: at most {META_DESCRIPTION_MAX} characters, contains the focus
  keyword, says what the reader gets and invites the click.
- slug: the focus keyword as lowercase words joined by hyphens, no stop words, no dates.
- title: the TITLE as given (fix capitalisation only).
- focus_keyword: the FOCUS_KEYWORD; target_keywords: the keywords you used.
- html: the body only: <p>, <h2>, <h3>, <ul>/<ol>/<li>, <strong>, <em>; no <h1>, no
  <html>/<body>, no inline styles, no links you cannot verify, no made-up statistics.
- word_count: the number of words in the article text.
Answer with JSON that matches the schema."""


def content_prompt(site: SiteContext, brief: ArticleBrief) -> Prompt:
    """A full SEO writing brief for one article."""
    audience = brief.audience or (
        f"Readers of {one_line(site.name) or 'the site'}"
        + (f" interested in {one_line(site.sector)}" if site.sector else "")
        + f', searching for "{one_line(brief.focus_keyword)}"'
    )
    outline = [line for line in (brief.outline or "").splitlines() if line.strip()]
    user = "\n".join(
        [
            *_site_lines(site),
            f"TITLE: {one_line(brief.title)}",
            f"FOCUS_KEYWORD: {one_line(brief.focus_keyword)}",
            f"CONTENT_STRUCTURE: {one_line(brief.content_structure) or 'article'}",
            f"AUDIENCE: {one_line(audience)}",
            f"TONE: {one_line(brief.tone)}",
            f"WORDS: {ARTICLE_WORDS[0]}-{ARTICLE_WORDS[1]}",
            "",
            "KEYWORDS:",
            *_bullets(brief.target_keywords or [brief.focus_keyword]),
            "",
            "SECONDARY_KEYWORDS:",
            *_bullets(brief.secondary_keywords),
            "",
            "OUTLINE:",
            *_bullets([line.strip().lstrip("-*• ").strip() for line in outline], "(free)"),
            "",
            "Write the article now.",
        ]
    )
    return Prompt(_CONTENT_SYSTEM, user)


# --------------------------------------------------------------------------- image prompts


def image_prompts_prompt(
    site: SiteContext,
    title: str,
    html: str,
    focus_keyword: str,
    keywords: list[str],
    in_article: int,
) -> Prompt:
    """Prompts and alt text for an article's featured image and `in_article` images, one
    per section in reading order."""
    system = "\n".join(
        [
            "You are the art director of a content website. You brief an image model for",
            "the pictures of one article: a featured (hero) image and in-article images.",
            "Rules for every prompt:",
            "- describe one concrete scene: subject, setting, composition, light, style;",
            "- keep one consistent visual style across the article's images;",
            "- no text, letters, logos, watermarks, brand names or real people's likenesses;",
            "- the featured image sums up the whole article and works as a wide crop.",
            "Rules for every alt text:",
            f"- describe what the image shows for a screen-reader user, under {ALT_TEXT_MAX}"
            " characters;",
            "- use the focus keyword naturally at most once across the alt texts; never stuff",
            "  keywords; do not start with 'image of' or 'picture of'.",
            "Answer with JSON that matches the schema.",
        ]
    )
    sections = headings(html) or [title]
    user = "\n".join(
        [
            *_site_lines(site),
            f"TITLE: {title}",
            f"FOCUS_KEYWORD: {focus_keyword or (keywords[0] if keywords else title)}",
            f"MAX_IN_ARTICLE: {in_article}",
            "",
            "KEYWORDS:",
            *[f"- {k}" for k in keywords or [title]],
            "",
            "ARTICLE OUTLINE (one in-article image per section, in this order):",
            *[f"<h2>{h}</h2>" for h in sections],
            "",
            f"Write the featured image and exactly {in_article} in-article images.",
        ]
    )
    return Prompt(system, user)


def clip_alt_text(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= ALT_TEXT_MAX:
        return text
    return text[: ALT_TEXT_MAX - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
