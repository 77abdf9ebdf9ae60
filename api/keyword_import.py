"""Keyword import: parse a JSON body or a CSV file into normalised, de-duplicated keywords.

Why separate from the route: the rules (normalisation, which rows are invalid, which are
duplicates) are pure functions, testable without HTTP and shared by both input formats.
JSON is machine-written, so a malformed body is a 422; CSV is hand-edited, so a bad row is
skipped and reported with its line number while the good rows are imported.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from api.errors import unprocessable
from api.schemas import MAX_KEYWORDS_PER_IMPORT, InvalidRow, KeywordImport, KeywordItem

CSV_COLUMNS = ("keyword", "volume", "difficulty", "intent")
MAX_CSV_BYTES = 5 * 1024 * 1024


@dataclass
class ParsedImport:
    """Valid keywords in upload order, and the rows refused with why."""

    items: list[KeywordItem] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    sector_id: int | None = None


def normalise_keyword(raw: str) -> str:
    """Trimmed, lowercased, inner whitespace collapsed: 'Best  Coffee ' → 'best coffee'.
    Control characters count as whitespace (PostgreSQL refuses NUL in text)."""
    visible = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in raw)
    return " ".join(visible.split()).lower()


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _accept(parsed: ParsedImport, row: int, data: dict[str, Any]) -> None:
    """Normalise and validate one keyword; a bad one becomes an invalid row."""
    data = {**data, "keyword": normalise_keyword(str(data.get("keyword") or ""))}
    if not data["keyword"]:
        parsed.invalid.append(InvalidRow(row=row, error="keyword is empty"))
        return
    if isinstance(data.get("intent"), str):
        data["intent"] = normalise_keyword(data["intent"]) or "informational"
    try:
        parsed.items.append(KeywordItem.model_validate(data))
    except ValidationError as exc:
        parsed.invalid.append(InvalidRow(row=row, error=_error_text(exc)))


def parse_json(body: KeywordImport) -> ParsedImport:
    """Items of a validated JSON body; positions count from 1."""
    parsed = ParsedImport(sector_id=body.sector_id)
    for position, item in enumerate(body.keywords, start=1):
        data = {"keyword": item} if isinstance(item, str) else item.model_dump()
        _accept(parsed, position, data)
    return parsed


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise unprocessable(
            "The CSV file must be UTF-8 text", ("body", "file"), "csv_encoding"
        ) from exc


def _delimiter(header_line: str) -> str:
    """Comma, unless the header only uses semicolons or tabs (spreadsheet exports)."""
    if "," in header_line:
        return ","
    for candidate in (";", "\t"):
        if candidate in header_line:
            return candidate
    return ","


def _header(reader: csv.DictReader[str]) -> list[str]:
    names = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    if not any(names):
        raise unprocessable("The CSV file is empty", ("body", "file"), "csv_empty")
    if "keyword" not in names:
        found = ", ".join(n for n in names if n) or "none"
        raise unprocessable(
            f"The CSV has no 'keyword' column (found: {found}); "
            "the header row needs 'keyword' and optionally volume, difficulty, intent",
            ("body", "file"),
            "csv_missing_column",
        )
    return names


def _cell(value: str | list[str] | None) -> str:
    """A cell's trimmed text (extra cells beyond the header arrive as a list)."""
    if isinstance(value, list):
        return " ".join(value).strip()
    return (value or "").strip()


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {known column: non-blank value}) for each non-blank data row."""
    first_line = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    reader.fieldnames = _header(reader)
    for record in reader:
        if not any(_cell(value) for value in record.values()):
            continue
        cells = {col: _cell(record.get(col)) for col in CSV_COLUMNS}
        yield reader.line_num, {col: value for col, value in cells.items() if value}


def parse_csv(raw: bytes, sector_id: int | None = None) -> ParsedImport:
    """Rows of a CSV upload; blank rows are skipped, bad rows reported by line number."""
    if len(raw) > MAX_CSV_BYTES:
        raise unprocessable(
            f"The CSV file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB",
            ("body", "file"),
            "csv_too_large",
        )
    parsed = ParsedImport(sector_id=sector_id)
    try:
        for count, (line, values) in enumerate(_csv_rows(_decode(raw)), start=1):
            if count > MAX_KEYWORDS_PER_IMPORT:
                raise unprocessable(
                    f"At most {MAX_KEYWORDS_PER_IMPORT} keywords per import",
                    ("body", "file"),
                    "csv_too_many_rows",
                )
            _accept(parsed, line, values)
    except csv.Error as exc:
        raise unprocessable(f"Unreadable CSV: {exc}", ("body", "file"), "csv_invalid") from exc
    return parsed


def split_duplicates(
    items: Iterable[KeywordItem], existing: set[str]
) -> tuple[list[KeywordItem], list[str]]:
    """New keywords (first occurrence wins) and the skipped ones, in upload order."""
    seen = set(existing)
    fresh: list[KeywordItem] = []
    duplicates: list[str] = []
    for item in items:
        if item.keyword in seen:
            duplicates.append(item.keyword)
        else:
            seen.add(item.keyword)
            fresh.append(item)
    return fresh, duplicates
