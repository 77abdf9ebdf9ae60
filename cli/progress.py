"""Follow work through the API, live: an image batch (one bar) or an automation run (one
bar per stage, the credits used and the balance, from the run's Server-Sent Events)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

TERMINAL = {"completed", "cancelled", "failed"}


def start_batch(
    client: httpx.Client, task_ids: list[int], model: str | None, max_in_article: int | None
) -> str:
    body: dict[str, Any] = {"task_ids": task_ids}
    if model:
        body["model"] = model
    if max_in_article is not None:
        body["max_in_article_images"] = max_in_article
    resp = client.post("/api/v1/images/batches", json=body)
    if resp.status_code != 202:
        raise SystemExit(
            f"could not start the batch ({resp.status_code}): {resp.json().get('detail')}"
        )
    return str(resp.json()["batch_id"])


def follow_batch(
    console: Console,
    api_url: str,
    api_key: str,
    task_ids: list[int],
    model: str | None,
    max_in_article: int | None,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Start the batch, draw its progress until it ends, return the last progress."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        batch_id = start_batch(client, task_ids, model, max_in_article)
        console.print(f"batch [bold]{batch_id}[/bold] started (see it in the Temporal UI)")
        columns = (
            TextColumn("[bold]{task.fields[status]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "images · {task.fields[failed]} failed · {task.fields[credits]} credits · balance {task.fields[balance]}"
            ),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as bar:
            row = bar.add_task(
                "images", total=None, status="starting", failed=0, credits=0, balance="?"
            )
            while True:
                progress = client.get(f"/api/v1/images/batches/{batch_id}").json()
                bar.update(
                    row,
                    total=progress["images_total"] or None,
                    completed=progress["images_done"] + progress["images_failed"],
                    status=progress["status"],
                    failed=progress["images_failed"],
                    credits=progress["credits_used"],
                    balance=progress["balance"],
                )
                if progress["status"] in TERMINAL:
                    break
                time.sleep(poll_s)
    for error in progress.get("errors") or []:
        console.print(f"[yellow]{error}[/yellow]")
    return dict(progress)


# ---- automation runs --------------------------------------------------------------------
RUNS = "/api/v1/automation/runs"
STAGES = ("clustering", "ideas", "tasks", "content", "image_prompts", "images", "review")
USAGE_STATUSES = {401, 403, 404, 422}  # the caller's input is wrong: exit 2, like bad flags
STREAM_TIMEOUT = httpx.Timeout(10.0, read=40.0)  # the API sends a keep-alive every 15 s
OUTAGE_S = 30.0  # how long polling rides out an unreachable API before giving up
PAUSE_HINTS = {
    "insufficient_credits": "top up the account, then resume",
    "budget_exhausted": "resume with a higher --budget to go on",
    "user": "resume to go on",
}


class ApiError(Exception):
    """An answer a command cannot go on from, with the exit code the CLI should end with:
    2 when the caller's input is wrong (key, id, values), 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _detail(resp: httpx.Response) -> str:
    """The API's `detail`, as one readable line (a 422 carries a list of problems)."""
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text or resp.reason_phrase
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)


