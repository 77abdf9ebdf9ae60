"""The prompts of the text AI functions: plain text with UPPERCASE labelled sections
(`TITLE: …`, `KEYWORDS:` then one per line), which a model reads as well as a person does
and the simulator parses to answer with the caller's own words.

Pure functions of their inputs, so they are unit-tested without a database or a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape

H2 = re.compile(r"<h2[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
TAGS = re.compile(r"<[^>]+>")
ALT_TEXT_MAX = 125


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


def _site_lines(site: SiteContext) -> list[str]:
    lines = [f"SITE: {site.name}"]
    if site.url:
        lines.append(f"SITE_URL: {site.url}")
    if site.sector:
        lines.append(f"SECTOR: {site.sector}")
    return lines


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
