"""The garbage collector's pauses, out of the way of the bars: the start-up heap frozen, every pause measured.

Why: a worker holds a large, long-lived heap from its start-up (Faust, aiokafka, ONNX Runtime's wrappers,
the bundle, the module objects). CPython's full (generation-2) collection walks all of it: measured in a
worker at 1,000 bars/s, one every ~5 s lasting ~50-70 ms, during which no bar moves: the largest single
stall behind the tail of the bar-to-event latency. ``freeze_startup_heap`` moves what start-up built into
the collector's permanent generation (``gc.freeze``), after which a full collection takes ~1 ms. Reference
counting still frees those objects when they are dropped (a hot reload's old model goes that way); only a
reference cycle among them would outlive its use.

``watch`` observes every collection's duration in ``regimetry_gc_pause_seconds{generation}``, so a pause that
returns (a heap grown by a leak, a library building cycles per record) shows on the dashboard.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

_started: list[float] = []


def freeze_startup_heap() -> int:
    """Collect once, then freeze everything alive; returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def watch(observe: Callable[[int, float], None]) -> Callable[[str, dict], None]:
    """Call ``observe(generation, seconds)`` after every collection; returns the callback (to remove it)."""

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            _started.append(time.perf_counter())
        elif _started:
            observe(int(info["generation"]), time.perf_counter() - _started.pop())

    gc.callbacks.append(callback)
    return callback
