"""Talking to the embedded (or any) Kafka from outside the worker: bar messages in, events and dead letters
out. Shared by the tests, the benchmark and the demo so they all speak the worker's wire format the same way.

Collecting never relies on end offsets or consumer lag (Tansu can report end offsets too low): it reads from
the earliest offset until the caller's condition holds or a deadline passes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


def bar_message(symbol: str, time_s: int, values: Iterable[float]) -> bytes:
    o, h, l, c, v = (float(x) for x in values)
    return json.dumps(
        {"symbol": symbol, "time": int(time_s), "open": o, "high": h, "low": l, "close": c, "volume": v},
        separators=(",", ":"),
    ).encode()


def series_messages(symbol: str, times: np.ndarray, values: np.ndarray) -> list[tuple[bytes, bytes]]:
    """(key, value) messages of one symbol's bars, in time order."""
    key = symbol.encode()
    return [(key, bar_message(symbol, t, row)) for t, row in zip(times.tolist(), values.tolist())]


def interleave(*streams: list) -> list:
    """Round-robin merge that keeps each stream's own order (the per-key order Kafka preserves)."""
    out, iters = [], [iter(s) for s in streams]
    while iters:
        alive = []
        for it in iters:
            try:
                out.append(next(it))
                alive.append(it)
            except StopIteration:
                pass
        iters = alive
    return out


def producer(bootstrap: str, **kwargs):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, "acks": 1, **kwargs})


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]], prod=None) -> int:
    """Send (key, value) messages and wait until the broker has them all."""
    own = prod is None
    prod = prod or producer(bootstrap)
    n = 0
    try:
        for key, value in messages:
            prod.send(topic, key=key, value=value)
            n += 1
        prod.flush()
    finally:
        if own:
            prod.close()
    return n


class PacedFeed:
    """Sends messages from a background thread in chunks with a pause between them: a steady stream, so
    faults injected by a test land mid-flow. The pause paces the offered load; it is not a wait for a result."""

    def __init__(
        self, bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], chunk: int = 16, pause: float = 0.02
    ):
        self._args = (bootstrap, topic, messages, chunk, pause)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-feed")

    def _run(self) -> None:
        bootstrap, topic, messages, chunk, pause = self._args
        prod = producer(bootstrap, linger_ms=0)
        try:
            for i in range(0, len(messages), chunk):
                if self._stop.is_set():
                    break
                for key, value in messages[i : i + chunk]:
                    prod.send(topic, key=key, value=value)
                prod.flush()
                self._stop.wait(pause)
        finally:
            prod.close()

    def start(self) -> PacedFeed:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Collector:
    """Reads a topic from the earliest offset and keeps every record (decoded JSON where it parses)."""

    bootstrap: str
    topic: str
    records: list = field(default_factory=list)

    def __post_init__(self) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            consumer_timeout_ms=200,
        )

    def poll(self) -> int:
        got = 0
        for batch in self._consumer.poll(timeout_ms=200, max_records=10_000).values():
            for r in batch:
                self.records.append(r)
                got += 1
        return got

    def values(self) -> list[dict]:
        return [json.loads(r.value) for r in self.records]

    def wait_for(self, done: Callable[[list], bool], timeout: float, what: str) -> list[dict]:
        """Poll until done(values) holds; raise TimeoutError naming `what` (and the count so far) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            vals = self.values()
            if done(vals):
                return vals
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not reached within {timeout:.0f} s ({len(vals)} records on {self.topic})")

    def copies_by_event_id(self) -> dict[str, set[bytes]]:
        """Distinct raw values per event id: one value per id means every redelivered copy was identical."""
        out: dict[str, set[bytes]] = {}
        for r in self.records:
            out.setdefault(json.loads(r.value)["event_id"], set()).add(r.value)
        return out

    def wait_for_bars(self, n: int, timeout: float, what: str) -> list[dict]:
        """Wait until events for `n` distinct (symbol, bar_time) pairs have arrived."""
        return self.wait_for(lambda v: len({(e["symbol"], e["bar_time"]) for e in v}) >= n, timeout, what)

    def close(self) -> None:
        self._consumer.close()