def raise_for_answer(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    code = 2 if resp.status_code in USAGE_STATUSES else 1
    raise ApiError(f"{_detail(resp)} (HTTP {resp.status_code})", code)


def api_call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One request; an unreachable API or an error answer becomes an ApiError."""
    try:
        resp = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ApiError(f"cannot reach the API at {client.base_url} ({exc}); is it up?") from exc
    raise_for_answer(resp)
    return resp.json()


def start_run(client: httpx.Client, site_id: int, budget: int | None) -> str:
    """POST the run; a 409 names the site's active run, which the message passes on."""
    body: dict[str, Any] = {"site_id": site_id}
    if budget is not None:
        body["budget_credits"] = budget
    return str(api_call(client, "POST", RUNS, json=body)["run_id"])


def control_run(client: httpx.Client, run_id: str, action: str, budget: int | None = None) -> None:
    """Signal pause, resume or cancel (a resume may carry a new budget)."""
    body = {"budget_credits": budget} if budget is not None else None
    api_call(client, "POST", f"{RUNS}/{run_id}/{action}", json=body)


def list_runs(client: httpx.Client, site_id: int | None, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if site_id is not None:
        params["site_id"] = site_id
    return dict(api_call(client, "GET", RUNS, params=params))


def active_run_of(client: httpx.Client, site_id: int) -> str | None:
    """The site's run that is still running, paused or cancelling, if any."""
    for run in list_runs(client, site_id, 20)["data"]:
        if run["status"] in {"running", "paused", "cancelling"}:
            return str(run["run_id"])
    return None


def sse_snapshots(client: httpx.Client, run_id: str) -> Iterator[dict[str, Any]]:
    """The run's `progress` events as dicts, until the server ends the stream (it does
    when the run ends). Error answers raise ApiError; a dropped connection raises
    httpx.TransportError for the caller to fall back on."""
    with client.stream("GET", f"{RUNS}/{run_id}/events", timeout=STREAM_TIMEOUT) as resp:
        if resp.status_code >= 400:
            resp.read()
            raise_for_answer(resp)
        event, data = "message", []
        for line in resp.iter_lines():
            if line.startswith(":"):
                continue  # a keep-alive comment
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                if event == "progress":
                    yield json.loads("\n".join(data))
                event, data = "message", []


def polled_snapshots(client: httpx.Client, run_id: str, poll_s: float) -> Iterator[dict[str, Any]]:
    """GET the run's progress every `poll_s` until it ends, riding out an API outage of
    up to OUTAGE_S (the API restarting, say) before giving up."""
    down_since: float | None = None
    while True:
        try:
            snap = api_call(client, "GET", f"{RUNS}/{run_id}")
            down_since = None
        except ApiError as exc:
            if exc.exit_code == 2 or (down_since and time.monotonic() - down_since > OUTAGE_S):
                raise
            down_since = down_since or time.monotonic()
            time.sleep(poll_s)
            continue
        yield snap
        if snap["status"] in TERMINAL:
            return
        time.sleep(poll_s)


def run_snapshots(
    client: httpx.Client, run_id: str, poll_s: float = 0.5
) -> Iterator[dict[str, Any]]:
    """Snapshots from the live stream; should it drop before the run ends (a proxy, the
    API restarting, a server without streaming), from polling instead."""
    try:
        for snap in sse_snapshots(client, run_id):
            yield snap
            if snap["status"] in TERMINAL:
                return
    except (httpx.TransportError, ValueError, ApiError) as exc:  # ValueError: a torn event
        if isinstance(exc, ApiError) and exc.exit_code == 2:
            raise  # the run is unknown or the key refused: polling would say the same
    yield from polled_snapshots(client, run_id, poll_s)


def _count(done: int, total: int) -> str:
    return f"{done}/{total}"


class RunView:
    """What the terminal shows while a run goes: a header line (status, stage, credits,
    balance) and one bar per stage with its done/total, failures and credits. Where bars
    cannot redraw (a pipe, a log file) it prints a line per change instead."""

    def __init__(self, console: Console, run_id: str) -> None:
        self.console = console
        self.run_id = run_id
        self.header = Text(f"run {run_id}: starting")
        self.status = ""
        self.progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]:>9}"),
            TextColumn("{task.fields[state]:<9}"),
            TextColumn("[red]{task.fields[failed]}[/red] failed"),
            TextColumn("{task.fields[credits]:>5} credits"),
            TextColumn("[dim]{task.fields[note]}"),
            console=console,
        )
        self.rows = {name: self._add(name) for name in STAGES}
        self.stage_states: dict[str, str] = {}

    def _add(self, name: str) -> Any:
        return self.progress.add_task(
            name, total=1, completed=0, count="0/0", state="pending", failed=0, credits=0, note=""
        )

    def __rich__(self) -> RenderableType:
        return Group(self.header, self.progress)

    def update(self, snap: dict[str, Any]) -> None:
        self.header = Text.from_markup(header_line(snap))
        self._note_status(snap)
        live = snap.get("live_images")
        for stage in snap["stages"]:
            if stage["name"] not in self.rows:  # a stage this CLI does not know yet
                self.rows[stage["name"]] = self._add(stage["name"])
            row = self.rows[stage["name"]]
            total, settled = stage["total"], stage["done"] + stage["failed"]
            finished = stage["status"] in TERMINAL
            self.progress.update(
                row,
                total=max(total, 1),
                completed=1 if finished and not total else settled,
                count=_count(stage["done"], total),
                state=stage["status"],
                failed=stage["failed"],
                credits=stage["credits_used"],
                note=_images_note(live) if stage["name"] == "images" and live else "",
            )
            self._log_stage(stage)

    def _log_stage(self, stage: dict[str, Any]) -> None:
        """Without bars, a line each time a stage starts or ends."""
        if self.console.is_terminal or stage["status"] == "pending":
            return
        if self.stage_states.get(stage["name"]) == stage["status"]:
            return
        self.stage_states[stage["name"]] = stage["status"]
        self.console.print(
            f"{stage['name']}: {stage['status']} {_count(stage['done'], stage['total'])}"
            f" ({stage['failed']} failed, {stage['credits_used']} credits)"
        )

    def _note_status(self, snap: dict[str, Any]) -> None:
        """Say once, above the bars, when the run pauses (and what gets it going again);
        without bars, every change of the run's status."""
        status = snap["status"]
        if status == self.status:
            return
        self.status = status
        if not self.console.is_terminal:
            self.console.print(self.header)
        if status == "paused":
            reason = snap.get("pause_reason") or "user"
            self.console.print(
                f"[yellow]run paused ({reason}): {PAUSE_HINTS.get(reason, 'resume to go on')}:"
                f" igny8 automation resume {self.run_id}[/yellow]"
            )


