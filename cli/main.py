"""`igny8`: one command for running, operating and trying igny8."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.settings import get_settings

app = typer.Typer(
    help="igny8: SEO keywords to published, illustrated articles, billed in credits, on Temporal.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
account_app = typer.Typer(help="Accounts and API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Credits: top-ups.", no_args_is_help=True)
images_app = typer.Typer(help="Image batches.", no_args_is_help=True)
automation_app = typer.Typer(
    help="Automation runs: a site's keywords to reviewed, illustrated articles, stage by "
    "stage. Start one, watch it live, pause, resume or cancel it, list them.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(account_app, name="account")
app.add_typer(credits_app, name="credits")
app.add_typer(images_app, name="images")
app.add_typer(automation_app, name="automation")

console = Console()


def demo_key_file() -> Path:
    return get_settings().data_dir / "demo_api_key"


def _engine() -> Any:
    from models.db import make_engine

    settings = get_settings()
    return make_engine(settings.database_url, pool_size=settings.db_pool_size)


# ---- services ---------------------------------------------------------------------------
@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker (workflows and activities) until Ctrl-C."""
    import worker as worker_module

    worker_module.main()  # logs as LOG_FORMAT says, metrics and health as configured


@app.command()
def simulator(
    host: Annotated[str | None, typer.Option(help="Bind address (default SIMULATOR_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default SIMULATOR_PORT)")] = None,
    latency: Annotated[float, typer.Option(help="Seconds per AI call")] = 0.3,
    max_concurrency: Annotated[
        int, typer.Option(help="429 beyond this many in flight; 0 = no limit")
    ] = 0,
    rate_429: Annotated[float, typer.Option(help="Share of calls answered 429")] = 0.0,
    rate_500: Annotated[float, typer.Option(help="Share of calls answered 500")] = 0.0,
) -> None:
    """Serve the OpenAI-compatible simulator (deterministic outputs, latency, faults)."""
    from simulator.config import SimConfig
    from simulator.server import run

    settings = get_settings()
    config = SimConfig(
        latency_s=latency, max_concurrency=max_concurrency, rate_429=rate_429, rate_500=rate_500
    )
    console.print(
        f"simulator on http://{settings.simulator_host}:{port or settings.simulator_port}"
    )
    run(settings.simulator_host, port or settings.simulator_port, config)


# ---- data -------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from models.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    console.print(f"[green]database at {revision}[/green]")


@app.command("seed-demo")
def seed_demo() -> None:
    """Seed model prices and a demo account, site, keywords and articles; print its API key."""
    from models.migrate import upgrade

    upgrade(get_settings().database_url)
    key = _seed_demo_key()
    console.print(f"demo API key: [bold]{key}[/bold]  (also in {demo_key_file()})")


def _seed_demo_key() -> str:
    """The demo key, made once and kept in .data/ (the database only stores its hash)."""
    from domain.accounts import authenticate
    from domain.seed import seed_demo as seed

    engine = _engine()
    known = demo_key_file().read_text().strip() if demo_key_file().exists() else None
    valid = bool(known) and authenticate(engine, known or "") is not None
    result = seed(engine, want_key=not valid)
    key = known if valid and known else result.api_key
    assert key is not None
    path = demo_key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


@account_app.command("create")
def account_create(
    name: Annotated[str, typer.Argument(help="Account name")],
    credits: Annotated[int, typer.Option(min=0, help="Opening credits")] = 0,
) -> None:
    """Create an account and print its API key (shown once)."""
    from domain.accounts import create_account

    created = create_account(_engine(), name, credits)
    console.print(f"account {created.id} '{created.name}' with {created.credits} credits")
    console.print(f"API key: [bold]{created.api_key}[/bold]")


@credits_app.command("add")
def credits_add(
    account_id: Annotated[int, typer.Argument(help="Account id")],
    amount: Annotated[int, typer.Argument(min=1, help="Credits to add")],
    key: Annotated[str, typer.Option(help="Idempotency key: the same key credits once")],
    description: Annotated[str, typer.Option(help="Shown in the transaction list")] = "Top-up",
) -> None:
    """Top up an account, once per idempotency key."""
    from domain.ledger import Ledger, LedgerError

    try:
        res = Ledger(_engine()).top_up(account_id, amount, key, description=description)
    except LedgerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    note = " (replay: nothing changed)" if res.replayed else ""
    console.print(f"balance {res.balance_after}{note}")


