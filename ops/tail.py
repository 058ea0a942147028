"""`regimetry tail`: follow regime-events the way a downstream strategy would (or, --transitions-only, the
regime-transitions topic: one record per regime change).

A plain kafka-python consumer: without --group it reads every partition and commits nothing (a viewer must not
move a strategy's offsets); with --group it joins that consumer group and commits, like a real subscriber.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from ops.events_view import Seen, decode, wanted


@dataclass(frozen=True)
class TailOptions:
    symbols: frozenset[str] = frozenset()
    transitions_only: bool = False
    dedupe: bool = True
    max_events: int | None = None  # stop after this many events shown
    idle_timeout: float | None = None  # stop after this many seconds without a shown event


def follow(
    poll: Callable[[], list[bytes | None]],
    show: Callable[[dict], None],
    opts: TailOptions,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Show matching events until max_events or idle_timeout; returns how many were shown.

    `poll()` returns the raw values of the records that arrived (it blocks briefly when there are none).
    """
    seen = Seen()
    shown = 0
    last = clock()
    while opts.max_events is None or shown < opts.max_events:
        for value in poll():
            event = decode(value)
            if event is None or not wanted(event, opts.symbols, opts.transitions_only):
                continue
            if opts.dedupe and not seen.first_time(event.get("alarm_id") or event["event_id"]):
                continue
            show(event)
            shown += 1
            last = clock()
            if opts.max_events is not None and shown >= opts.max_events:
                break
        if opts.idle_timeout is not None and clock() - last > opts.idle_timeout:
            break
    return shown


def kafka_poller(consumer) -> Callable[[], list[bytes | None]]:
    def poll() -> list[bytes | None]:
        batches = consumer.poll(timeout_ms=500, max_records=2000)
        return [r.value for tp in sorted(batches, key=lambda tp: tp.partition) for r in batches[tp]]

    return poll


def json_line(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))
