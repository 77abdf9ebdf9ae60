"""Keep the garbage collector's full passes short in long-running processes.

A worker process holds tens of thousands of long-lived objects from start-up (the
modules it imported, pydantic's schemas, the Temporal and OpenAI SDKs), and each full
(generation 2) collection walks all of them while every thread of the process waits. A
gc callback in a worker during a 300-keyword automation run saw each full pass stop the
process for 155-159 ms, three times a run: an activity result, a workflow task and a
progress query that met one waited that long. Frozen after start-up, those objects are
never walked again, and the same run's full passes took 29-55 ms.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every surviving object to the permanent generation. Call
    when start-up is done, before the process takes work: what it builds later is
    collected as usual."""
    gc.collect()
    gc.freeze()
