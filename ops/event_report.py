"""`regimetry report-events`: the events of a bar-time range, de-duplicated, to CSV and/or JSON.

The topic is read from the earliest offset. Stopping needs care because some brokers (Tansu) report end
offsets that are too low: the read ends only when every partition has reached the end offsets seen at the
start AND nothing new arrived for `idle` seconds, so a low end offset cannot cut a report short.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ops.events_view import CSV_COLUMNS, decode, flat, unique


def parse_time(text: str | None) -> int | None:
    """Epoch seconds, or an ISO 8601 date/datetime (UTC unless it carries an offset)."""
    if text is None or text == "":
        return None
    if text.strip().lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def read_all(
    consumer, topic: str, idle: float = 2.0, timeout: float = 120.0, clock: Callable[[], float] = time.monotonic
) -> list[bytes]:
    """Every record value of `topic` from the earliest offset (see the module note on stopping).

    The consumer must not be subscribed: all partitions are assigned here, so no group is joined or moved.
    """
    from ops.kafka import assign_all

    deadline = clock() + timeout
    targets = consumer.end_offsets(assign_all(consumer, topic, from_beginning=True))
    values: list[bytes] = []
    last_new = clock()
    while clock() < deadline:
        got = consumer.poll(timeout_ms=200, max_records=5000)
        for batch in got.values():
            values.extend(r.value for r in batch)
        if got:
            last_new = clock()
        reached = all(consumer.position(tp) >= end for tp, end in targets.items())
        if reached and clock() - last_new >= idle:
            return values
    raise TimeoutError(f"events topic not read to the end within {timeout:.0f} s ({len(values)} records read)")


def select(
    values: list[bytes], since: int | None, until: int | None, symbols: frozenset[str] = frozenset()
) -> list[dict]:
    """Events with since <= bar_time < until, one per event_id, ordered by symbol then bar time."""
    events = [e for e in (decode(v) for v in values) if e is not None]
    events = [
        e
        for e in events
        if (since is None or e["bar_time"] >= since)
        and (until is None or e["bar_time"] < until)
        and (not symbols or e["symbol"] in symbols)
    ]
    return sorted(unique(events), key=lambda e: (e["symbol"], e["bar_time"]))


def to_csv(events: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for e in events:
        w.writerow(flat(e))
    return buf.getvalue()


def write(events: list[dict], csv_path: Path | None, json_path: Path | None) -> None:
    if csv_path:
        csv_path.write_text(to_csv(events))
    if json_path:
        json_path.write_text(json.dumps(events, indent=1) + "\n")
