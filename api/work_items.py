"""What a run or a batch is working on, by name.

A workflow's progress names the items in flight by id only (its state carries ids, and a
query must not touch the database). The API turns those ids into the titles a person
reads ("Writing “How to brew tea”"), one query per kind of item, scoped to the account.
Titles are cached per app (`TitleCache`): a live panel asks every tick, and a title
seldom changes in the seconds an item is in flight.
"""

from __future__ import annotations

import threading
import time
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


class TitleCache:
    """Titles by (account, kind, id), bounded (oldest dropped first), each kept for
    CACHE_TTL_S. One per app (app.state.titles): lookups run in its thread pool."""

    def __init__(self, size: int = CACHE_SIZE, ttl_s: float = CACHE_TTL_S) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.clock = time.monotonic  # a test moves it
        self._items: OrderedDict[tuple[int, str, int], tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[int, str, int]) -> str | None:
        with self._lock:
            hit = self._items.get(key)
        return hit[1] if hit is not None and hit[0] > self.clock() else None

    def put(self, key: tuple[int, str, int], title: str) -> None:
        with self._lock:
            self._items[key] = (self.clock() + self.ttl_s, title)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


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
    engine: Engine, titles: TitleCache, account_id: int, wanted: Iterable[tuple[str, str, int]]
) -> list[WorkItem]:
    """(stage, kind, id) triples as WorkItems with titles, in the order given. An id the
    account does not own (or that is gone) is left out rather than shown by number."""
    wanted = list(wanted)
    found: dict[tuple[str, int], str] = {}
    missing: dict[str, list[int]] = {}
    for _, kind, item_id in wanted:
        title = titles.get((account_id, kind, item_id))
        if title is None:
            missing.setdefault(kind, []).append(item_id)
        else:
            found[(kind, item_id)] = title
    for kind, ids in missing.items():
        for item_id, title in _fetch(engine, account_id, kind, ids).items():
            found[(kind, item_id)] = title
            titles.put((account_id, kind, item_id), title)
    return [
        WorkItem(stage=stage, kind=kind, id=item_id, title=found[(kind, item_id)])
        for stage, kind, item_id in wanted
        if (kind, item_id) in found
    ]
