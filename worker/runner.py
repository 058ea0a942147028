"""The worker's one loop: take -> process -> deliver -> ack.

A bar record becomes a committed offset in four steps, in this order:

  1. **Redis write.** ``process`` stores the batch's bars, embeddings, regime costs and encoded events,
     atomically per symbol (a compare-and-set on the symbol's last bar time), before any event is sent.
  2. **Sends acknowledged by the broker.** ``deliver`` sends the events and dead letters and returns once the
     broker acknowledged every one (``acks=all``), retrying broker errors for as long as it takes.
  3. **Records acked.** Each of the batch's records is acknowledged to Faust's consumer (``ack``); it was
     tracked as unacknowledged when it entered the buffer (``accept``), which holds the commit back.
  4. **Offsets committed by Faust.** Faust's commit timer (``broker_commit_interval``) commits each partition
     up to its lowest unacknowledged record.

A crash between any two steps leaves the offsets uncommitted: the batch comes back, each bar finds itself
stored (step 1) and its stored event is re-emitted byte for byte. A bug (any exception but the broker and
Redis errors the steps retry) exits the process with ``EXIT_BROKEN_BATCH`` without acknowledging.

Batches overlap by one: batch N+1 is taken and processed (its Redis read sees batch N's write) while the broker
confirms batch N; N+1's sends start only after N was acknowledged, so events keep bar order per symbol even
when a send is repeated. Meanwhile the consumer validates the next records into the buffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from worker.batching import MicroBatcher

log = logging.getLogger("regimetry.worker")

EXIT_BROKEN_BATCH = 70  # EX_SOFTWARE: a bug while processing; exit without acknowledging the batch
SHUTDOWN_GRACE = 30.0  # seconds a batch in flight may take to finish when the worker stops


class Runner:
    """`process(messages, checked) -> Outgoing` (step 1), `deliver(Outgoing)` (step 2), `ack(message)`
    (step 3), `record(Outgoing, t0)` (the batch's telemetry, once it is delivered)."""

    def __init__(
        self,
        batches: MicroBatcher,
        check: Callable[[bytes | None, bytes | None], Any],
        process: Callable[[tuple, tuple], Awaitable[Any]],
        deliver: Callable[[Any], Awaitable[None]],
        ack: Callable[[Any], Any],
        record: Callable[[Any, float], None],
        exit: Callable[[int], Any] = os._exit,
    ):
        self.batches, self.check = batches, check
        self.process, self.deliver, self.ack, self.record = process, deliver, ack, record
        self.exit = exit

    async def accept(self, messages: list, track: Callable[[Any], Any] | None = None) -> None:
        """Take fetched bar records into the buffer (waiting while it is full, which holds the consumer back),
        validated, and `track` each (Faust commits no offset past a tracked record until it is acked)."""

        def prepare(piece: list) -> list:
            if track is not None:
                for message in piece:
                    track(message)
            return [(message, self.check(message.key, message.value)) for message in piece]

        await self.batches.feed(messages, prepare)

    async def run(self) -> None:
        in_flight: asyncio.Future | None = None
        try:
            while True:
                batch = await self.batches.take()  # take
                t0 = time.perf_counter()
                messages, checked = zip(*batch)
                out = await self._unless_broken(self.process(messages, checked))  # process: step 1
                if in_flight is not None:
                    await in_flight  # the previous batch is delivered and acked before this one sends
                in_flight = asyncio.ensure_future(self._unless_broken(self._deliver_and_ack(messages, out, t0)))
        finally:
            if in_flight is not None:  # stopping: the batch already delivering finishes and is acked
                await asyncio.wait_for(asyncio.shield(in_flight), timeout=SHUTDOWN_GRACE)

    async def _deliver_and_ack(self, messages: tuple, out: Any, t0: float) -> None:
        await self.deliver(out)  # step 2
        for message in messages:  # step 3 (step 4 is Faust's commit timer)
            self.ack(message)
        self.record(out, t0)

    async def _unless_broken(self, awaitable: Awaitable):
        """Await a step; a bug exits the process without acknowledging anything, so the supervisor restarts
        the worker and the batch is redelivered. A shutdown lets the step finish first."""
        task = asyncio.ensure_future(awaitable)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait_for(task, timeout=SHUTDOWN_GRACE)
            raise
        except Exception:
            log.exception("micro-batch failed; exiting without acknowledging it")
            logging.shutdown()
            self.exit(EXIT_BROKEN_BATCH)
            raise