@app.command()
def reconcile() -> None:
    """Check every ledger invariant; exit 1 with a listing on any breach."""
    from domain.reconcile import reconcile as check

    breaches = check(_engine())
    if not breaches:
        console.print("[green]ledger reconciled: no breaches[/green]")
        return
    table = Table("check", "account", "detail", title=f"{len(breaches)} breaches")
    for b in breaches:
        table.add_row(b.check, str(b.account_id), b.detail)
    console.print(table)
    raise typer.Exit(1)


# ---- images -----------------------------------------------------------------------------
@images_app.command("generate")
def images_generate(
    task_ids: Annotated[list[int], typer.Option("--task-ids", help="Task ids (repeat or space)")],
    model: Annotated[
        str | None, typer.Option(help="Image model (default: site, then billing)")
    ] = None,
    max_in_article_images: Annotated[int | None, typer.Option(min=0, max=10)] = None,
    api_url: Annotated[str | None, typer.Option(help="API base URL")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="IGNY8_API_KEY", help="Account API key")
    ] = None,
) -> None:
    """Start an image batch through the API and follow it with a live progress bar."""
    from cli.progress import follow_batch

    url, key = _api_target(api_url, api_key)
    final = follow_batch(console, url, key, task_ids, model, max_in_article_images)
    raise typer.Exit(0 if final["status"] == "completed" else 1)


# ---- talking to the API -----------------------------------------------------------------
ApiUrlOpt = Annotated[
    str | None, typer.Option("--api-url", help="API base URL (default http://API_HOST:API_PORT)")
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        "--key",
        envvar="IGNY8_API_KEY",
        help="Account API key (default: the demo account's, kept in DATA_DIR)",
    ),
]
RunIdArg = Annotated[str, typer.Argument(help="The run id (`igny8 automation list` shows them)")]


