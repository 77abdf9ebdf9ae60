"""core/heap.py: start-up's objects leave the collector's full passes, in the worker and
API processes only (a test's app must not freeze the test process)."""

from __future__ import annotations

import gc

from api.main import create_app
from core.heap import freeze_startup_heap
from core.settings import Settings


def test_freezing_moves_what_is_alive_out_of_the_collectors_reach():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, schemas and SDKs this process imported
        assert sum(gc.get_count()) < frozen  # and the generations start empty
    finally:
        gc.unfreeze()


def test_only_the_api_process_freezes_its_heap():
    assert create_app(Settings(), connect_temporal=False).state.freeze_heap is False
