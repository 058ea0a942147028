"""Feed replay: historical bars -> the `bars` topic, paced like a live feed, several symbols interleaved by time.

Pacing follows a schedule fixed at the start (message i is due at start + offset_i), so a slow send is caught
up rather than accumulated, and `--speed 60x` really plays one hour of bars in one minute. Messages use the
worker's wire format (devstack.kafka_kit.bar_message) with the symbol as key, so per-symbol order is kept by
Kafka's per-partition order.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from devstack.kafka_kit import bar_message
from regimetry.data import BarSeries


class PaceError(ValueError):
    """A --speed / --rate value that cannot be parsed."""


@dataclass(frozen=True)
class Pace:
    """When each message is due, in seconds after the first: by bar-time ratio (speed) or fixed rate."""

    speed: float | None = None  # 60.0 means 60 bar-seconds per wall second
    rate: float | None = None  # messages per second

    @classmethod
    def parse(cls, speed: str | None, rate: str | None) -> Pace:
        if speed and rate:
            raise PaceError("give --speed or --rate, not both")
        if speed and speed.strip().lower() not in ("max", "0", "0x"):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*x?\s*", speed.lower())
            if not m or float(m.group(1)) <= 0:
                raise PaceError(f"--speed {speed!r}: expected a factor such as 60x")
            return cls(speed=float(m.group(1)))
        if rate:
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/s)?\s*", rate.lower())
            if not m or float(m.group(1)) <= 0:
                raise PaceError(f"--rate {rate!r}: expected messages per second such as 200/s")
            return cls(rate=float(m.group(1)))
        return cls()

    def due(self, index: int, bar_time: int, first_time: int) -> float:
        if self.speed:
            return (bar_time - first_time) / self.speed
        if self.rate:
            return index / self.rate
        return 0.0

    def describe(self) -> str:
        return (
            f"{self.speed:g}x bar time"
            if self.speed
            else f"{self.rate:g} bars/s"
            if self.rate
            else "as fast as possible"
        )


def merged(series: list[BarSeries]) -> Iterator[tuple[int, str, bytes]]:
    """(bar time, symbol, message) of every series, in time order; ties keep the order the series were given."""

    def one(k: int, s: BarSeries) -> Iterator[tuple[int, int, str, bytes]]:
        for t, row in zip(s.times.tolist(), s.values.tolist()):
            yield t, k, s.symbol, bar_message(s.symbol, t, row)

    for t, _, symbol, msg in heapq.merge(*(one(k, s) for k, s in enumerate(series))):
        yield t, symbol, msg


@dataclass
class ReplayStats:
    sent: int = 0
    per_symbol: dict[str, int] = field(default_factory=dict)
    first_time: int | None = None
    last_time: int | None = None
    seconds: float = 0.0


def replay(
    series: list[BarSeries],
    send: Callable[[str, bytes], None],
    pace: Pace = Pace(),
    on_sent: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayStats:
    """Send every bar through `send(symbol, message)` on the pace's schedule; `on_sent(n)` after each one."""
    stats = ReplayStats()
    start = clock()
    for i, (t, symbol, msg) in enumerate(merged(series)):
        if stats.first_time is None:
            stats.first_time = t
        wait = start + pace.due(i, t, stats.first_time) - clock()
        if wait > 0:
            sleep(wait)  # pacing to the schedule, not waiting for a condition
        send(symbol, msg)
        stats.sent += 1
        stats.per_symbol[symbol] = stats.per_symbol.get(symbol, 0) + 1
        stats.last_time = t
        if on_sent:
            on_sent(stats.sent)
    stats.seconds = clock() - start
    return stats


def load_series(sources: list[str], symbols: list[str], max_bars: int | None) -> list[BarSeries]:
    """Bars of each source (a CSV/parquet path or a sample name such as 'eurusd'), one symbol each.

    Symbols pair with sources in order; a single source given several symbols is replayed once per symbol
    (handy for a multi-symbol demo from one file). `max_bars` keeps the first N bars of each series.
    """
    from regimetry.data import resolve_data

    if symbols and len(sources) not in (1, len(symbols)):
        raise ValueError(f"{len(sources)} sources but {len(symbols)} --symbol values: give one symbol per source")
    loaded = [resolve_data(src) for src in sources]
    if symbols and len(loaded) == 1:
        loaded = loaded * len(symbols)
    out = []
    for i, s in enumerate(loaded):
        name = symbols[i] if symbols else s.symbol
        stop = max_bars if max_bars else None
        out.append(BarSeries(s.times[:stop], s.values[:stop], name))
    return out
