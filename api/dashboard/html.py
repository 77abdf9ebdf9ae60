"""An allow-list HTML sanitiser for the article preview.

An article's HTML comes from an AI model, so the preview must not trust it: only the
tags an article uses are kept, with only harmless attributes (links only to http(s),
mailto or in-page anchors); everything else is dropped, `<script>` and `<style>` with
their content. The output is built from parsed pieces and re-escaped, so nothing the
input says can open a tag or an attribute of its own.
"""

from __future__ import annotations

from html import escape
from html.parser import HTMLParser

from markupsafe import Markup

ALLOWED = frozenset(
    [
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "code",
        "dd",
        "del",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    ]
)
VOID = frozenset({"br", "hr"})
DROP_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template"})
ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
SAFE_SCHEMES = ("http://", "https://", "mailto:", "#")


class _Sanitiser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_WITH_CONTENT:
            self.skipping += 1
            return
        if self.skipping or tag not in ALLOWED:
            return
        kept = []
        for name, value in attrs:
            if name not in ATTRIBUTES.get(tag, ()) or value is None:
                continue
            if name == "href" and not value.strip().lower().startswith(SAFE_SCHEMES):
                continue
            kept.append(f' {name}="{escape(value, quote=True)}"')
        if tag == "a":
            kept.append(' rel="nofollow noopener noreferrer"')
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in self.open and self.open[-1] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_WITH_CONTENT:
            self.skipping = max(0, self.skipping - 1)
            return
        if self.skipping or tag not in self.open:
            return
        while self.open:
            top = self.open.pop()
            self.out.append(f"</{top}>")
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(escape(data, quote=False))


def sanitise(source: str) -> Markup:
    parser = _Sanitiser()
    parser.feed(source or "")
    parser.close()
    parser.out.extend(f"</{tag}>" for tag in reversed(parser.open))
    return Markup("".join(parser.out))
