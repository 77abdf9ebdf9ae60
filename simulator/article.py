"""The simulated `generate_content` article: real-looking HTML of 900-1,400 words.

An introduction that names the focus keyword at once, h2 sections (the brief's outline
when it has one, one of them on the focus keyword) with h3 parts and a list, an FAQ and a
conclusion, plus the SEO fields a model returns: a meta title of at most 60 characters, a
meta description of at most 160 with the focus keyword, and a slug. Sentences come from
templates filled with the caller's keywords, so review screens, word counts, credit
estimates and the WordPress publisher all see something shaped like a model's article.
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass, field
from typing import Any

from domain.titles import META_DESCRIPTION_MAX, META_TITLE_MAX, clip_words, slugify
from simulator.prompts import title_case

_TAG = re.compile(r"<[^>]+>")
WORDS = (900, 1400)
_SLUG_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "for", "in", "is", "of", "on", "or", "the", "to", "with"]
)

_QUESTION_TEXT = "how what why when where which who can do does is are should will"
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split())
_COMMERCIAL_LEAD = re.compile(r"^(?:best|top|cheap|cheapest)\s+", re.IGNORECASE)

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
    "Tools and Resources for {T}",
    "A Simple Weekly Routine",
)
_INTRO = (
    "If you have ever searched for {focus}, you already know how much conflicting advice is "
    "out there.",
    "This guide cuts through the noise and explains {focus} in plain language.",
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
    "Start with the option that is easiest to undo, so a wrong guess costs you little.",
    "Write down your starting point today; in a month you will be glad you did.",
    "People who get the most out of {kw} usually keep their routine boring and repeatable.",
    "If you only change one thing this week, make it the step you have been putting off.",
    "A checklist turns good intentions about {topic} into something you actually do.",
    "Comparing notes with a friend who is working on {kw} keeps both of you motivated.",
    "Expect a learning curve: the first attempts are for learning, not for perfection.",
    "The details matter less than showing up regularly and adjusting as you go.",
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
_QUESTIONS = (
    ("How long does it take to see results with {kw}?",
     "Most people notice a difference within a few weeks of steady effort. Keep notes so "
     "you can see the change instead of guessing."),
    ("Is {kw} worth it for beginners?",
     "Yes, as long as you start small and focus on the basics first. The advanced options "
     "can wait until you know what you need."),
    ("What is the most common mistake with {kw}?",
     "Rushing the preparation. A little planning up front saves a lot of correction later."),
    ("Do I need special equipment for {kw}?",
     "Rarely at the start. Use what you have, learn what matters to you, then upgrade with "
     "a clear reason."),
)  # fmt: skip
_CLOSING = (
    "{T} does not have to be complicated.",
    "Start with the fundamentals of {focus}, keep notes, and adjust as you learn.",
    "Come back to this guide whenever you need a refresher on {kw}.",
    "With a clear plan and steady effort, you will see results sooner than you expect.",
)
_META_TAILS = (
    "practical advice, common mistakes to avoid and a simple checklist to get started.",
    "what to know, what to avoid and how to get started today.",
    "clear steps, expert tips and honest trade-offs, explained in plain language.",
)


@dataclass
class Brief:
    """What the prompt asked for, as the simulated writer reads it."""

    title: str
    focus: str
    keywords: list[str]
    secondary: list[str] = field(default_factory=list)
    outline: list[str] = field(default_factory=list)
    words: tuple[int, int] = WORDS


def write_article(rng: random.Random, brief: Brief) -> dict[str, Any]:
    """The answer of generate_content: every field of its schema."""
    body = _Writer(rng, brief).article()
    return {
        "title": brief.title,
        "meta_title": meta_title(brief.title, brief.focus),
        "meta_description": meta_description(brief.focus, rng),
        "slug": slug_of(brief.focus),
        "focus_keyword": brief.focus,
        "target_keywords": list(dict.fromkeys([*brief.keywords, *brief.secondary[:3]])),
        "html": body,
        "word_count": count_words(strip_tags(body)),
    }


def strip_tags(markup: str) -> str:
    return html.unescape(_TAG.sub(" ", markup))


def count_words(text: str) -> int:
    return len(text.split())


def meta_title(title: str, focus: str) -> str:
    """The title when it fits and names the focus keyword, else the keyword first."""
    if len(title) <= META_TITLE_MAX and focus.lower() in title.lower():
        return title
    for candidate in (f"{title_case(focus)}: A Practical Guide", title_case(focus)):
        if len(candidate) <= META_TITLE_MAX:
            return candidate
    return clip_words(title_case(focus), META_TITLE_MAX)


def meta_description(focus: str, rng: random.Random) -> str:
    """A snippet led by the focus keyword, at most 160 characters, cut at a word."""
    text = f"{focus[:1].upper()}{focus[1:]}: {rng.choice(_META_TAILS)}"
    return clip_words(text, META_DESCRIPTION_MAX)


def slug_of(focus: str) -> str:
    words = [w for w in slugify(focus).split("-") if w not in _SLUG_STOPWORDS]
    return "-".join(words) or slugify(focus)


def is_question(keyword: str) -> bool:
    words = keyword.lower().split()
    return bool(words) and words[0] in _QUESTION_WORDS


def noun_topic(keyword: str, fallback: str = "") -> str:
    """What a keyword is about, as a heading can name it: "best burr grinders" → "burr
    grinders"; a question ("how to clean a french press") → `fallback` when given."""
    if is_question(keyword):
        return fallback or keyword
    return _COMMERCIAL_LEAD.sub("", keyword) or keyword


