"""One micro-batch of raw bar messages -> regime events and dead letters, with Redis as the only state.

Per batch: validate every message; one pipelined Redis round trip reads each symbol's state; bars are sorted
into new / duplicate / rejected; all new windows go through the encoder in one ONNX Runtime call and all
forecasts through the forecaster in one call (in a worker thread, so Kafka and Redis I/O keep flowing while
ONNX Runtime holds no GIL); one more round trip appends bars, embeddings and the encoded events atomically
per symbol. Only then are events returned for sending, so an event is never sent for state that was not
stored, and a redelivered bar finds its stored event and re-emits it unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from regimetry.features import scaled_windows
from worker.events import build_event, dead_letter, encode
from worker.metrics import WorkerMetrics
from worker.serving import Serving
from worker.state import RedisStore, SymbolState, SymbolWrite, pack_bar, pack_bars, pack_embeddings, unpack_embeddings
from worker.validate import Bar, BarValidator, Reason, Rejection

log = logging.getLogger("regimetry.worker")


@dataclass(frozen=True)
class Record:
    """One consumed Kafka message, as raw as it arrived."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None  # producer/broker timestamp, epoch seconds


@dataclass
class Outgoing:
    """What a batch sends: events (key, value) in bar order per symbol, and dead letters."""

    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead: list[tuple[bytes | None, bytes, str]] = field(default_factory=list)
    new_event_timestamps: list[float] = field(default_factory=list)
    reemitted: int = 0
    duplicates: int = 0
    warming: int = 0  # new bars stored without an event: the symbol's window is not full yet


@dataclass
class _SymbolPlan:
    """One symbol's share of a batch after comparing it with Redis."""

    symbol: str
    state: SymbolState
    new: list[Bar] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)           # record of each new bar
    actions: list[tuple] = field(default_factory=list)             # per input bar, in input order


