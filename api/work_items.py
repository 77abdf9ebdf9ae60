"""What a run or a batch is working on, by name.

A workflow's progress names the items in flight by id only (its state carries ids, and a
query must not touch the database). The API turns those ids into the titles a person
reads ("Writing “How to brew tea”"), one query per kind of item, scoped to the account.
Titles are cached per process and database: a live panel asks every tick, and a title
seldom changes in the seconds an item is in flight.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable

from pydantic import BaseModel
from sqlalchemy import Engine, select

from models.pipeline import Cluster, Content, Image, Keyword, Task

# Which kind of item each run stage's `working_on` ids name.
STAGE_KINDS = {
    "clustering": "keyword",
    "ideas": "cluster",
    "content": "task",
    "image_prompts": "content",
    "images": "content",
}
_COLUMNS = {
    "keyword": (Keyword.__table__, "keyword"),
    "cluster": (Cluster.__table__, "name"),
    "task": (Task.__table__, "title"),
    "content": (Content.__table__, "title"),
}
IMAGES = Image.__table__
TASKS = Task.__table__
CACHE_SIZE = 4096
CACHE_TTL_S = 30.0  # a renamed item shows its new title within this


class WorkItem(BaseModel):
    """One item being worked on now: `stage` is the run stage (`images` for a batch)."""

    stage: str
    kind: str  # keyword, cluster, task, content, image
    id: int
    title: str


# Per engine (a test's fresh database reuses ids), bounded, oldest dropped first.
_caches: weakref.WeakKeyDictionary[Engine, OrderedDict[tuple[int, str, int], tuple[float, str]]] = (
    weakref.WeakKeyDictionary()
)
_now = time.monotonic  # the cache's clock (a test moves it)
_lock = threading.Lock()  # lookups run in the API's thread pool


def _cache(engine: Engine) -> OrderedDict[tuple[int, str, int], tuple[float, str]]:
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches[engine] = OrderedDict()
    return cache


def _remember(engine: Engine, key: tuple[int, str, int], title: str) -> None:
    with _lock:
        cache = _cache(engine)
        cache[key] = (_now() + CACHE_TTL_S, title)
        cache.move_to_end(key)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)


def _cached(engine: Engine, key: tuple[int, str, int]) -> str | None:
    with _lock:
        hit = _cache(engine).get(key)
    return hit[1] if hit is not None and hit[0] > _now() else None


def _image_title(image_type: str, position: int, task_title: str) -> str:
    if image_type == "featured":
        return f"Featured image for “{task_title}”"
    return f"In-article image {position} for “{task_title}”"


def _fetch(engine: Engine, account_id: int, kind: str, ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        if kind == "image":
            rows = conn.execute(
                select(IMAGES.c.id, IMAGES.c.image_type, IMAGES.c.position, TASKS.c.title)
                .join(TASKS, TASKS.c.id == IMAGES.c.task_id)
                .where(IMAGES.c.id.in_(ids), IMAGES.c.account_id == account_id)
            ).all()
            return {r.id: _image_title(r.image_type, r.position, r.title) for r in rows}
        table, column = _COLUMNS[kind]
        rows = conn.execute(
            select(table.c.id, table.c[column]).where(
                table.c.id.in_(ids), table.c.account_id == account_id
            )
        ).all()
        return {r[0]: r[1] for r in rows}


def describe(
    engine: Engine, account_id: int, wanted: Iterable[tuple[str, str, int]]
) -> list[WorkItem]:
    """(stage, kind, id) triples as WorkItems with titles, in the order given. An id the
    account does not own (or that is gone) is left out rather than shown by number."""
    wanted = list(wanted)
    found: dict[tuple[str, int], str] = {}
    missing: dict[str, list[int]] = {}
    for _, kind, item_id in wanted:
        title = _cached(engine, (account_id, kind, item_id))
        if title is None:
            missing.setdefault(kind, []).append(item_id)
        else:
            found[(kind, item_id)] = title
    for kind, ids in missing.items():
        for item_id, title in _fetch(engine, account_id, kind, ids).items():
            found[(kind, item_id)] = title
            _remember(engine, (account_id, kind, item_id), title)
    return [
        WorkItem(stage=stage, kind=kind, id=item_id, title=found[(kind, item_id)])
        for stage, kind, item_id in wanted
        if (kind, item_id) in found
    ]