def outline(rng: random.Random, topic: str, keywords: list[str], count: int) -> list[str]:
    """`count` distinct h2 headings for an article on `topic` (an idea's sections); a
    question keyword is a heading of its own."""
    headings = [title_case(k) for k in keywords if is_question(k)][:1]
    return list(dict.fromkeys([*headings, *_headings(rng, topic, keywords)]))[:count]


def _headings(rng: random.Random, topic: str, keywords: list[str]) -> list[str]:
    pool = list(_HEADINGS)
    rng.shuffle(pool)
    nouns = [noun_topic(k) for k in keywords if not is_question(k)]
    topic = noun_topic(topic, nouns[0] if nouns else "")
    extra = next((n for n in nouns if n.lower() != topic.lower()), topic)
    headings = [h.format(T=title_case(topic), K=title_case(extra)) for h in pool]
    return list(dict.fromkeys(headings))


class _Writer:
    """Draws sentences without repeating them until the pool is exhausted, and adds
    sections until the article reaches a length inside the asked range."""

    def __init__(self, rng: random.Random, brief: Brief) -> None:
        self.rng = rng
        self.brief = brief
        self.keywords = list(dict.fromkeys([brief.focus, *brief.keywords, *brief.secondary]))
        low, high = brief.words
        # Every section is at most ~230 words: stopping once past the target stays in range.
        lowest = low + (high - low) // 4
        self.target = rng.randint(lowest, max(lowest, high - 260))
        nouns = [noun_topic(k) for k in self.keywords if not is_question(k)]
        self.topic = noun_topic(brief.focus, nouns[0] if nouns else "")
        self._body = list(_BODY)
        rng.shuffle(self._body)

    def article(self) -> str:
        intro = [self._intro(_INTRO[:3]), self._intro(_INTRO[3:])]
        ending = [self._faq(), self._conclusion()]
        words = count_words(strip_tags("".join(intro + ending)))
        sections: list[str] = []
        headings = self._section_headings()
        list_at = min(self.rng.randrange(1, 3), len(headings) - 1)
        for index, heading in enumerate(headings):
            if words >= self.target and index > list_at and index >= 3:
                break
            section = self._section(heading, with_list=index == list_at, with_h3=index % 3 == 2)
            sections.append(section)
            words += count_words(strip_tags(section))
        return "\n".join([*intro, *sections, *ending])

    def _section_headings(self) -> list[str]:
        """The brief's outline (then generic headings), one naming the focus keyword."""
        focus = self.brief.focus
        generic = _headings(self.rng, focus, self.keywords)
        outline = [h for h in self.brief.outline if "question" not in h.lower()]
        headings = list(dict.fromkeys([*outline, *generic]))
        if not any(focus.lower() in h.lower() for h in headings[:3]):
            first = title_case(focus) if is_question(focus) else f"Why {title_case(focus)} Matters"
            headings.insert(0, first)
        return headings

    def _intro(self, sentences: tuple[str, ...]) -> str:
        text = " ".join(self._fill(s) for s in sentences)
        return f"<p>{html.escape(text)}</p>"

    def _section(self, heading: str, *, with_list: bool, with_h3: bool) -> str:
        parts = [f"<h2>{html.escape(heading)}</h2>", self._paragraph(4)]
        if with_list:
            parts.append(self._list())
        if with_h3:
            for sub in self.rng.sample(("Getting the basics right", "Going further"), 2):
                parts += [f"<h3>{html.escape(sub)}</h3>", self._paragraph(2)]
        else:
            parts.append(self._paragraph(3))
        return "\n".join(parts)

    def _paragraph(self, sentences: int) -> str:
        text = " ".join(self._fill(self._next_body()) for _ in range(sentences))
        return f"<p>{html.escape(text)}</p>"

    def _next_body(self) -> str:
        if not self._body:
            self._body = list(_BODY)
            self.rng.shuffle(self._body)
        return self._body.pop()

    def _list(self) -> str:
        items = self.rng.sample(_LIST_ITEMS, self.rng.randint(4, 6))
        lis = "".join(f"<li>{html.escape(self._fill(item))}</li>" for item in items)
        return f"<ul>{lis}</ul>"

    def _faq(self) -> str:
        parts = ["<h2>Frequently Asked Questions</h2>"]
        for question, answer in self.rng.sample(_QUESTIONS, 3):
            keyword = self.rng.choice(self.keywords)
            parts.append(f"<h3>{html.escape(question.format(kw=keyword))}</h3>")
            parts.append(f"<p>{html.escape(answer)}</p>")
        return "\n".join(parts)

    def _conclusion(self) -> str:
        text = " ".join(self._fill(s) for s in _CLOSING)
        return f"<h2>Final Thoughts</h2>\n<p>{html.escape(text)}</p>"

    def _fill(self, template: str) -> str:
        keyword = self.rng.choice(self.keywords)
        return template.format(
            kw=keyword,
            focus=self.brief.focus,
            topic=self.topic,
            T=title_case(self.topic),
        )
