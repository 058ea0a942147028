"""One micro-batch of raw bar messages -> regime events and dead letters, with Redis as the only state.

``BatchProcessor.compute`` does the I/O around the pure steps of worker/steps.py:

    validate (already done by the runner as records arrive)
    -> Redis read: each symbol's state, one pipelined round trip
    -> steps.plan per symbol; a second read, only for symbols whose stored costs are in doubt (rebuild)
    -> steps.window, steps.infer, steps.build (in the executor thread: ONNX Runtime holds no GIL, so Kafka
       and Redis I/O keep flowing)
    -> Redis write: bars, embeddings with their costs and the encoded events, atomically per symbol
       (compare-and-set on the symbol's last bar time; a symbol another worker moved is re-read and redone)
    -> steps.emit per symbol whose write held

Only then are events returned for sending, so an event is never sent for state that was not stored, and a
redelivered bar finds its stored event and re-emits it unchanged. When a symbol's stored costs cannot be
trusted (another model's after a hot reload, missing, another layout) they are rebuilt in the same batch by
replaying its stored bars through the model in force (docs/worker.md, "State in doubt").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from worker import steps
from worker.redis_store import RedisStore, SymbolState
from worker.serving import Serving
from worker.steps import BatchReport, Outgoing, Record, SymbolPlan, SymbolResult
from worker.telemetry import Telemetry
from worker.validate import Bar, BarValidator, Rejection

__all__ = ["BatchProcessor", "Outgoing", "Record"]

log = logging.getLogger("regimetry.worker")


class BatchProcessor:
    def __init__(
        self,
        serving: Serving,
        store: RedisStore,
        validator: BarValidator,
        telemetry: Telemetry,
        executor: Executor,
        dlq_limit: int,
        retry_max_seconds: float = 5.0,
    ):
        self.store = store
        self.validator = validator
        self.telemetry = telemetry
        self.executor = executor
        self.dlq_limit = dlq_limit
        self.retry_max_seconds = retry_max_seconds
        # last bar time this process saw stored per symbol: Redis going *back* means its state was lost
        self._known: dict[str, int] = {}
        self.use(serving)

    def use(self, serving: Serving) -> None:
        """Serve another model from the next batch on (call between batches only)."""
        self.serving = serving
        self.store.configure(serving.history, serving.keep_emb, serving.version)

    async def process(self, records: Sequence[Record], checked: Sequence[Bar | Rejection] | None = None) -> Outgoing:
        """`compute`, then the batch's telemetry (for callers without a broker: tests, tools). The worker's
        runner calls `compute` and records the telemetry once the batch is delivered."""
        out = await self.compute(records, checked)
        self.telemetry.record(out)
        return out

    async def compute(self, records: Sequence[Record], checked: Sequence[Bar | Rejection] | None = None) -> Outgoing:
        """Events and dead letters of one micro-batch, stored in Redis (commit step 1). `records` are Records or
        anything with their fields (the worker passes Faust's messages as they are); `checked` is each
        record's validation result when the caller validated them already."""
        sv = self.serving
        out = Outgoing(BatchReport(sv.version, sv.drift, sv.rebuild_bars, bars=len(records)))
        if checked is None:
            checked = [self.validator.check(rec.key, rec.value) for rec in records]
        pending: dict[str, list[tuple[Bar, Record]]] = {}
        for rec, check in zip(records, checked):
            if isinstance(check, Rejection):
                out.dead_letter(steps.DeadLetter(rec, check.reason, check.detail), self.dlq_limit)
            else:
                pending.setdefault(check.symbol, []).append((check, rec))
        delay = 0.05
        while pending:
            plans = await self._plan(pending, out.report)
            t0 = time.perf_counter()
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self._infer_and_build, plans)
            if any(p.new for p in plans):
                out.report.inferred = True
                out.report.inference_seconds += time.perf_counter() - t0
            writes = [r.write for r in results if r.write is not None]
            applied = iter(await self._with_redis(self.store.write, writes))
            retry: dict[str, list[tuple[Bar, Record]]] = {}
            for p, result in zip(plans, results):
                if result.write is None or next(applied):
                    steps.emit(p, result, out, self.dlq_limit)
                    if result.write is not None:
                        self._known[p.symbol] = int(result.write.meta["last_time"])
                else:  # another worker advanced this symbol between our read and write: redo it
                    out.report.conflicts += 1
                    retry[p.symbol] = pending[p.symbol]
            pending = retry
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
        return out

    async def _plan(self, pending: dict[str, list[tuple[Bar, Record]]], report: BatchReport) -> list[SymbolPlan]:
        """Read each symbol's state and plan it; read every stored bar of the symbols to rebuild."""
        candidates = {s: [bar.time for bar, _ in items] for s, items in pending.items()}
        states = await self._with_redis(self.store.read, candidates)
        report.states_lost += self._notice_lost_state(states)
        plans = [steps.plan(self.serving, s, items, states[s]) for s, items in pending.items()]
        doubtful = [i for i, p in enumerate(plans) if p.new and p.doubt is not None]
        if doubtful:  # second read, these symbols only: every stored bar, to rebuild from
            stored = await self._with_redis(self.store.read_bars, [plans[i].symbol for i in doubtful])
            for i in doubtful:
                times, values = stored[plans[i].symbol]
                keep = times <= plans[i].state.last_time  # what the first read saw (the write checks last_time)
                plans[i] = plans[i].with_replay(times[keep], values[keep])
        return plans

    def _infer_and_build(self, plans: list[SymbolPlan]) -> list[SymbolResult]:
        """The pure steps over the whole batch (runs in the executor thread)."""
        sv, now = self.serving, time.time()
        win = steps.window(sv, plans)
        inf = steps.infer(sv, plans, win)
        return [steps.build(sv, p, win, i, inf, now, self.store.keep_bars) for i, p in enumerate(plans)]

    async def _with_redis(self, call, arg):
        """Retry a Redis call with capped exponential back-off until it succeeds: a bar is never dropped
        because Redis was away, and nothing is acknowledged (so no offset is committed) meanwhile."""
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

        delay = 0.1
        while True:
            try:
                return await call(arg)
            except (ConnectionError, TimeoutError, BusyLoadingError, OSError) as exc:
                self.telemetry.redis_error()
                log.warning("redis unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _notice_lost_state(self, states: dict[str, SymbolState]) -> int:
        """Redis restarted empty (no persistence) or was flushed: a symbol's stored last bar time went back.
        Nothing to repair from here (the offsets of older bars are committed), so the window refills from
        new bars and the first history_bars - 1 of them get no event: never an event from a partial window.
        Logged here, counted by telemetry. Returns the number of symbols whose state was lost."""
        lost = 0
        for symbol, st in states.items():
            known = self._known.get(symbol)
            if known is not None and (st.last_time is None or st.last_time < known):
                lost += 1
                log.warning(
                    "redis state of %s lost (last stored bar %s, Redis now has %s): refilling its window; "
                    "its next %d bars get no event",
                    symbol,
                    known,
                    st.last_time,
                    self.serving.history - 1,
                )
                del self._known[symbol]
            elif st.last_time is not None and (known is None or st.last_time > known):
                self._known[symbol] = st.last_time
        return lost
