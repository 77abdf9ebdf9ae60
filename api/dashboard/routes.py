"""The dashboard's pages (DESIGN §5; the seed plan's issues 3-7 and 9).

Reads render on the server from `api.dashboard.data` (the domain code and tables the
JSON API uses, scoped to the signed-in account). Every change goes through the JSON API
itself: the pages' JavaScript (static/app.js) calls `/api/v1/...` with the session
cookie and the CSRF header, so the dashboard has no business rule of its own. Another
account's run, batch, article or site answers the branded 404 page, as does any unknown
path outside `/api/`; `/api/...` keeps its JSON 404s.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.dashboard import data, html, session
from api.dashboard.session import DashboardSession
from api.deps import EngineDep, LedgerDep, SettingsDep, TemporalDep, get_titles
from api.errors import TemporalUnavailable
from api.routes.automation import run_snapshot
from api.routes.images import get_batch
from core.settings import Settings

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
SUPPORT_EMAIL = "support@igny8.com"
API_PREFIXES = ("/api/", "/docs", "/openapi.json", "/redoc")
FINAL = ("completed", "cancelled", "failed", "skipped")

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """A page asked for without a valid session: off to the sign-in page."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _local(value: datetime | None, tz: str | None = None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(tz or "UTC")).strftime(fmt)


TEMPLATES.env.filters["local"] = _local
TEMPLATES.env.filters["title_case"] = lambda s: str(s or "").replace("_", " ").capitalize()
TEMPLATES.env.globals["support_email"] = SUPPORT_EMAIL


def signed_in(request: Request, engine: EngineDep, settings: SettingsDep) -> DashboardSession:
    found = session.from_request(request, engine, settings)
    if found is None:
        raise LoginRequired(request.url.path)
    return found


SessionIn = Annotated[DashboardSession, Depends(signed_in)]


def _int_or_404(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 9:
        raise data.not_found(what)
    return int(value)


def _frame(engine: Any, sess: DashboardSession, site: str | None, sector: str | None) -> data.Frame:
    """The page frame: the `?site=` asked for (404 if not the account's), else the
    session's site if still the account's, else the first site."""
    asked = _int_or_404(site, f"Site {site}")
    sector_id = _int_or_404(sector, f"Sector {sector}") if sector else None
    if asked is not None:
        return data.frame(engine, sess.account_id, asked, sector_id)
    try:
        return data.frame(engine, sess.account_id, sess.site_id, sector_id)
    except StarletteHTTPException:
        return data.frame(engine, sess.account_id, None, sector_id)


def _temporal_ui(settings: Settings) -> str:
    return settings.temporal_ui_url.rstrip("/") or f"http://127.0.0.1:{settings.temporal_ui_port}"


def render(
    request: Request,
    settings: Settings,
    template: str,
    sess: DashboardSession,
    frame: data.Frame,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """Render a page in the frame; the chosen site is remembered in the session."""
    site_id = frame.site.id if frame.site is not None else None
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "sess": sess,
            "csrf": sess.csrf,
            "frame": frame,
            "site": frame.site,
            "tz": frame.site.timezone if frame.site is not None else "UTC",
            "temporal_ui": _temporal_ui(settings),
            "namespace": settings.temporal_namespace,
            "path": request.url.path,
            "query": dict(request.query_params),
            **context,
        },
        status_code=status_code,
    )
    if site_id != sess.site_id:
        session.set_cookie(response, request, settings, sess.with_site(site_id))
    return response


SiteQ = Annotated[str | None, Query(alias="site", max_length=12)]
SectorQ = Annotated[str | None, Query(alias="sector", max_length=12)]


