"""Micro-batches of bar records, gathered while the previous batch is still being processed.

The consumer appends each fetched chunk to a bounded buffer (``feed``: ``room`` then ``extend``) while the
runner takes batches from it (``take``). ``take`` hands over whatever is buffered, up to ``max_size``, as soon
as there is one record: no fixed wait for company. An idle worker therefore processes a lone bar the moment
it arrives, and under load the records that arrive while batch N is processed form batch N+1, so batches
grow with the load by themselves (a backlog gives full batches). Before issue 13 a partial batch waited up to
``within`` (50 ms) for more; ``within`` > 0 still does that (an opt-in upper bound, default 0).

Why not Faust's ``stream.take_events``: it stops filling its buffer for as long as the loop body runs (its
``add_to_buffer`` waits on ``buffer_consuming``), so every batch first spent ~55 ms of event-loop time pulling
its ~1,000 records through the stream and only then started its ~110 ms of inference. Here the per-record
work for batch N+1 happens while batch N is in ONNX Runtime. A full buffer (``capacity``, two batches by
default) holds the consumer back. Bound: the buffer holds fewer than ``capacity + max_size`` records (three
batches by default; ``feed`` appends large fetched chunks in pieces). Records the consumer has fetched but not
yet handed over sit in aiokafka's fetch buffers, bounded by its fetch sizes per partition, not here.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, max_size: int, within: float = 0.0, capacity: int | None = None):
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size
        self.within = within
        self.capacity = max(capacity or 2 * max_size, max_size)
        self._items: list[T] = []
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()  # a whole batch is waiting
        self._space = asyncio.Event()  # below capacity: put may append
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    async def room(self) -> None:
        """Return once the buffer holds fewer than `capacity` items."""
        while len(self._items) >= self.capacity:
            self._space.clear()
            await self._space.wait()

    async def feed(self, items: list, prepare=None) -> None:
        """Append a fetched chunk of any size in pieces of at most ``max_size``, each after ``room``, so the
        buffer never holds more than ``capacity + max_size - 1`` items however large the chunk (a fetch from
        many partitions at once held 17k-60k records in one piece). ``prepare(piece) -> items`` runs on each
        piece just before it is appended (the worker tracks and validates records there)."""
        for i in range(0, len(items), self.max_size):
            piece = items[i : i + self.max_size]
            await self.room()
            self.extend(prepare(piece) if prepare is not None else piece)

    def extend(self, items: list[T]) -> None:
        """Append items now (after `room`; may overshoot `capacity` by at most len(items): `feed` keeps
        that below ``max_size``)."""
        self._items.extend(items)
        if self._items:
            self._has_items.set()
        if len(self._items) >= self.max_size:
            self._full.set()

    async def take(self) -> list[T]:
        """The next batch, in arrival order: what is buffered (at most `max_size`) once there is one item;
        with `within` > 0 a partial batch first waits up to that long to fill."""
        await self._has_items.wait()
        if not self._full.is_set() and self.within > 0:
            try:
                await asyncio.wait_for(self._full.wait(), self.within)
            except TimeoutError:
                pass
        batch = self._items[: self.max_size]
        del self._items[: self.max_size]
        if not self._items:
            self._has_items.clear()
        if len(self._items) < self.max_size:
            self._full.clear()
        if len(self._items) < self.capacity:
            self._space.set()
        return batch