class BatchProcessor:
    MIN_BLOCK = 32  # rows per classifier block below which splitting costs more than it saves

    def __init__(self, serving: Serving, store: RedisStore, validator: BarValidator, metrics: WorkerMetrics,
                 executor: Executor, dlq_limit: int, retry_max_seconds: float = 5.0, classify_threads: int = 1):
        self.store = store
        self.validator = validator
        self.metrics = metrics
        self.executor = executor
        self.dlq_limit = dlq_limit
        self.retry_max_seconds = retry_max_seconds
        self.classify_threads = classify_threads
        self.classify_pool = (ThreadPoolExecutor(classify_threads, thread_name_prefix="regimetry-knn")
                              if classify_threads > 1 else None)
        # the current regime's kNN runs here while the compute thread runs the forecaster and its kNN: both
        # release the GIL, and the two overlap on a second core (~15 % less compute per batch on 2 cores)
        self.side = ThreadPoolExecutor(1, thread_name_prefix="regimetry-current")
        # last bar time this process saw stored per symbol: Redis going *back* means its state was lost
        self._known: dict[str, int] = {}
        self.use(serving)

    def use(self, serving: Serving) -> None:
        """Serve another model from the next batch on (call between batches only)."""
        self.serving = serving
        self.model = serving.model
        self.drift = serving.drift
        self.ood_threshold = serving.ood_threshold
        self.profiles = serving.profiles
        self.version, self.history, self.stride = serving.version, serving.history, serving.stride
        self.span, self.dim = serving.span, serving.dim
        self.store.configure(serving.history, serving.span, serving.version)

    # -- orchestration ------------------------------------------------------------------------------------
    async def process(self, records: Sequence[Record], checked: Sequence[Bar | Rejection] | None = None) -> Outgoing:
        """Events and dead letters of one micro-batch. `records` are Records or anything with their fields
        (the worker passes Faust's messages as they are); `checked` is each record's validation result when
        the caller validated them already (the worker does, while the previous batch is in inference)."""
        out = Outgoing()
        self.metrics.bars_consumed.inc(len(records))
        if checked is None:
            checked = [self.validator.check(rec.key, rec.value) for rec in records]
        pending: dict[str, list[tuple[Bar, Record]]] = {}
        for rec, result in zip(records, checked):
            if isinstance(result, Rejection):
                self._dead(out, rec, result.reason, result.detail)
            else:
                pending.setdefault(result.symbol, []).append((result, rec))
        loop = asyncio.get_running_loop()
        delay = 0.05
        while pending:
            candidates = {s: [bar.time for bar, _ in items] for s, items in pending.items()}
            states = await self._with_redis(self.store.read, candidates)
            self._notice_lost_state(states)
            plans = [self._plan(s, items, states[s]) for s, items in pending.items()]
            t0 = time.perf_counter()
            writes = await loop.run_in_executor(self.executor, self._compute, plans)
            if any(p.new for p in plans):
                self.metrics.inference_latency.observe(time.perf_counter() - t0)
            applied = await self._with_redis(self.store.write, [w for w, _ in writes if w is not None])
            applied_iter = iter(applied)
            retry: dict[str, list[tuple[Bar, Record]]] = {}
            for (write, finish), plan in zip(writes, plans):
                if write is None or next(applied_iter):
                    finish(out)
                    if write is not None:
                        self._known[plan.symbol] = write.meta["last_time"]
                else:  # another worker advanced this symbol between our read and write: redo it
                    self.metrics.redis_conflicts.inc()
                    retry[plan.symbol] = pending[plan.symbol]
            pending = retry
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
        self.metrics.batch_size.observe(len(records))
        return out

    async def _with_redis(self, call, arg):
        """Retry a Redis call with capped exponential back-off until it succeeds: a bar is never dropped
        because Redis was away, and nothing is acknowledged (so no offset is committed) meanwhile."""
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

        delay = 0.1
        while True:
            try:
                return await call(arg)
            except (ConnectionError, TimeoutError, BusyLoadingError, OSError) as exc:
                self.metrics.redis_errors.inc()
                log.warning("redis unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _notice_lost_state(self, states: dict[str, SymbolState]) -> None:
        """Redis restarted empty (no persistence) or was flushed: a symbol's stored last bar time went back.
        Nothing to repair from here (the offsets of older bars are committed), so the window refills from
        new bars and the first history_bars - 1 of them get no event: never an event from a partial window.
        Counted and logged so the gap is visible."""
        for symbol, st in states.items():
            known = self._known.get(symbol)
            if known is not None and (st.last_time is None or st.last_time < known):
                self.metrics.state_lost.inc()
                log.warning("redis state of %s lost (last stored bar %s, Redis now has %s): refilling its window; "
                            "its next %d bars get no event", symbol, known, st.last_time, self.history - 1)
                del self._known[symbol]
            elif st.last_time is not None and (known is None or st.last_time > known):
                self._known[symbol] = st.last_time

    def _dead(self, out: Outgoing, rec: Record, reason: Reason, detail: str) -> None:
        out.dead.append((rec.key, dead_letter(reason.value, detail, rec.value, rec.key, rec.topic, rec.partition,
                                              rec.offset, self.dlq_limit), reason.value))

    # -- sorting a symbol's bars against its stored state ------------------------------------------------
    def _plan(self, symbol: str, items: list[tuple[Bar, Record]], st: SymbolState) -> _SymbolPlan:
        plan = _SymbolPlan(symbol, st)
        last = st.last_time
        in_batch: dict[int, int] = {}
        for bar, rec in items:
            if last is None or bar.time > last:
                in_batch[bar.time] = len(plan.new)
                plan.actions.append(("new", len(plan.new)))
                plan.new.append(bar)
                plan.records.append(rec)
                last = bar.time
            elif bar.time in in_batch:
                first = plan.new[in_batch[bar.time]]
                if first.values() == bar.values():
                    plan.actions.append(("again", in_batch[bar.time]))
                else:
                    plan.actions.append(("reject", rec, Reason.CONFLICTING_DUPLICATE,
                                         f"bar {bar.time} already in this batch with other values"))
            else:
                stored_bar, stored_event = st.lookups.get(bar.time, (b"", b""))
                if stored_bar == pack_bar(bar.time, bar.values()):
                    plan.actions.append(("stored", stored_event))
                elif stored_bar:
                    plan.actions.append(("reject", rec, Reason.CONFLICTING_DUPLICATE,
                                         f"bar {bar.time} already stored with other values"))
                else:
                    window = (f" (the dedupe window starts at {st.oldest_time})"
                              if st.oldest_time is not None and bar.time < st.oldest_time else "")
                    plan.actions.append(("reject", rec, Reason.OUT_OF_ORDER,
                                         f"bar time {bar.time} <= last bar time {st.last_time}{window}"))
        return plan

    # -- inference and event building (runs in the executor thread) ----------------------------------------
    def _compute(self, plans: list[_SymbolPlan]) -> list[tuple[SymbolWrite | None, object]]:
        m = self.model
        # Each symbol's run of new bars with a full history, grouped by length: one feature pass per group.
        groups: dict[int, list[tuple[int, np.ndarray, int]]] = {}
        new_values: dict[int, np.ndarray] = {}         # each plan's new bars as one array (features, packing)
        for pi, plan in enumerate(plans):
            if not plan.new:
                continue
            new_values[pi] = np.asarray([b.values() for b in plan.new], dtype=np.float64)
            stored = plan.state.bars[-(self.history - 1):] if self.history > 1 else plan.state.bars[:0]
            combined = np.concatenate([stored, new_values[pi]])
            first = max(len(stored), self.history - 1)  # first combined index with a full history
            if first < len(combined):
                groups.setdefault(len(combined) - first, []).append(
                    (pi, combined[first + 1 - self.history:], first - len(stored)))
        windows, owners = [], []                       # one window per new bar with a complete history
        for n, members in groups.items():
            windows.append(self._run_windows(np.stack([seg for _, seg, _ in members])))
            owners += [(pi, j0 + k) for pi, _, j0 in members for k in range(n)]
        z = (m.embed(np.concatenate(windows)) if windows else np.zeros((0, self.dim), np.float32))
        current = self.side.submit(self._current, z)  # overlaps the forecaster below

        # forecaster input: last L embeddings spaced by stride, from Redis then from this batch
        seqs: dict[int, np.ndarray] = {}
        for pi, plan in enumerate(plans):
            prior = (unpack_embeddings(plan.state.emb, self.dim) if plan.state.model_version == self.version
                     else np.zeros((0, self.dim), np.float32))
            seqs[pi] = prior
        rows_of: dict[int, list[int]] = {}
        for row, (pi, _) in enumerate(owners):
            rows_of.setdefault(pi, []).append(row)
        fc_hist, fc_rows = [], []
        lags = self.stride * np.arange(self.span // self.stride, -1, -1)   # oldest first, ending at the bar
        for pi, rows in rows_of.items():
            seq = np.concatenate([seqs[pi], z[rows]])
            q = len(seqs[pi]) + np.arange(len(rows))                          # each new bar's index in seq
            ok = q >= self.span                                               # has L embeddings behind it
            if ok.any():
                fc_hist.append(seq[q[ok, None] - lags])
                fc_rows += np.asarray(rows)[ok].tolist()
        next_proba: dict[int, list[float]] = {}
        if fc_hist:
            pred = self._classify(m.forecast(np.concatenate(fc_hist)))
            next_proba = dict(zip(fc_rows, pred.tolist()))
        rows_by_bar: dict[int, dict[int, int]] = {}
        for row, (pi, j) in enumerate(owners):
            rows_by_bar.setdefault(pi, {})[j] = row
        proba_rows, ood_rows = current.result()
        return [self._finish(plan, new_values.get(pi), rows_by_bar.get(pi, {}), z, proba_rows, ood_rows, next_proba)
                for pi, plan in enumerate(plans)]

    def _current(self, z: np.ndarray) -> tuple[list[list[float]], list[float]]:
        """Current regime vote shares and OOD scores as plain Python floats (events are built from them one
        bar at a time, so the conversion happens once per batch)."""
        ood = self.model.ood(z) if len(z) else np.zeros(0)
        return self._classify(z).tolist(), ood.tolist()

    def _classify(self, z: np.ndarray) -> np.ndarray:
        """kNN vote shares, split over `classify_threads` row blocks: after the encoder the classifier is the
        costliest step per bar (two k-d tree queries), the tree query releases the GIL, and rows are
        independent, so the blocks run in parallel with identical results."""
        if len(z) == 0:
            return np.zeros((0, self.bundle_k))
        if self.classify_pool is None or len(z) < 2 * self.MIN_BLOCK:
            return self.model.classify(z)
        blocks = np.array_split(z, min(self.classify_threads, len(z) // self.MIN_BLOCK))
        return np.concatenate(list(self.classify_pool.map(self.model.classify, blocks)))

    def _run_windows(self, runs: np.ndarray) -> np.ndarray:
        """(G, T, 5) runs of bars of G symbols -> (G * (T - history + 1), W, F) windows, symbol-major.

        One feature pass covers every window of every run: consecutive bars share all but one feature row,
        and features have a finite lookback, so this equals RegimeModel.windows on each bar's own history.
        Batching symbols matters as much as batching bars: compute_features costs ~0.3 ms per call whatever
        its size, which would dominate a batch of one bar for each of many symbols."""
        b = self.model.bundle
        wins = scaled_windows(runs, b.spec, b.scaler, b.window_size)         # (G, n, W, F)
        return wins.reshape(-1, *wins.shape[-2:])

    @property
    def bundle_k(self) -> int:
        return self.serving.n_clusters

    def _finish(self, plan: _SymbolPlan, values: np.ndarray | None, row_of: dict[int, int], z: np.ndarray,
                proba: list[list[float]], ood: list[float], next_proba: dict) -> tuple[SymbolWrite | None, object]:
        """Events of one symbol, its Redis write, and a callback that fills Outgoing once the write held.
        `values` are the plan's new bars as an array; `row_of` maps the index of a new bar to its row in the
        batch arrays (bars without a window: none)."""
        st = plan.state
        now = time.time()
        encoded: dict[int, bytes] = {}
        observations = []
        write = SymbolWrite(plan.symbol, st.last_time) if plan.new else None
        regime, pred = st.regime, st.pred
        times = [bar.time for bar in plan.new]
        rows = [row_of.get(j) for j in range(len(times))]
        with_event = [j for j, row in enumerate(rows) if row is not None]
        warming = len(times) - len(with_event)
        if write is not None:
            write.bars = list(zip(times, pack_bars(times, values)))
            emb_times = [times[j] for j in with_event]
            write.emb = list(zip(emb_times, pack_embeddings(emb_times, z[[rows[j] for j in with_event]])))
        for j in with_event:
            row = rows[j]
            doc = build_event(plan.symbol, times[j], self.version, proba[row], regime, next_proba.get(row), ood[row],
                              self.ood_threshold, self.profiles, emitted_at=now)
            encoded[j] = encode(doc)
            write.events.append((times[j], encoded[j]))
            observations.append((doc["regime"]["id"], doc["regime"]["confidence"], doc["ood_score"], regime, pred))
            regime = doc["regime"]["id"]
            pred = doc["predicted"]["regime"] if doc["predicted"] else None
        if write is not None:
            write.meta["last_time"] = plan.new[-1].time
            if encoded:
                write.meta["regime"] = regime
                write.meta["pred"] = "" if pred is None else pred

        def finish(out: Outgoing) -> None:
            key = plan.symbol.encode()
            out.warming += warming
            for action in plan.actions:
                kind = action[0]
                if kind == "new" and action[1] in encoded:
                    out.events.append((key, encoded[action[1]]))
                    ts = plan.records[action[1]].timestamp
                    if ts is not None:
                        out.new_event_timestamps.append(ts)
                elif kind == "again":
                    out.duplicates += 1
                    if action[1] in encoded:
                        out.events.append((key, encoded[action[1]]))
                        out.reemitted += 1
                elif kind == "stored":
                    out.duplicates += 1
                    if action[1]:
                        out.events.append((key, action[1]))
                        out.reemitted += 1
                elif kind == "reject":
                    self._dead(out, action[1], action[2], action[3])
            for obs in observations:
                self.drift.observe(*obs)
            if encoded:
                last = plan.records[-1]
                self.metrics.set_regime(plan.symbol, regime, (last.topic, last.partition))

        return write, finish
