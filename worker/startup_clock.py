"""Where a worker's start-up goes: imports, bundle load and ONNX Runtime warm-up, Redis and broker connection,
Faust start and group join. Marks are taken as `main` passes each phase and logged in one line when the worker
is ready (and set on /metrics as regimetry_startup_seconds{phase}), so a slow start says which part was slow.

The clock starts when this module is first imported: the first thing `python -m worker` and `regimetry
worker` do, so "imports" is the time from there to `main` (the interpreter's own start, ~50 ms, is not in it)."""

from __future__ import annotations

import time

_T0 = time.perf_counter()
_marks: list[tuple[str, float]] = []


def mark(phase: str) -> None:
    """`phase` ended now (it began where the previous one ended)."""
    _marks.append((phase, time.perf_counter()))


def phases() -> dict[str, float]:
    """Seconds per phase, in the order they ended."""
    out, last = {}, _T0
    for phase, t in _marks:
        out[phase] = t - last
        last = t
    return out