def _api_target(api_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The API's base URL and the key to call it with: flags, then IGNY8_API_KEY, then the
    demo key `igny8 up` keeps; no key at all is a usage error (exit 2)."""
    settings = get_settings()
    url = (api_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    key = api_key or (demo_key_file().read_text().strip() if demo_key_file().exists() else None)
    if not key:
        console.print("[red]no API key: pass --api-key or set IGNY8_API_KEY[/red]")
        raise typer.Exit(2)
    return url.removesuffix("/api/v1"), key


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@contextmanager
def _api_errors() -> Iterator[None]:
    """An API refusal or outage as a red line and its exit code, not a traceback."""
    from cli.progress import ApiError

    try:
        yield
    except ApiError as exc:
        console.print(Text(str(exc), style="red"))  # not markup: details may hold brackets
        raise typer.Exit(exc.exit_code) from exc


# ---- automation runs --------------------------------------------------------------------
def _print_detached(run_id: str) -> None:
    """After Ctrl-C: the run goes on; how to find it again or stop it."""
    console.print(
        f"\nstopped watching; run [bold]{run_id}[/bold] goes on.\n"
        f"  watch it again: igny8 automation watch {run_id}\n"
        f"  pause it:       igny8 automation pause {run_id}\n"
        f"  cancel it:      igny8 automation cancel {run_id}"
    )


def _watch_to_the_end(client: httpx.Client, run_id: str) -> None:
    """Watch live, print the summary, exit 0 if the run completed and 1 if not; Ctrl-C
    exits 130 and leaves the run alone."""
    from cli.progress import run_summary, watch_run

    try:
        final = watch_run(console, client, run_id)
    except KeyboardInterrupt:
        _print_detached(run_id)
        raise typer.Exit(130) from None
    console.print(run_summary(final))
    raise typer.Exit(0 if final["status"] == "completed" else 1)


def _start_run(client: httpx.Client, site: int, budget: int | None) -> str:
    """Start the run; when the site already has one, say which and how to watch it."""
    from cli.progress import ApiError, active_run_of, start_run

    try:
        return start_run(client, site, budget)
    except ApiError as exc:
        busy = active_run_of(client, site) if "active automation run" in str(exc) else None
        if busy:
            raise ApiError(f"{exc}\nwatch it: igny8 automation watch {busy}") from exc
        raise


@automation_app.command("run")
def automation_run(
    site: Annotated[int, typer.Option("--site", min=1, help="The site whose keywords to work on")],
    budget: Annotated[
        int | None, typer.Option(min=1, help="Pause the run once it has used this many credits")
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="Follow the run live; --no-watch prints its id and returns")
    ] = True,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Start an automation run for a site and follow it live: a bar per stage (done/total,
    failed, credits), the credits used and the balance.

    The run takes every unprocessed item of the site: keywords → clusters → ideas → tasks →
    articles → image prompts → images → review. Exit code 0 when it completes, 1 when it
    fails or is cancelled, 2 for bad input (unknown site, bad key). Ctrl-C stops watching
    only: the run goes on (`igny8 automation watch RUN_ID` to watch again).
    """
    url, key = _api_target(api_url, api_key)
    with _api_errors(), _client(url, key) as client:
        run_id = _start_run(client, site, budget)
        console.print(f"automation run [bold]{run_id}[/bold] started for site {site}")
        if watch:
            _watch_to_the_end(client, run_id)
        console.print(f"watch it: igny8 automation watch {run_id}")


@automation_app.command("watch")
def automation_watch(
    run_id: RunIdArg, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Follow a run live until it ends, then print its per-stage summary.

    Exit code 0 when it completed, 1 when it failed or was cancelled, 2 for an unknown run.
    Ctrl-C stops watching only.
    """
    url, key = _api_target(api_url, api_key)
    with _api_errors(), _client(url, key) as client:
        _watch_to_the_end(client, run_id)


def _control(
    run_id: str, action: str, api_url: str | None, api_key: str | None, budget: int | None = None
) -> None:
    from cli.progress import control_run

    url, key = _api_target(api_url, api_key)
    with _api_errors(), _client(url, key) as client:
        control_run(client, run_id, action, budget)
    console.print(f"{action} requested for run [bold]{run_id}[/bold]")


@automation_app.command("pause")
def automation_pause(
    run_id: RunIdArg, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Pause a run: nothing new is claimed in any stage; work in flight lands and is
    charged. The pause lasts across worker restarts; `resume` goes on where it stopped."""
    _control(run_id, "pause", api_url, api_key)
    console.print(f"resume it: igny8 automation resume {run_id}")


@automation_app.command("resume")
def automation_resume(
    run_id: RunIdArg,
    budget: Annotated[
        int | None, typer.Option(min=1, help="A new credit budget (after budget_exhausted)")
    ] = None,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Resume a paused run where it stopped: after a pause, a top-up (insufficient_credits),
    or with a higher --budget (budget_exhausted)."""
    _control(run_id, "resume", api_url, api_key, budget)


@automation_app.command("cancel")
def automation_cancel(
    run_id: RunIdArg, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Cancel a run: nothing new is claimed, work in flight lands and is charged, image
    batches stop, unused credit holds are released. What was made stays."""
    _control(run_id, "cancel", api_url, api_key)


@automation_app.command("list")
def automation_list(
    site: Annotated[int | None, typer.Option("--site", min=1, help="Only this site's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 20,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """The account's automation runs, newest first: status, stage, credits, times."""
    from cli.progress import list_runs

    url, key = _api_target(api_url, api_key)
    with _api_errors(), _client(url, key) as client:
        page = list_runs(client, site, limit)
    if not page["data"]:
        console.print("no automation runs yet; start one: igny8 automation run --site SITE_ID")
        return
    table = Table(
        "run",
        "site",
        "status",
        "stage",
        "credits",
        "started",
        "finished",
        title=f"automation runs ({len(page['data'])} of {page['count']})",
    )
    for run in page["data"]:
        status = run["status"] + (f" ({run['pause_reason']})" if run.get("pause_reason") else "")
        table.add_row(
            run["run_id"],
            str(run["site_id"]),
            status,
            run.get("current_stage") or "",
            str(run["credits_used"]),
            _when(run["started_at"]),
            _when(run.get("finished_at")),
        )
    console.print(table)


def _when(stamp: str | None) -> str:
    """An API timestamp to the second, readable: 2026-01-31 09:00:00."""
    return (stamp or "").replace("T", " ")[:19]


# ---- the stack --------------------------------------------------------------------------
@app.command()
def up(
    demo: Annotated[
        bool, typer.Option(help="Also run a demo automation run on the demo site, live")
    ] = True,
) -> None:
    """Start everything (Temporal dev server, simulator, worker, API) and, unless --no-demo,
    take the demo site's keywords through an automation run, live; Ctrl-C stops it all."""
    from cli.stack import Stack, StackError

    settings = get_settings()
    _prepare()
    key = _seed_demo_key()
    stack = Stack(settings)
    try:
        with console.status("starting Temporal, simulator, worker and API…"):
            stack.start_all()
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    _print_urls(stack, key)
    wordpress = None
    try:
        publishing = None
        if demo:
            wordpress = _demo_wordpress(stack, key)
            _run_demo_automation(stack.api_url, key)
            publishing = _publish_demo(stack.api_url, key, wordpress, count=DEMO_POSTS)
        console.print("running; press Ctrl-C to stop")
        _keep_running(stack, key, publishing)
        dead = ", ".join(f"{c.name} (see {c.log_path})" for c in stack.dead_children())
        console.print(f"[red]stopped because a child exited: {dead}[/red]")
    except KeyboardInterrupt:
        console.print("\nstopping…")
    finally:
        if wordpress is not None:
            wordpress.stop()
        stack.stop()
        console.print("all stopped")


def _keep_running(stack: Any, key: str, publishing: Any) -> None:
    """Until a child dies: report the demo's scheduled posts as they go out."""
    last_look = 0.0
    while not stack.dead_children():
        pending = publishing is not None and not publishing.finished
        if pending and time.monotonic() - last_look > 2.0:
            last_look = time.monotonic()
            with _api_errors(), _client(stack.api_url, key) as client:
                for item in publishing.newly_final(client):
                    _print_published(item)
        time.sleep(0.5)


@app.command("demo")
def demo_cmd() -> None:
    """Start the stack, take the demo site through one automation run end to end, print the
    per-stage summary and the operator SQL, stop; exit 0 when the run completed."""
    from cli.stack import Stack

    settings = get_settings()
    _prepare()
    key = _seed_demo_key()
    stack = Stack(settings)
    with console.status("starting the embedded stack…"):
        stack.start_all()
    wordpress = None
    try:
        wordpress = _demo_wordpress(stack, key)
        final = _run_demo_automation(stack.api_url, key)
        publishing = _publish_demo(stack.api_url, key, wordpress, count=1)
        published = _wait_demo_posts(stack.api_url, key, publishing)
    finally:
        if wordpress is not None:
            wordpress.stop()
        stack.stop()
    _print_operator_queries()
    raise typer.Exit(0 if final["status"] == "completed" and published else 1)


DEMO_POSTS = 3  # `make run` publishes three articles, a minute apart (the slot rules)


def _demo_wordpress(stack: Any, key: str) -> Any:
    """A local WordPress (real when it can run here, else the fake), connected to the
    demo site through the API."""
    from cli.demo_publish import connect_site, start_demo_wordpress

    with console.status("starting a local WordPress…"):
        wordpress = start_demo_wordpress(stack.settings, console.print)
    try:
        with _api_errors(), _client(stack.api_url, key) as client:
            site = api_call_sites(client)[0]
            message = connect_site(client, site["id"], wordpress)
    except BaseException:
        wordpress.stop()
        raise
    console.print(f"{wordpress.kind} at {wordpress.url}: {message}")
    return wordpress


def api_call_sites(client: httpx.Client) -> list[dict[str, Any]]:
    from cli.progress import api_call

    return list(api_call(client, "GET", "/api/v1/sites")["data"])


def _publish_demo(api_url: str, key: str, wordpress: Any, count: int) -> Any:
    """Approve and schedule the demo's newest articles a minute apart; the publisher
    workflow posts each at its slot."""
    from cli.demo_publish import schedule_articles

    with _api_errors(), _client(api_url, key) as client:
        site = api_call_sites(client)[0]
        publishing = schedule_articles(client, site["id"], count)
    if not publishing.content_ids:
        console.print("no article to publish (none awaits review, or no slot is free today)")
        return publishing
    console.print(
        f"scheduled {len(publishing.content_ids)} article(s) for {wordpress.kind} at "
        f"{wordpress.url}, a minute apart from now; calendar: GET "
        f"/api/v1/sites/{site['id']}/calendar"
    )
    return publishing


def _wait_demo_posts(api_url: str, key: str, publishing: Any) -> bool:
    """Wait for the scheduled articles, print the site's calendar; all published?"""
    from cli.demo_publish import calendar_week, wait_published

    final: list[dict[str, Any]] = []

    def report(item: dict[str, Any]) -> None:
        final.append(item)
        _print_published(item)

    with _api_errors(), _client(api_url, key) as client:
        with console.status("waiting for the publisher workflow…"):
            done = wait_published(client, publishing, report, timeout_s=180)
        items = calendar_week(client, publishing.site_id)
    table = Table("day", "status", "title", "link", title="calendar (yesterday to next week)")
    for item in items:
        table.add_row(item["day"], item["site_status"], item["title"], item["external_url"] or "")
    console.print(table)
    return done and all(item["site_status"] == "published" for item in final)


def _print_published(item: dict[str, Any]) -> None:
    if item["site_status"] == "published":
        console.print(f"[green]published[/green] '{item['title']}' → {item['external_url']}")
    else:
        console.print(
            f"[red]publishing failed[/red] '{item['title']}' (content {item['id']}): see "
            "GET /api/v1/notifications"
        )


def _prepare() -> None:
    from models.migrate import upgrade

    settings = get_settings()
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


def _print_urls(stack: Any, key: str) -> None:
    settings = stack.settings
    table = Table("service", "where", title="igny8 is up")
    table.add_row("Dashboard", f"{stack.api_url}/ (sign in with the demo API key)")
    table.add_row("API", f"{stack.api_url}/api/v1")
    table.add_row("OpenAPI docs", f"{stack.api_url}/docs")
    if not settings.temporal_address:
        table.add_row("Temporal UI", f"http://127.0.0.1:{settings.temporal_ui_port}")
    table.add_row("Temporal frontend", stack.temporal_address)
    if settings.uses_simulator:
        table.add_row("AI simulator", settings.simulator_url)
    table.add_row("logs", str(stack.log_dir))
    table.add_row("demo API key", key)
    console.print(table)


def _run_demo_automation(api_url: str, key: str) -> dict[str, Any]:
    """The demo: an automation run over the demo site's keywords, live, then its summary,
    the balance before and after, and the ledger's usage totals. Returns the last snapshot.
    A run still active from an earlier demo (stopped mid-run) is watched instead."""
    from cli.progress import api_call, run_summary, watch_run

    with _api_errors(), _client(api_url, key) as client:
        site = api_call(client, "GET", "/api/v1/sites")["data"][0]
        before = api_call(client, "GET", "/api/v1/credits/balance")["credits"]
        run_id = _demo_run_id(client, site)
        try:
            final = watch_run(console, client, run_id)
        except KeyboardInterrupt:
            console.print(
                f"\nthe demo run {run_id} stops with the stack; it goes on where it stopped "
                "when the stack starts again (`make run` or `make demo` watch it)"
            )
            raise
        after = api_call(client, "GET", "/api/v1/credits/balance")["credits"]
    console.print(run_summary(final))
    console.print(f"balance {before} → {after} credits")
    _print_usage_totals(key)
    return final


def _demo_run_id(client: httpx.Client, site: dict[str, Any]) -> str:
    """The earlier demo's run if it is still active, else a new run with work to do."""
    from cli.progress import active_run_of, start_run

    busy = active_run_of(client, site["id"])
    if busy:
        console.print(
            f"run [bold]{busy}[/bold] of the demo site is still active (an earlier demo "
            "stopped mid-run?): watching it instead of starting another"
        )
        return busy
    _prepare_demo_site(site)
    run_id = start_run(client, site["id"], None)
    console.print(
        f"demo automation run [bold]{run_id}[/bold] on site {site['id']} '{site['name']}' "
        f'(Temporal UI: search Igny8RunKind = "automation_run")'
    )
    return run_id


def _prepare_demo_site(site: dict[str, Any]) -> None:
    """Keywords and credits for the run (domain/seed.py), and say what was added."""
    from domain.seed import prepare_demo_run

    engine = _engine()
    try:
        prep = prepare_demo_run(engine, site["id"])
    finally:
        engine.dispose()
    if prep.round_no is not None:
        console.print(
            f"every demo keyword was processed by earlier runs: imported "
            f"{prep.keywords_waiting} fresh ones (suffix '(round {prep.round_no})')"
        )
    else:
        console.print(f"{prep.keywords_waiting} keywords waiting to be clustered")
    if prep.topped_up:
        console.print(f"topped the demo account up with {prep.topped_up} credits for the run")


def _print_usage_totals(key: str) -> None:
    """The account's usage per operation, summed by the ledger: exact on both databases,
    where the operator SQL's SUM(cost_usd) (`igny8 demo` prints it) is a float on SQLite."""
    from domain.accounts import authenticate
    from domain.ai_functions import AI_FUNCTIONS
    from domain.ledger import Ledger

    engine = _engine()
    try:
        account_id = authenticate(engine, key)
        if account_id is None:
            return
        table = Table(
            "operation",
            "usage logs",
            "credits",
            "provider cost",
            "billed",
            title="ledger: this account's usage",
        )
        for fn in AI_FUNCTIONS.values():
            t = Ledger(engine).usage_totals(account_id, fn.operation_type)
            table.add_row(
                fn.operation_type,
                str(t.count),
                str(t.credits),
                f"${t.cost_usd}",
                f"${t.billed_usd}",
            )
        console.print(table)
    finally:
        engine.dispose()


def _print_operator_queries() -> None:
    from sqlalchemy import text

    from domain.operator_sql import OPERATOR_QUERIES

    with _engine().connect() as conn:
        for title, sql in OPERATOR_QUERIES.items():
            result = conn.execute(text(sql))
            table = Table(*result.keys(), title=title)
            for row in result:
                table.add_row(*(str(v) for v in row))
            console.print(table)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    app()


if __name__ == "__main__":
    main()