# ---- sign in / out ----------------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    """Only a path of this site (never `//host` or a scheme) is followed after sign-in."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _same_origin(request: Request) -> bool:
    """A form POST from this site: its Origin (or Referer) names our host, when sent."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.url.netloc


@router.get("/login")
def login_page(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    next: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    if session.from_request(request, engine, settings) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return TEMPLATES.TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": None}
    )


@router.post("/login")
def login(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    target = _safe_next(next)
    found = session.sign_in(engine, api_key) if _same_origin(request) else None
    if found is None:
        return TEMPLATES.TemplateResponse(
            request,
            "login.html",
            {"next": target, "error": "That API key is not valid (or is no longer active)."},
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    session.set_cookie(response, request, settings, found)
    return response


@router.post("/logout")
def logout(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    found = session.from_request(request, engine, settings)
    if found is not None and not session.csrf_ok(found, csrf_token):
        raise StarletteHTTPException(403, session.CSRF_FAILED)
    response = RedirectResponse("/login", status_code=303)
    session.clear_cookie(response, request)
    return response


# ---- automation -------------------------------------------------------------------------
@router.get("/")
@router.get("/automation")
async def automation_page(
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    client: TemporalDep,
    site: SiteQ = None,
    sector: SectorQ = None,
) -> Response:
    frame = await run_in_threadpool(_frame, engine, sess, site, sector)
    runs: list[Any] = []
    snapshot = None
    if frame.site is not None:
        runs = await run_in_threadpool(data.runs_of_site, engine, sess.account_id, frame.site.id)
        active = await run_in_threadpool(data.active_run_of, engine, frame.site.id)
        if active is not None:
            snapshot = await _live(
                run_snapshot(client, engine, ledger, active, sess.account_id, get_titles(request))
            )
    return render(
        request,
        settings,
        "automation.html",
        sess,
        frame,
        runs=runs,
        snapshot=_dump(snapshot),
        temporal_down=snapshot is DOWN,
    )


@router.get("/automation/runs/{run_id}")
async def run_page(
    run_id: str,
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    client: TemporalDep,
    sector: SectorQ = None,
) -> Response:
    if len(run_id) > 120:
        raise data.not_found(f"Automation run {run_id[:20]}…")
    site_id = await run_in_threadpool(data.run_site, engine, sess.account_id, run_id)
    frame = await run_in_threadpool(_frame, engine, sess, str(site_id), sector)
    snapshot = await _live(
        run_snapshot(client, engine, ledger, run_id, sess.account_id, get_titles(request))
    )
    runs = await run_in_threadpool(data.runs_of_site, engine, sess.account_id, site_id)
    return render(
        request,
        settings,
        "automation.html",
        sess,
        frame,
        runs=runs,
        snapshot=_dump(snapshot),
        temporal_down=snapshot is DOWN,
    )


DOWN = object()


async def _live(query: Awaitable[Any]) -> Any:
    """A running workflow's progress, or DOWN while Temporal cannot be reached (the page
    then says so instead of failing)."""
    try:
        return await query
    except TemporalUnavailable:
        return DOWN


def _dump(model: Any) -> dict[str, Any] | None:
    return None if model is None or model is DOWN else model.model_dump(mode="json")


# ---- image batches ----------------------------------------------------------------------
@router.get("/images")
def images_page(
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    site: SiteQ = None,
    sector: SectorQ = None,
) -> Response:
    frame = _frame(engine, sess, site, sector)
    tasks: list[Any] = []
    batches: list[Any] = []
    if frame.site is not None:
        tasks = data.tasks_with_content(engine, sess.account_id, frame.site.id)
        batches = data.batches_of_site(engine, sess.account_id, frame.site.id)
    return render(
        request, settings, "images.html", sess, frame, tasks=tasks, batches=batches, batch=None
    )


@router.get("/images/batches/{batch_id}")
async def batch_page(
    batch_id: str,
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    client: TemporalDep,
    sector: SectorQ = None,
) -> Response:
    if len(batch_id) > 100:
        raise data.not_found("Image batch")
    site_id = await run_in_threadpool(data.batch_site, engine, sess.account_id, batch_id)
    frame = await run_in_threadpool(_frame, engine, sess, str(site_id) if site_id else None, sector)
    progress = await _live(
        get_batch(batch_id, sess.account_id, engine, ledger, client, get_titles(request))
    )
    batches: list[Any] = []
    if frame.site is not None:
        batches = await run_in_threadpool(
            data.batches_of_site, engine, sess.account_id, frame.site.id
        )
    return render(
        request,
        settings,
        "images.html",
        sess,
        frame,
        tasks=[],
        batches=batches,
        batch=_dump(progress),
        temporal_down=progress is DOWN,
    )


# ---- content ----------------------------------------------------------------------------
@router.get("/content")
def content_page(
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    site: SiteQ = None,
    sector: SectorQ = None,
    status: Annotated[str, Query(max_length=20)] = "review",
) -> Response:
    frame = _frame(engine, sess, site, sector)
    tab = status if status in data.REVIEW_TABS else "review"
    rows: list[Any] = []
    counts = dict.fromkeys(data.REVIEW_TABS, 0)
    if frame.site is not None:
        rows = data.review_queue(engine, sess.account_id, frame.site.id, tab)
        counts = data.review_counts(engine, sess.account_id, frame.site.id)
    return render(request, settings, "content.html", sess, frame, rows=rows, tab=tab, counts=counts)


@router.get("/content/{content_id}")
def article_page(
    content_id: str,
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    sector: SectorQ = None,
) -> Response:
    cid = _int_or_404(content_id, f"Content {content_id}")
    assert cid is not None
    row, note = data.content_row(engine, sess.account_id, cid)
    frame = _frame(engine, sess, str(row.site_id), sector)
    images = data.content_images(engine, sess.account_id, row.task_id)
    return render(
        request,
        settings,
        "article.html",
        sess,
        frame,
        article=row,
        note=note,
        body=html.sanitise(row.html),
        images=images,
    )


# ---- calendar ---------------------------------------------------------------------------
@router.get("/calendar")
def calendar_page(
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    site: SiteQ = None,
    sector: SectorQ = None,
    month: Annotated[str | None, Query(max_length=7)] = None,
    view: Annotated[str, Query(max_length=10)] = "grid",
) -> Response:
    frame = _frame(engine, sess, site, sector)
    shown = None
    if frame.site is not None:
        first = data.month_of(month, ZoneInfo(frame.site.timezone))
        shown = data.month(engine, sess.account_id, frame.site.id, first)
    return render(
        request,
        settings,
        "calendar.html",
        sess,
        frame,
        month=shown,
        view="list" if view == "list" else "grid",
    )


# ---- settings ---------------------------------------------------------------------------
@router.get("/settings")
def settings_page(
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    site: SiteQ = None,
    sector: SectorQ = None,
) -> Response:
    frame = _frame(engine, sess, site, sector)
    found = data.settings_of(engine, sess.account_id, frame.site.id) if frame.site else None
    return render(request, settings, "settings.html", sess, frame, settings_data=found)


# ---- credits ----------------------------------------------------------------------------
@router.get("/credits")
def credits_page(
    request: Request,
    sess: SessionIn,
    engine: EngineDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    site: SiteQ = None,
    sector: SectorQ = None,
) -> Response:
    frame = _frame(engine, sess, site, sector)
    balance = ledger.balance(sess.account_id)
    pages = data.credit_pages(engine, sess.account_id)
    return render(request, settings, "credits.html", sess, frame, balance=balance, **pages)


# ---- installing it ----------------------------------------------------------------------
def _is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in ("/api", "/docs", "/redoc")


async def _not_found_or_error(request: Request, exc: Exception) -> Response:
    """Dashboard paths get the branded 404 page; `/api/...` keeps its JSON errors."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 404 or _is_api_path(request.url.path):
        return await http_exception_handler(request, exc)
    return TEMPLATES.TemplateResponse(request, "404.html", {}, status_code=404)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = exc.path if exc.path != "/" else None
    query = f"?{urlencode({'next': target})}" if target else ""
    return RedirectResponse(f"/login{query}", status_code=303)


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard on `app`: its pages, its static files and its 404 page."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(StarletteHTTPException, _not_found_or_error)
    app.add_exception_handler(LoginRequired, _login_required)
