"""`igny8`: one command for running, operating and trying igny8."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

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
app.add_typer(db_app, name="db")
app.add_typer(account_app, name="account")
app.add_typer(credits_app, name="credits")
app.add_typer(images_app, name="images")

console = Console()


def demo_key_file() -> Path:
    return get_settings().data_dir / "demo_api_key"


def _engine() -> Any:
    from models.db import make_engine

    settings = get_settings()
    return make_engine(settings.database_url, pool_size=settings.db_pool_size)


def _setup_logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


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

    _setup_logging()
    asyncio.run(worker_module.run_worker())


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

    settings = get_settings()
    url = api_url or f"http://{settings.api_host}:{settings.api_port}"
    key = api_key or (demo_key_file().read_text().strip() if demo_key_file().exists() else None)
    if not key:
        console.print("[red]no API key: pass --api-key or set IGNY8_API_KEY[/red]")
        raise typer.Exit(2)
    final = follow_batch(console, url, key, task_ids, model, max_in_article_images)
    raise typer.Exit(0 if final["status"] == "completed" else 1)


# ---- the stack --------------------------------------------------------------------------
@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Also run a demo image batch, live")] = True,
) -> None:
    """Start everything (Temporal dev server, simulator, worker, API); Ctrl-C stops it all."""
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
    try:
        if demo:
            _run_demo_batch(stack.api_url, key)
        console.print("running; press Ctrl-C to stop")
        while not stack.dead_children():
            time.sleep(0.5)
        dead = ", ".join(f"{c.name} (see {c.log_path})" for c in stack.dead_children())
        console.print(f"[red]stopped because a child exited: {dead}[/red]")
    except KeyboardInterrupt:
        console.print("\nstopping…")
    finally:
        stack.stop()
        console.print("all stopped")


@app.command("demo")
def demo_cmd() -> None:
    """Start the stack, run one image batch end to end, print a summary, stop; exit 0 on success."""
    from cli.stack import Stack

    settings = get_settings()
    _prepare()
    key = _seed_demo_key()
    stack = Stack(settings)
    with console.status("starting the embedded stack…"):
        stack.start_all()
    try:
        final = _run_demo_batch(stack.api_url, key)
    finally:
        stack.stop()
    _print_operator_queries()
    raise typer.Exit(0 if final["status"] == "completed" else 1)


def _prepare() -> None:
    from models.migrate import upgrade

    settings = get_settings()
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


def _print_urls(stack: Any, key: str) -> None:
    settings = stack.settings
    table = Table("service", "where", title="igny8 is up")
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


def _run_demo_batch(api_url: str, key: str) -> dict[str, Any]:
    from cli.progress import follow_batch
    from domain.seed import demo_tasks_needing_images

    headers = {"Authorization": f"Bearer {key}"}
    sites = httpx.get(f"{api_url}/api/v1/sites", headers=headers, timeout=10).json()["data"]
    task_ids = demo_tasks_needing_images(_engine(), sites[0]["id"])
    before = httpx.get(f"{api_url}/api/v1/credits/balance", headers=headers, timeout=10).json()
    final = follow_batch(console, api_url, key, task_ids, None, None)
    after = httpx.get(f"{api_url}/api/v1/credits/balance", headers=headers, timeout=10).json()
    table = Table("images", "failed", "credits", "USD cost", "balance before", "balance after")
    table.add_row(
        str(final["images_done"]),
        str(final["images_failed"]),
        str(final["credits_used"]),
        f"${Decimal(str(final['cost_usd'])):.4f}",
        str(before["credits"]),
        str(after["credits"]),
    )
    console.print(table)
    _print_usage_totals(key)
    return final


def _print_usage_totals(key: str) -> None:
    """The account's image usage, summed by the ledger: exact on both databases, where the
    operator SQL's SUM(cost_usd) (`igny8 demo` prints it) is a float on SQLite."""
    from domain.accounts import authenticate
    from domain.ledger import Ledger

    engine = _engine()
    account_id = authenticate(engine, key)
    if account_id is not None:
        t = Ledger(engine).usage_totals(account_id, "image_generation")
        console.print(
            f"ledger, image usage of this account: {t.count} usage logs, {t.credits} credits, "
            f"${t.cost_usd} provider cost, ${t.billed_usd} billed"
        )
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