def _images_note(live: dict[str, Any]) -> str:
    return (
        f"images: {live.get('images_done', 0)} made, {live.get('images_in_flight', 0)} in flight"
        f", {live.get('images_failed', 0)} failed"
    )


def header_line(snap: dict[str, Any]) -> str:
    """The run's status, stage and money in one line."""
    status = snap["status"]
    if snap.get("pause_reason"):
        status += f" ({snap['pause_reason']})"
    budget = f" of {snap['budget_credits']} budget" if snap.get("budget_credits") else ""
    stage = f" · stage {snap['current_stage']}" if snap.get("current_stage") else ""
    cost = Decimal(str(snap.get("cost_usd") or 0))
    return (
        f"[bold]{snap['run_id']}[/bold] · [bold]{status}[/bold]{stage} · "
        f"{snap['credits_used']} credits used{budget} (${cost:.4f}) · "
        f"balance [bold]{snap.get('balance', '?')}[/bold]"
    )


def watch_run(
    console: Console, client: httpx.Client, run_id: str, poll_s: float = 0.5
) -> dict[str, Any]:
    """Draw the run live until it ends; return its last snapshot. Ctrl-C raises
    KeyboardInterrupt to the caller, with the run untouched."""
    view = RunView(console, run_id)
    snap: dict[str, Any] = {}
    live = Live(view, console=console, refresh_per_second=8)
    with live if console.is_terminal else contextlib.nullcontext():
        for snap in run_snapshots(client, run_id, poll_s):
            view.update(snap)
    return snap


def run_summary(snap: dict[str, Any]) -> Table:
    """Per stage: status, done/total, failed and credits; the run's totals underneath."""
    table = Table(
        "stage",
        "status",
        "done/total",
        "failed",
        "credits",
        title=f"automation run {snap['run_id']}: {snap['status']}",
        show_footer=False,
    )
    for stage in snap["stages"]:
        table.add_row(
            stage["name"],
            stage["status"],
            _count(stage["done"], stage["total"]),
            str(stage["failed"]),
            str(stage["credits_used"]),
        )
    cost = Decimal(str(snap.get("cost_usd") or 0))
    table.add_section()
    table.add_row("total", snap["status"], "", "", str(snap["credits_used"]))
    table.caption = f"provider cost ${cost:.4f} · balance {snap.get('balance', '?')} credits"
    return table
