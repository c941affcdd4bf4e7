"""The cyclic garbage collector's settings for the long-running processes (web, worker).

Profiled: with CPython's default (a young-generation collection every 700 net
allocations) the worker spent about a third of its CPU in the collector, which each
time walks every young container, mostly short-lived dicts and lists of events that
reference counting frees anyway. Collecting every 50,000 allocations instead, and
moving what exists at startup (modules, settings, compiled pipelines) out of the
collector's view (`gc.freeze`), keeps that work rare; garbage in reference cycles is
still collected, later. `python -m bench.worker` and `python -m bench.ingest` measure it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000


@contextmanager
def tuned_gc(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Within the block: the young generation collected every `young` allocations, the
    objects made before it frozen. Restores both on exit (tests run processes in-process)."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
