"""Keyword clustering for the simulated `auto_cluster`: group keywords by a shared stem.

Not a model, but good enough that a demo run produces clusters a person would accept:
"best coffee grinder" and "coffee grinder reviews" land together, every keyword lands
exactly once, and SEO modifiers such as "best" or "how" never define a cluster.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise

_STOPWORD_TEXT = """
    a an and are as at be by can do does for from get how i in is it me my near of on or
    the to vs what when where which who why will with without you your best top cheap buy
    free online good new easy review reviews guide tips ideas list 2023 2024 2025 2026 make
    use using vs. versus under over most more"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
DOMINANT_SHARE = 0.6  # a stem in more than this share of keywords is the site topic


def words(keyword: str) -> list[str]:
    return _WORD.findall(keyword.lower())


def stem(word: str) -> str:
    """A light suffix stripper: plurals, -ing and -ed, enough to join obvious variants."""
    word = word.removesuffix("'s")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    for suffix in ("ing", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            base = word[: -len(suffix)]
            return base[:-1] if len(base) > 2 and base[-1] == base[-2] else base
    return word


def significant_stems(keyword: str) -> list[str]:
    """Stems of the words that say what a keyword is about, in order."""
    return [stem(w) for w in words(keyword) if w not in STOPWORDS and not w.isdigit()]


def features(keyword: str) -> tuple[list[str], list[str]]:
    """(adjacent stem pairs, single stems): pairs such as "coffee grinder" group first."""
    stems = significant_stems(keyword)
    pairs = [f"{a} {b}" for a, b in pairwise(stems) if a != b]
    return list(dict.fromkeys(pairs)), list(dict.fromkeys(stems))


def cluster_keywords(keywords: list[str]) -> list[tuple[str, list[str]]]:
    """[(head, members)] covering every keyword exactly once; head is "" for a loner.

    Greedy set cover in three passes: shared stem pairs, then shared words other than
    the site's dominant topic word, then any shared word; leftovers stand alone.
    """
    pairs, singles = zip(*(features(k) for k in keywords), strict=True) if keywords else ((), ())
    unassigned = list(range(len(keywords)))
    dominant = _dominant_stems(list(singles))
    groups = _greedy(list(pairs), unassigned, set())
    groups += _greedy(list(singles), unassigned, dominant)
    groups += _greedy(list(singles), unassigned, set())
    groups += [("", [i]) for i in unassigned]
    groups.sort(key=lambda group: min(group[1]))
    return [(head, [keywords[i] for i in sorted(members)]) for head, members in groups]


def _dominant_stems(stems: list[list[str]]) -> set[str]:
    if len(stems) < 6:
        return set()
    counts = Counter(s for group in stems for s in group)
    return {s for s, n in counts.items() if n > DOMINANT_SHARE * len(stems)}


def _greedy(
    feats: list[list[str]], unassigned: list[int], excluded: set[str]
) -> list[tuple[str, list[int]]]:
    """Repeatedly take the feature shared by the most unassigned keywords (set cover)."""
    groups: list[tuple[str, list[int]]] = []
    while True:
        head = _best_feature(feats, unassigned, excluded)
        if head is None:
            return groups
        members = [i for i in unassigned if head in feats[i]]
        groups.append((head, members))
        unassigned[:] = [i for i in unassigned if i not in members]


def _best_feature(feats: list[list[str]], unassigned: list[int], excluded: set[str]) -> str | None:
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for i in unassigned:
        for f in feats[i]:
            if f not in excluded:
                counts[f] += 1
                first_seen.setdefault(f, i)
    if not counts:
        return None
    best = max(counts, key=lambda f: (counts[f], -first_seen[f]))
    return best if counts[best] >= 2 else None


def cluster_name(head: str, members: list[str]) -> str:
    """The longest phrase around the head that most members share, e.g. "coffee grinder"."""
    if not head or len(members) == 1:
        return members[0]
    needed = max(2, math.ceil(len(members) * DOMINANT_SHARE))
    head_stems = head.split()
    for size in range(3, len(head_stems) - 1, -1):
        counts = Counter(
            p for m in members for p in set(_phrases(m, size)) if _contains(p, head_stems)
        )
        common = [p for p, n in counts.most_common() if n >= needed or size == len(head_stems)]
        if common:
            return common[0]
    return head


def _phrases(keyword: str, size: int) -> list[str]:
    tokens = words(keyword)
    out = []
    for i in range(len(tokens) - size + 1):
        gram = tokens[i : i + size]
        if gram[0] not in STOPWORDS and gram[-1] not in STOPWORDS:
            out.append(" ".join(gram))
    return out


def _contains(phrase: str, head_stems: list[str]) -> bool:
    stems = [stem(w) for w in phrase.split()]
    width = len(head_stems)
    return any(stems[i : i + width] == head_stems for i in range(len(stems) - width + 1))


# --------------------------------------------------------------------------- search intent

_TRANSACTIONAL = """buy price prices pricing cheap deal deals discount coupon order shop sale
    cost costs hire rent booking book subscription"""
_COMMERCIAL = "best top review reviews vs versus compare comparison alternative alternatives"
_NAVIGATIONAL = "login signin official website app download"
_INTENT_MARKERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("transactional", frozenset(_TRANSACTIONAL.split())),
    ("commercial", frozenset(_COMMERCIAL.split())),
    ("navigational", frozenset(_NAVIGATIONAL.split())),
)


def keyword_intent(keyword: str) -> str:
    """The search intent its modifiers signal ("buy" → transactional, "best" →
    commercial, "login" → navigational); informational when none does."""
    tokens = set(words(keyword))
    if "near" in tokens and "me" in tokens:
        return "transactional"
    for intent, markers in _INTENT_MARKERS:
        if tokens & markers:
            return intent
    return "informational"


_TIE_ORDER = ("transactional", "commercial", "navigational", "informational")


def cluster_intent(members: list[str]) -> str:
    """The most common intent of the members; a tie goes to the more specific intent (a
    buying signal says more about a searcher than its absence)."""
    counts = Counter(keyword_intent(k) for k in members)
    return max(_TIE_ORDER, key=lambda intent: (counts[intent], -_TIE_ORDER.index(intent)))
