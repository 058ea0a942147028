"""worker/gc_pauses.py: the start-up heap frozen out of the collector's way, every collection measured."""

from __future__ import annotations

import gc

from worker import gc_pauses


def test_freeze_moves_the_live_heap_out_of_full_collections():
    cycles = []
    for _ in range(20_000):  # a heap of objects the collector must walk
        a: list = []
        a.append(a)
        cycles.append(a)
    try:
        frozen = gc_pauses.freeze_startup_heap()
        assert frozen == gc.get_freeze_count() >= len(cycles)
        assert len(gc.get_objects(generation=2)) < frozen  # what a full collection walks no longer holds them
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_watch_observes_each_collection_with_its_generation():
    seen: list[tuple[int, float]] = []
    callback = gc_pauses.watch(lambda generation, seconds: seen.append((generation, seconds)))
    try:
        gc.collect(1)
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert [g for g, _ in seen[-2:]] == [1, 2]
    assert all(s >= 0 for _, s in seen)
    n = len(seen)
    gc.collect()
    assert len(seen) == n  # removed: nothing observed any more
