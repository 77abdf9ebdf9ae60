"""Keywords of a site: import (JSON or CSV upload) and list.

One route takes both formats because that is what users have: a list from a tool (JSON)
or a spreadsheet export (CSV). FastAPI cannot declare a JSON body and a file on the same
route, so the body is read by hand here and documented by `IMPORT_BODY_DOC`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from api.deps import CurrentAccountId, SessionDep
from api.errors import error_responses, unprocessable
from api.keyword_import import MAX_CSV_BYTES, ParsedImport, parse_csv, parse_json, split_duplicates
from api.pagination import Page, PageDep, newest_first, paginate
from api.schemas import INT32_MAX, KeywordImport, KeywordImportResult
from api.scoping import SiteDep, SiteIdPath, get_owned, owned
from models import Keyword, KeywordPublic, Sector, Site

router = APIRouter(
    prefix="/sites/{site_id}/keywords", tags=["keywords"], responses=error_responses(401, 404)
)

CSV_HELP = "CSV with a header row: keyword (required), volume, difficulty, intent"
IMPORT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/KeywordImport"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": CSV_HELP},
                        "sector_id": {"type": "integer", "description": "Sector for every row"},
                    },
                }
            },
            "text/csv": {"schema": {"type": "string", "description": CSV_HELP}},
        },
    }
}
UNSUPPORTED = (
    "Send the keywords as application/json ({'keywords': [...]}) "
    "or upload a CSV as multipart/form-data in a field named 'file'"
)
IN_CHUNK = 500


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _read_json(raw: bytes) -> ParsedImport:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        pos = getattr(exc, "pos", 0)
        reason = getattr(exc, "msg", None) or (
            "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        )
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", pos),
                    "msg": "JSON decode error",
                    "ctx": {"error": reason},
                }
            ]
        ) from exc
    if isinstance(data, list):
        data = {"keywords": data}
    try:
        body = KeywordImport.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc
    return parse_json(body)


def _form_sector_id(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        sector_id = int(str(value).strip())
    except ValueError:
        sector_id = 0
    if not 1 <= sector_id <= INT32_MAX:
        raise unprocessable("sector_id must be a positive integer", ("body", "sector_id"))
    return sector_id


async def _read_upload(form: FormData) -> bytes:
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        return await upload.read(MAX_CSV_BYTES + 1)
    if isinstance(upload, str):
        return upload.encode()
    raise unprocessable(
        "Upload the CSV in a multipart field named 'file'", ("body", "file"), "missing"
    )


async def read_import(request: Request) -> ParsedImport:
    """Parse the body by its Content-Type; any other type is a 415 saying what to send."""
    media = _media_type(request)
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=1, max_fields=20) as form:
            raw = await _read_upload(form)
            return parse_csv(raw, _form_sector_id(form.get("sector_id")))
    if media in ("text/csv", "application/csv"):
        return parse_csv(await request.body())
    if media == "application/json" or media.endswith("+json"):
        return _read_json(await request.body())
    raise HTTPException(status_code=415, detail=UNSUPPORTED)


def _check_sectors(session: Session, site: Site, parsed: ParsedImport) -> None:
    """Every sector named must be one of this site's sectors."""
    wanted = {item.sector_id for item in parsed.items} | {parsed.sector_id}
    wanted.discard(None)
    if not wanted:
        return
    stmt = select(Sector.id).where(Sector.site_id == site.id, Sector.id.in_(wanted))
    missing = sorted(wanted - set(session.exec(stmt).all()))
    if missing:
        raise unprocessable(
            f"Sector {missing[0]} does not belong to site {site.id}", ("body", "sector_id")
        )


def _existing(session: Session, site_id: int, keywords: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keywords), IN_CHUNK):
        chunk = keywords[start : start + IN_CHUNK]
        stmt = select(Keyword.keyword).where(Keyword.site_id == site_id, Keyword.keyword.in_(chunk))
        found.update(session.exec(stmt).all())
    return found


def store_import(session: Session, site: Site, parsed: ParsedImport) -> KeywordImportResult:
    """Insert the new keywords; duplicates (in the upload or on the site) are reported."""
    _check_sectors(session, site, parsed)
    existing = _existing(session, site.id, [item.keyword for item in parsed.items])
    fresh, duplicates = split_duplicates(parsed.items, existing)
    for item in fresh:
        data = {**item.model_dump(), "sector_id": item.sector_id or parsed.sector_id}
        session.add(Keyword(**data, account_id=site.account_id, site_id=site.id))
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise HTTPException(
            status_code=409,
            detail="Another import added some of these keywords at the same time; retry",
        ) from exc
    return KeywordImportResult(created=len(fresh), duplicates=duplicates, invalid=parsed.invalid)


def _import(
    session: Session, account_id: int, site_id: int, parsed: ParsedImport
) -> KeywordImportResult:
    return store_import(session, get_owned(session, Site, site_id, account_id), parsed)


@router.post(
    "",
    status_code=201,
    response_model=KeywordImportResult,
    openapi_extra=IMPORT_BODY_DOC,
    responses=error_responses(409, 415),
    summary="Import keywords (JSON or CSV)",
)
async def import_keywords(
    site_id: SiteIdPath, request: Request, account_id: CurrentAccountId, session: SessionDep
) -> KeywordImportResult:
    """Keywords are normalised (trimmed, lowercased, inner whitespace collapsed); a keyword
    already on the site or repeated in the upload is skipped and listed in `duplicates`;
    CSV rows that fail validation are skipped and listed in `invalid` with their line."""
    # The upload is read before the database is touched: on SQLite a transaction holds
    # the write lock, which must not wait on a slow client.
    parsed = await read_import(request)
    return await run_in_threadpool(_import, session, account_id, site_id, parsed)


@router.get("", response_model=Page[KeywordPublic])
def list_keywords(
    site: SiteDep,
    session: SessionDep,
    page: PageDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    sector_id: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
) -> Page[KeywordPublic]:
    stmt = owned(Keyword, site.account_id).where(Keyword.site_id == site.id)
    if status:
        stmt = stmt.where(Keyword.status == status)
    if sector_id is not None:
        stmt = stmt.where(Keyword.sector_id == sector_id)
    return paginate(session, newest_first(stmt, Keyword), page, KeywordPublic)
