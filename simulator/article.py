"""The simulated `generate_content` article: real-looking HTML of 600-1200 words.

Sections, paragraphs and a list are assembled from sentence templates filled with the
caller's title and keywords, so review screens, word counts, credit estimates and the
WordPress publisher all see something shaped like a model's article.
"""

from __future__ import annotations

import html
import random
import re
from typing import Any

from simulator.prompts import title_case

_TAG = re.compile(r"<[^>]+>")

_HEADINGS = (
    "What Is {T}?",
    "Why {T} Matters",
    "How to Get Started with {T}",
    "Key Benefits of {T}",
    "Common Mistakes to Avoid",
    "Choosing the Right Approach to {T}",
    "{T} Step by Step",
    "What the Experts Recommend",
    "Costs, Time and Trade-offs",
    "How to Measure Success",
    "Advanced Tips for {T}",
    "Understanding {K}",
)
_INTRO = (
    "If you have ever searched for {kw}, you already know how much conflicting advice is out "
    "there.",
    "This guide cuts through the noise and explains {topic} in plain language.",
    "We looked at what actually works, what wastes time, and what most people overlook.",
    "Whether you are just starting out or refining an existing routine, the ideas below will "
    "help you make better decisions.",
    "By the end you will have a clear plan and a short checklist you can use today.",
    "Along the way we cover {kw}, the questions people ask most, and the trade-offs that matter.",
)
_BODY = (
    "The first thing to understand about {kw} is that small choices add up over time.",
    "Many readers start with {kw} because it promises quick results, but consistency matters "
    "more than any single trick.",
    "A good rule of thumb is to test one change at a time and keep notes on what happens.",
    "When people struggle with {topic}, the cause is usually a missing basic rather than a "
    "lack of advanced knowledge.",
    "It helps to set a realistic goal before you begin, so you can tell whether your effort "
    "is paying off.",
    "Quality beats quantity here: a few well-chosen steps outperform a long list of half-done "
    "tasks.",
    "Budget is another factor, and {kw} does not have to be expensive to be effective.",
    "Experienced practitioners often say that {topic} rewards patience more than talent.",
    "Look for options that fit how you already work instead of forcing a completely new routine.",
    "Reading reviews and comparing a few alternatives will save you from the most common regrets.",
    "If something feels overly complicated, there is usually a simpler version that delivers "
    "most of the benefit.",
    "Keep in mind that what works for one person may need adjusting for another, especially "
    "with {kw}.",
    "Tracking a handful of simple numbers makes it much easier to see real progress.",
    "It is worth revisiting your setup every few months, because needs and tools change.",
    "The best results come from combining {kw} with a clear understanding of your own goals.",
    "Do not be afraid to ask questions in communities where people share their experience "
    "with {topic}.",
    "A short weekly review keeps you honest and shows which habits are worth keeping.",
    "Most problems with {kw} can be traced back to rushing the preparation stage.",
    "Think of {topic} as a skill that improves with deliberate practice rather than a "
    "one-off task.",
    "Small, steady improvements compound, and after a few weeks the difference is obvious.",
    "Before spending money, write down exactly what problem you expect {kw} to solve.",
    "Clear instructions, good tools and a bit of curiosity go a long way.",
)
_LIST_ITEMS = (
    "Define what success with {topic} looks like for you",
    "Start with the basics before buying anything new",
    "Compare at least three options for {kw}",
    "Set aside a fixed time each week to review progress",
    "Write down what worked and what did not",
    "Ask someone experienced to look over your plan",
    "Avoid changing several things at once",
    "Keep your setup simple and easy to maintain",
    "Revisit your goals every quarter",
    "Celebrate small wins to stay motivated",
)
_CLOSING = (
    "{T} does not have to be complicated.",
    "Start with the fundamentals, keep notes, and adjust as you learn.",
    "Come back to this guide whenever you need a refresher on {kw}.",
    "With a clear plan and steady effort, you will see results sooner than you expect.",
)


def write_article(rng: random.Random, title: str, keywords: list[str]) -> dict[str, Any]:
    """Assemble title, meta description, HTML body and its word count."""
    writer = _Writer(rng, title, keywords)
    body = writer.article()
    text = strip_tags(body)
    return {
        "title": title,
        "meta_description": meta_description(title, keywords[0], rng),
        "html": body,
        "word_count": count_words(text),
    }


def strip_tags(markup: str) -> str:
    return html.unescape(_TAG.sub(" ", markup))


def count_words(text: str) -> int:
    return len(text.split())


def meta_description(title: str, keyword: str, rng: random.Random, limit: int = 155) -> str:
    """A search snippet under `limit` characters, cut at a word boundary."""
    tail = rng.choice(
        (
            f"practical advice on {keyword}, common mistakes and a simple checklist.",
            f"what to know about {keyword}, what to avoid and how to get started.",
            f"clear steps, expert tips and honest trade-offs for {keyword}.",
        )
    )
    text = f"{title}: {tail}"
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


class _Writer:
    """Draws sentences without repeating them until the pool is exhausted."""

    def __init__(self, rng: random.Random, title: str, keywords: list[str]) -> None:
        self.rng = rng
        self.title = title
        self.keywords = keywords
        self.topic = keywords[0]
        self.target_words = rng.randint(650, 900)
        self._body = list(_BODY)
        rng.shuffle(self._body)

    def article(self) -> str:
        parts = [self._paragraph(_INTRO, 5), self._paragraph(None, 4)]
        headings = self._headings()
        list_at = self.rng.randrange(1, 3)
        words = count_words(strip_tags("".join(parts)))
        for index, heading in enumerate(headings):
            section = self._section(heading, with_list=index == list_at)
            parts.append(section)
            words += count_words(strip_tags(section))
            if words >= self.target_words and index >= list_at:
                break
        parts.append(self._conclusion())
        return "\n".join(parts)

    def _headings(self) -> list[str]:
        pool = list(_HEADINGS)
        self.rng.shuffle(pool)
        topic = title_case(self.topic)
        extra = self.keywords[1] if len(self.keywords) > 1 else self.topic
        return [h.format(T=topic, K=title_case(extra)) for h in pool]

    def _section(self, heading: str, *, with_list: bool) -> str:
        parts = [f"<h2>{html.escape(heading)}</h2>", self._paragraph(None, 5)]
        if with_list:
            parts.append(self._list())
        parts.append(self._paragraph(None, 4))
        return "\n".join(parts)

    def _paragraph(self, pool: tuple[str, ...] | None, sentences: int) -> str:
        chosen = list(pool[:sentences]) if pool else [self._next_body() for _ in range(sentences)]
        return f"<p>{html.escape(' '.join(self._fill(s) for s in chosen))}</p>"

    def _next_body(self) -> str:
        if not self._body:
            self._body = list(_BODY)
            self.rng.shuffle(self._body)
        return self._body.pop()

    def _list(self) -> str:
        items = self.rng.sample(_LIST_ITEMS, self.rng.randint(4, 6))
        lis = "".join(f"<li>{html.escape(self._fill(item))}</li>" for item in items)
        return f"<ul>{lis}</ul>"

    def _conclusion(self) -> str:
        text = " ".join(self._fill(s) for s in _CLOSING)
        return f"<h2>Final Thoughts</h2>\n<p>{html.escape(text)}</p>"

    def _fill(self, template: str) -> str:
        keyword = self.rng.choice(self.keywords)
        return template.format(kw=keyword, topic=self.topic, T=title_case(self.title))
