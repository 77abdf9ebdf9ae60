"""Titles, slugs and the length limits search engines show, as the pipeline enforces them.

A site must never get two articles on the same title (DESIGN §2), and "The Best Café
Grinders", "best cafe grinders!" and "Best Café-Grinders" are the same title to a reader
and to a search engine: `normalise_title` maps them to one key. `slugify` and `clip_words`
enforce on our side what the prompts ask of a model (URL slugs, meta title and description
lengths), since a model's answer is a request, not a guarantee.
"""

from __future__ import annotations

import re
import unicodedata

LEADING_ARTICLES = ("the", "a", "an")
SLUG_MAX = 80
META_TITLE_MAX = 60
META_DESCRIPTION_MAX = 160
_APOSTROPHES = re.compile(r"['’‘`´]")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def fold(text: str) -> str:
    """Lowercase ASCII letters and digits of `text`: accents stripped (é → e), "&" read as
    "and", apostrophes dropped ("don't" → "dont"), any other punctuation a space."""
    decomposed = unicodedata.normalize("NFKD", text.replace("&", " and "))
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    ascii_text = _APOSTROPHES.sub("", ascii_text.lower())
    return " ".join(_NON_WORD.sub(" ", ascii_text).split())


def normalise_title(title: str) -> str:
    """The key two titles are compared by: folded, and without a leading "the/a/an"."""
    words = fold(title).split()
    if len(words) > 1 and words[0] in LEADING_ARTICLES:
        words = words[1:]
    return " ".join(words)


def slugify(text: str, max_length: int = SLUG_MAX) -> str:
    """A URL slug: lowercase ASCII words joined by hyphens, cut at a hyphen to fit."""
    slug = fold(text).replace(" ", "-")
    if len(slug) <= max_length:
        return slug
    head = slug[: max_length + 1]
    cut = head.rsplit("-", 1)[0] if "-" in head else slug[:max_length]
    return cut[:max_length].strip("-")


def unique_slug(slug: str, taken: set[str], max_length: int = SLUG_MAX) -> str:
    """`slug`, or `slug-2`, `slug-3`… : the first not in `taken` (the site's slugs)."""
    if slug not in taken:
        return slug
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = slug[: max_length - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1


def clip_words(text: str, limit: int) -> str:
    """`text` with whitespace collapsed, cut at a word boundary to at most `limit`
    characters (a word longer than the limit is cut), without dangling punctuation."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    clipped = cut.rsplit(" ", 1)[0] if " " in cut else text[:limit]
    return clipped.rstrip(" ,;:-–—(") or text[:limit]
