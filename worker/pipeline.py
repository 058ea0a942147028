"""One micro-batch of raw bar messages -> regime events and dead letters, with Redis as the only state.

``BatchProcessor.compute`` does the I/O around the pure steps of worker/steps.py:

    validate (already done by the runner as records arrive)
    -> Redis read: each symbol's state, one pipelined round trip
    -> continuity: a symbol whose stored state ends before bars this process has not seen (Redis came back
       older than the committed offsets) gets those bars read back from the bars topic (worker/log_reader.py)
       and replayed ahead of its new ones, nothing sent for them; where the log no longer holds them the
       symbol starts again from nothing. Never an event from a window with a hole.
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
from worker.log_reader import LogReader
from worker.redis_store import RedisStore, SymbolState
from worker.serving import Serving
from worker.state_cache import StateCache, differences
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
        log_reader: LogReader | None = None,
        max_future_bars: float = 0.0,
        cache_symbols: int = 0,
        verify_cache: bool = False,
    ):
        self.max_future_bars = max_future_bars  # see steps.future_limit
        self.store = store
        # what this worker's own writes left in Redis, standing in for the next read (worker/state_cache.py)
        self.cache = StateCache(cache_symbols, serving.history, store.keep_bars, store.keep_emb)
        self.verify_cache = verify_cache
        self.log_reader = log_reader  # None: no log to read back from (tools, unit tests): stored state trusted
        self.validator = validator
        self.telemetry = telemetry
        self.executor = executor
        self.dlq_limit = dlq_limit
        self.retry_max_seconds = retry_max_seconds
        # last bar time this process saw stored per symbol: Redis going *back* means its state was lost
        self._known: dict[str, int] = {}
        # continuity (see _gap): per (topic, partition) the next offset expected and the first offset of the
        # run this process has seen without a jump; per symbol the (topic, partition, offset) its stored state
        # ended at when this process last wrote or checked it
        self._next: dict[tuple[str, int], int] = {}
        self._seen_from: dict[tuple[str, int], int] = {}
        self._vouched: dict[str, tuple[str, int, int]] = {}
        self.use(serving)

    def use(self, serving: Serving) -> None:
        """Serve another model from the next batch on (call between batches only)."""
        self.serving = serving
        self.store.configure(serving.history, serving.keep_emb, serving.version)
        self.cache.configure(serving.history, self.store.keep_bars, self.store.keep_emb)

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
        self._track(records)
        pending: dict[str, list[tuple[Bar, Record]]] = {}
        for rec, check in zip(records, checked):
            if isinstance(check, Rejection):
                out.dead_letter(steps.DeadLetter(rec, check.reason, check.detail), self.dlq_limit)
            else:
                pending.setdefault(check.symbol, []).append((check, rec))
        delay = 0.05
        while pending:
            plans, hits = await self._plan(pending, out.report)
            t0 = time.perf_counter()
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self._infer_and_build, plans)
            if any(p.new for p in plans):
                out.report.inferred = True
                out.report.inference_seconds += time.perf_counter() - t0
            writes = [r.write for r in results if r.write is not None]
            applied = iter(await self._with_redis(self.store.write, writes))
            retry: dict[str, list[tuple[Bar, Record]]] = {}
            raced = False  # another worker's write: back off before redoing (a stale cache is redone at once)
            for p, result in zip(plans, results):
                if result.write is None or next(applied):
                    steps.emit(p, result, out, self.dlq_limit)
                    if result.write is not None:
                        self._known[p.symbol] = int(result.write.meta["last_time"])
                        self.cache.after_write(p.state, result.write, self.serving.version)
                    self._vouch(p, pending[p.symbol][0][1])
                else:  # another worker advanced this symbol between our read and write: redo it
                    self.cache.drop(p.symbol)
                    if p.symbol in hits:  # Redis moved under the cache (see state_cache.py)
                        out.report.cache_stale += 1
                    else:
                        out.report.conflicts += 1
                        raced = True
                    retry[p.symbol] = pending[p.symbol]
            pending = retry
            if raced:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
        return out

    async def _plan(
        self, pending: dict[str, list[tuple[Bar, Record]]], report: BatchReport
    ) -> tuple[list[SymbolPlan], set[str]]:
        """Each symbol's state (this worker's cache where it stands in for a read, else Redis) and its plan;
        every stored bar of the symbols to rebuild. Returns the plans and the symbols planned on the cache."""
        candidates = {s: [bar.time for bar, _ in items] for s, items in pending.items()}
        version = self.serving.version
        cached = {s: st for s, t in candidates.items() if (st := self.cache.get(s, t, version)) is not None}
        wanted = candidates if self.verify_cache else {s: t for s, t in candidates.items() if s not in cached}
        states = await self._with_redis(self.store.read, wanted) if wanted else {}
        report.states_lost += self._notice_lost_state(states)
        if self.verify_cache:
            cached = self._verified(cached, states)
        states.update(cached)
        report.cached |= set(cached)
        restore, resets = await self._read_back(pending, states, report)
        now = time.time()
        plans = []
        for s, items in pending.items():
            back = restore.get(s, [])
            bars = back + items
            limit = steps.future_limit(states[s], now, self.max_future_bars, max(bar.time for bar, _ in bars))
            plans.append(steps.plan(self.serving, s, bars, states[s], len(back), s in resets, limit))
        doubtful = [i for i, p in enumerate(plans) if p.new and p.doubt is not None]
        if doubtful:  # second read, these symbols only: every stored bar, to rebuild from
            stored = await self._with_redis(self.store.read_bars, [plans[i].symbol for i in doubtful])
            for i in doubtful:
                times, values = stored[plans[i].symbol]
                keep = times <= plans[i].state.last_time  # what the first read saw (the write checks last_time)
                plans[i] = plans[i].with_replay(times[keep], values[keep])
        return plans, set(cached)

    def _verified(self, cached: dict[str, SymbolState], read: dict[str, SymbolState]) -> dict[str, SymbolState]:
        """REGIMETRY_STATE_CACHE_VERIFY: the cached states Redis still holds as they are. One Redis moved
        under (its write would have been refused) is planned on the read instead; any other difference is a
        bug in the cache and stops the batch."""
        kept = {}
        for s, st in cached.items():
            if (read[s].last_time, read[s].model_version) != (st.last_time, st.model_version):
                self.cache.drop(s)
            elif diff := differences(st, read[s]):
                raise AssertionError(f"state cache of {s} differs from Redis in {', '.join(diff)}")
            else:
                kept[s] = st
        return kept

    def _track(self, records: Sequence[Record]) -> None:
        """Follow each partition's offsets: a jump (a rebalance, a seek) starts a new run, and what this
        process vouched for symbols of that partition no longer holds."""
        for rec in records:
            tp = (rec.topic, rec.partition)
            expected = self._next.get(tp)
            if expected != rec.offset:
                if expected is not None:
                    self._vouched = {s: v for s, v in self._vouched.items() if v[:2] != tp}
                    self.cache.drop_partition(rec.partition)
                self._seen_from[tp] = rec.offset
            self._next[tp] = rec.offset + 1

    def _vouch(self, plan: SymbolPlan, first: Record) -> None:
        """The symbol's stored state is complete up to the record it now ends at (what this batch wrote, or
        what it read and found continuous)."""
        last = plan.records[-1] if plan.new else None
        if last is not None:
            self._vouched[plan.symbol] = (last.topic, last.partition, last.offset)
        elif plan.state.offset is not None and plan.state.partition == first.partition:
            self._vouched[plan.symbol] = (first.topic, first.partition, plan.state.offset)

    def _gap(self, symbol: str, st: SymbolState, first: Record) -> tuple[int, int] | None:
        """The offsets [start, end) of `first`'s partition that may hold bars of `symbol` missing from its
        stored state, or None when the state is known to be continuous up to `first` (the symbol's first
        record in this batch):

        - the stored state ends at the record right before `first`, or at or after it (a redelivery); or
        - this process vouched for exactly that stored end, and has seen every record since; or
        - this process never vouched for the symbol but has seen every record since that end (none of them
          was a new bar of the symbol, or it would have vouched).

        Otherwise (a restart with bars committed after the stored end, or Redis went back below what this
        process wrote) the range is read back from the log. Nothing recorded (no state, or state written
        before offsets were recorded) or another partition (the topic was repartitioned): trusted as stored."""
        if st.offset is None or st.partition is None or st.last_time is None:
            return None
        if st.partition != first.partition:
            log.warning(
                "%s: stored state ends at partition %d, its bars now come from %d: continuity not checked",
                symbol,
                st.partition,
                first.partition,
            )
            return None
        if st.offset >= first.offset - 1:
            return None
        tp = (first.topic, first.partition)
        vouched = self._vouched.get(symbol)
        if vouched == (*tp, st.offset):
            return None
        if vouched is None and st.offset >= self._seen_from.get(tp, first.offset) - 1:
            return None
        return st.offset + 1, first.offset

    async def _read_back(
        self, pending: dict[str, list[tuple[Bar, Record]]], states: dict[str, SymbolState], report: BatchReport
    ) -> tuple[dict[str, list[tuple[Bar, Record]]], set[str]]:
        """Bars of the log missing from each symbol's stored state (see _gap), validated, to replay ahead of
        its new bars; and the symbols to start again from nothing because the log no longer holds theirs.
        One read per partition, over the union of its symbols' ranges."""
        if self.log_reader is None:
            return {}, set()
        wanted: dict[tuple[str, int], dict[str, tuple[int, int, bytes | None]]] = {}
        for s, items in pending.items():
            first = items[0][1]
            span = self._gap(s, states[s], first)
            if span is not None:
                wanted.setdefault((first.topic, first.partition), {})[s] = (*span, first.key)
        restore: dict[str, list[tuple[Bar, Record]]] = {}
        resets: set[str] = set()
        for (topic, partition), spans in wanted.items():
            start, end = min(a for a, _, _ in spans.values()), max(b for _, b, _ in spans.values())
            keys = {k for _, _, k in spans.values() if k is not None}
            got = await self._with_kafka(self.log_reader.read, topic, partition, start, end, keys)
            report.log_reads += 1
            for s, (a, b, key) in spans.items():
                if got.log_start > a:
                    resets.add(s)
                    log.error(
                        "%s: its stored state ends at offset %d of %s/%d but the log now starts at %d: the bars "
                        "between are gone, so its state starts again from the next bars (no event until its "
                        "window is full)",
                        s,
                        a - 1,
                        topic,
                        partition,
                        got.log_start,
                    )
                    continue
                items = []
                for rec in got.records:
                    if rec.key == key and a <= rec.offset < b:
                        check = self.validator.check(rec.key, rec.value)
                        if not isinstance(check, Rejection):  # dead-lettered when it first came
                            items.append((check, rec))
                if items:
                    restore[s] = items
                    log.warning(
                        "%s: %d bar(s) committed after its last stored one were missing from Redis; read back "
                        "from %s/%d offsets %d-%d and stored (no event sent for them)",
                        s,
                        len(items),
                        topic,
                        partition,
                        a,
                        b - 1,
                    )
        report.resets += len(resets)
        return restore, resets

    async def _with_kafka(self, call, *args):
        """Retry a log read with capped back-off while the broker is away (like _with_redis)."""
        from aiokafka.errors import KafkaError

        delay = 0.1
        while True:
            try:
                return await call(*args)
            except (KafkaError, OSError) as exc:
                log.warning("reading the bars topic back failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _infer_and_build(self, plans: list[SymbolPlan]) -> list[SymbolResult]:
        """The pure steps over the whole batch (runs in the executor thread)."""
        sv, now = self.serving, time.time()
        win = steps.window(sv, plans)
        inf = steps.infer(sv, plans, win)
        return [steps.build(sv, p, win, i, inf, now, self.store.keep_bars) for i, p in enumerate(plans)]

    async def _with_redis(self, call, arg):
        """Retry a Redis call with capped exponential back-off until it succeeds: a bar is never dropped
        because Redis was away (or a Redis Cluster is failing over: redis_store.is_redis_outage), and nothing
        is acknowledged (so no offset is committed) meanwhile."""
        from worker.redis_store import is_redis_outage

        delay = 0.1
        while True:
            try:
                return await call(arg)
            except Exception as exc:
                if not is_redis_outage(exc):  # a bug or a refused credential: retrying cannot help
                    raise
                self.cache.clear()  # Redis may come back as something else: read it again
                self.telemetry.redis_error()
                log.warning("redis unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _notice_lost_state(self, states: dict[str, SymbolState]) -> int:
        """Redis restarted empty (no persistence) or was flushed: a symbol's stored last bar time went back.
        Gone altogether: the window refills from new bars and the first history_bars - 1 of them get no event
        (never an event from a partial window). Gone back to an older bar: the bars since are read back from
        the log (_read_back). Logged here, counted by telemetry. Returns the number of such symbols."""
        lost = 0
        for symbol, st in states.items():
            known = self._known.get(symbol)
            if known is not None and (st.last_time is None or st.last_time < known):
                lost += 1
                if st.last_time is None:
                    log.warning(
                        "redis state of %s lost (last stored bar %s, Redis now has none): refilling its window; "
                        "its next %d bars get no event",
                        symbol,
                        known,
                        self.serving.history - 1,
                    )
                else:
                    log.warning(
                        "redis state of %s went back (last stored bar %s, Redis now ends at %s)%s",
                        symbol,
                        known,
                        st.last_time,
                        ": its missing bars are read back from the bars topic" if self.log_reader else "",
                    )
                del self._known[symbol]
            elif st.last_time is not None and (known is None or st.last_time > known):
                self._known[symbol] = st.last_time
        return lost
