"""Read the labelled sections (`KEYWORDS:`, `TITLE: ...`) out of a prompt.

The prompts the activities build are plain text with UPPERCASE labels; the simulator reads
them the way a model would, so its answers use the caller's real keywords and titles.
A section runs from its label to the first blank line or the next label.
"""

from __future__ import annotations

import hashlib
import random
import re

_LABEL = re.compile(r"^\s*([A-Z][A-Z0-9_ ]{0,40}):\s*(.*)$")
_BULLET = re.compile(r"^\s*(?:[-*•]\s+)")
_H2 = re.compile(r"<h2[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def parse_sections(text: str) -> dict[str, list[str]]:
    """Map each LABEL to its value: the inline text, or the lines below a bare label."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _LABEL.match(line)
        if match:
            label, inline = match.group(1).strip(), match.group(2).strip()
            lines: list[str] = [inline] if inline else []
            if label not in sections:  # the first occurrence wins
                sections[label] = lines
            # An inline value ("TITLE: x") is the whole section; a bare label opens a list.
            current = None if inline else lines
        elif current is not None:
            if line.strip():
                current.append(line.strip())
            elif current:
                current = None
    return sections


def section_text(sections: dict[str, list[str]], label: str, default: str = "") -> str:
    lines = sections.get(label)
    return " ".join(lines).strip() if lines else default


def section_keywords(sections: dict[str, list[str]], label: str = "KEYWORDS") -> list[str]:
    """Keywords one per line (bullets stripped), or comma-separated on the label's line."""
    lines = sections.get(label) or []
    if len(lines) == 1 and "," in lines[0]:
        lines = lines[0].split(",")
    seen: set[str] = set()
    keywords = []
    for line in lines:
        keyword = _BULLET.sub("", line).strip()
        if keyword and keyword.lower() not in seen:
            seen.add(keyword.lower())
            keywords.append(keyword)
    return keywords


def section_int(sections: dict[str, list[str]], label: str, default: int) -> int:
    match = re.search(r"-?\d+", section_text(sections, label))
    return int(match.group()) if match else default


def headings(text: str) -> list[str]:
    """h2 headings of an article pasted into the prompt (for image prompts per section)."""
    return [" ".join(_TAG.sub("", h).split()) for h in _H2.findall(text) if _TAG.sub("", h).strip()]


def seeded_rng(*parts: str) -> random.Random:
    """Same input, same output: every simulated answer draws from a hash of its input."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def title_case(text: str) -> str:
    """Title-case without shouting short joining words or mangling acronyms."""
    small = {"a", "an", "and", "or", "the", "of", "for", "in", "on", "to", "vs", "with"}
    words = text.split()
    out = []
    for index, word in enumerate(words):
        if word.isupper() and len(word) > 1:
            out.append(word)
        elif index and word.lower() in small:
            out.append(word.lower())
        else:
            out.append(word[:1].upper() + word[1:])
    return " ".join(out)
