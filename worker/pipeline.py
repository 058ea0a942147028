"""One micro-batch of raw bar messages -> regime events and dead letters, with Redis as the only state.

Per batch: validate every message; one pipelined Redis round trip reads each symbol's state; bars are sorted
into new / duplicate / rejected; all new windows go through the encoder in one ONNX Runtime call, the regime
decoder in one call over every symbol's new bars, and all forecasts through the forecaster in one call (in a
worker thread, so Kafka and Redis I/O keep flowing while ONNX Runtime holds no GIL); one more round trip
appends bars, embeddings with their regime costs, and the encoded events atomically per symbol. Only then are
events returned for sending, so an event is never sent for state that was not stored, and a redelivered bar
finds its stored event and re-emits it unchanged.

Live equals batch: each event is what RegimeModel.run_series computes for that bar. The regime of bar t is
the jump decoder's argmin over the last `memory` costs (regimetry/regimes.py), so the worker keeps those costs
(the float64 numbers, beside the embeddings) and decodes each new bar from the stored ones plus the batch's.
When a symbol's stored costs cannot be trusted (another model's after a hot reload, missing, another layout)
they are rebuilt, in the same batch, by replaying the symbol's stored bars through the model in force: a
second Redis read, for those symbols only. The rebuilt state is the batch reference of the stored bars, which
is the whole history's as soon as history + memory - 1 bars are stored (docs/worker.md, "State in doubt").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from regimetry.features import scaled_windows
from regimetry.regimes import dwell
from worker.events import build_event, dead_letter, encode
from worker.metrics import WorkerMetrics
from worker.redis_store import (
    RedisStore,
    StoredWindows,
    SymbolState,
    SymbolWrite,
    pack_bar,
    pack_bars,
    pack_embeddings,
    unpack_embeddings,
)
from worker.serving import Serving
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
    rebuilt: list[tuple[str, str, str]] = field(default_factory=list)  # (symbol, result, detail) per rebuild

    def messages(self, events_topic: str, dlq_topic: str) -> list[tuple[str, bytes | None, bytes]]:
        """(topic, key, value) of everything the batch sends: its events in order, then its dead letters."""
        return [(events_topic, k, v) for k, v in self.events] + [(dlq_topic, k, v) for k, v, _ in self.dead]


@dataclass
class _SymbolPlan:
    """One symbol's share of a batch after comparing it with Redis."""

    symbol: str
    state: SymbolState
    new: list[Bar] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # record of each new bar
    actions: list[tuple] = field(default_factory=list)  # per input bar, in input order
    prior: StoredWindows | None = None  # the stored embeddings and costs, when they can be used as they are
    doubt: str | None = None  # why they cannot (then the symbol is rebuilt from its stored bars)
    replay_times: np.ndarray | None = None  # rebuild: every stored bar, replayed through the model in force
    replay: np.ndarray | None = None


@dataclass
class _Rows:
    """The batch's windowed bars (rows), as plain Python values for building events one bar at a time."""

    regime: list[int]
    proba: list[list[float]]
    ood: list[float]
    dwell: list[int]
    next_regime: dict[int, int]  # row -> predicted regime (rows with a forecast)
    next_proba: dict[int, list[float]]
    z: np.ndarray  # (N, D) embeddings
    costs: np.ndarray  # (N, K) costs, float64


class BatchProcessor:
    def __init__(
        self,
        serving: Serving,
        store: RedisStore,
        validator: BarValidator,
        metrics: WorkerMetrics,
        executor: Executor,
        dlq_limit: int,
        retry_max_seconds: float = 5.0,
    ):
        self.store = store
        self.validator = validator
        self.metrics = metrics
        self.executor = executor
        self.dlq_limit = dlq_limit
        self.retry_max_seconds = retry_max_seconds
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
        self.span, self.dim, self.k = serving.span, serving.dim, serving.n_clusters
        self.keep_emb, self.rebuild_bars = serving.keep_emb, serving.rebuild_bars
        self._nothing = StoredWindows(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), np.zeros((0, self.k)))
        self.store.configure(serving.history, serving.keep_emb, serving.version)

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
            doubtful = [p for p in plans if p.new and p.doubt is not None]
            if doubtful:  # second read, these symbols only: every stored bar, to rebuild from
                stored = await self._with_redis(self.store.read_bars, [p.symbol for p in doubtful])
                for p in doubtful:
                    times, values = stored[p.symbol]
                    keep = times <= p.state.last_time  # what the first read saw (the write checks last_time)
                    p.replay_times, p.replay = times[keep], values[keep]
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
        self._report_rebuilds(out.rebuilt)
        return out

    def _report_rebuilds(self, rebuilt: list[tuple[str, str, str]]) -> None:
        """Count the batch's rebuilds by result and say in one log line which symbols and why."""
        if not rebuilt:
            return
        by: dict[str, list[tuple[str, str]]] = {}
        for symbol, result, detail in rebuilt:
            self.metrics.state_rebuilds.labels(result=result).inc()
            by.setdefault(result, []).append((symbol, detail))
        exact = by.pop("exact", [])
        if exact:
            log.info(
                "rebuilt the regime state of %d symbol(s) from their stored bars with model %s (%s): %s",
                len(exact),
                self.version,
                exact[0][1],
                ", ".join(s for s, _ in exact[:10]) + (" ..." if len(exact) > 10 else ""),
            )
        for result, items in by.items():
            why = (
                "fewer bars stored than an exact rebuild needs (history + memory - 1 = "
                f"{self.rebuild_bars}): their events follow the batch reference of the stored bars"
                if result == "short"
                else "the current regime began before the first bar the stored bars decode exactly: "
                "bars_in_regime follows the stored bars until the regime changes"
            )
            log.warning(
                "rebuilt the regime state of %d symbol(s) with model %s, %s: %s",
                len(items),
                self.version,
                why,
                ", ".join(f"{s} ({d})" for s, d in items[:10]) + (" ..." if len(items) > 10 else ""),
            )

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
                log.warning(
                    "redis state of %s lost (last stored bar %s, Redis now has %s): refilling its window; "
                    "its next %d bars get no event",
                    symbol,
                    known,
                    st.last_time,
                    self.history - 1,
                )
                del self._known[symbol]
            elif st.last_time is not None and (known is None or st.last_time > known):
                self._known[symbol] = st.last_time

    def _dead(self, out: Outgoing, rec: Record, reason: Reason, detail: str) -> None:
        out.dead.append(
            (
                rec.key,
                dead_letter(
                    reason.value, detail, rec.value, rec.key, rec.topic, rec.partition, rec.offset, self.dlq_limit
                ),
                reason.value,
            )
        )

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
                    plan.actions.append(
                        (
                            "reject",
                            rec,
                            Reason.CONFLICTING_DUPLICATE,
                            f"bar {bar.time} already in this batch with other values",
                        )
                    )
            else:
                stored_bar, stored_event = st.lookups.get(bar.time, (b"", b""))
                if stored_bar == pack_bar(bar.time, bar.values()):
                    plan.actions.append(("stored", stored_event))
                elif stored_bar:
                    plan.actions.append(
                        (
                            "reject",
                            rec,
                            Reason.CONFLICTING_DUPLICATE,
                            f"bar {bar.time} already stored with other values",
                        )
                    )
                else:
                    window = (
                        f" (the dedupe window starts at {st.oldest_time})"
                        if st.oldest_time is not None and bar.time < st.oldest_time
                        else ""
                    )
                    plan.actions.append(
                        (
                            "reject",
                            rec,
                            Reason.OUT_OF_ORDER,
                            f"bar time {bar.time} <= last bar time {st.last_time}{window}",
                        )
                    )
        if plan.new:
            plan.prior, plan.doubt = self._stored_windows(st)
        return plan

    def _stored_windows(self, st: SymbolState) -> tuple[StoredWindows | None, str | None]:
        """The symbol's stored embeddings and costs if they are exactly what the model in force left after its
        last bar, else why not (the symbol is then rebuilt). A symbol with no last bar has nothing stored."""
        if st.last_time is None:
            return self._nothing, None
        if st.model_version != self.version:
            return None, f"state of model {st.model_version}"
        stored = unpack_embeddings(st.emb, self.dim, self.k)
        if stored is None:
            return None, "embeddings/costs stored in another layout"
        due = min(max(st.n_bars - self.history + 1, 0), self.keep_emb)  # one per stored bar with a window
        if len(stored.times) != due:
            return None, f"{len(stored.times)} embeddings/costs stored where {st.n_bars} bars make {due}"
        if due and (stored.times[-1] != st.last_time or bool((np.diff(stored.times) <= 0).any())):
            return None, "stored embeddings/costs do not end at the last bar"
        if due and (st.regime is None or st.dwell is None):
            return None, "last regime or its dwell missing"
        if not due and st.regime is not None:
            return None, "a last regime stored without a window"
        return stored, None

    # -- inference and event building (runs in the executor thread) ----------------------------------------
    def _compute(self, plans: list[_SymbolPlan]) -> list[tuple[SymbolWrite | None, object]]:
        h = self.history
        # Each symbol's run of new bars with a full history, grouped by length: one feature pass per group. A
        # symbol being rebuilt replays every stored bar from its first full window on (rows with j < 0).
        groups: dict[int, list[tuple[int, np.ndarray, int]]] = {}
        new_values: dict[int, np.ndarray] = {}  # each plan's new bars as one array (features, packing)
        for pi, plan in enumerate(plans):
            if not plan.new:
                continue
            new_values[pi] = np.asarray([b.values() for b in plan.new], dtype=np.float64)
            if plan.replay is not None:
                stored, first = plan.replay, h - 1
            else:
                stored = plan.state.bars[-(h - 1) :] if h > 1 else plan.state.bars[:0]
                first = max(len(stored), h - 1)  # first combined index with a full history
            combined = np.concatenate([stored, new_values[pi]])
            if first < len(combined):
                groups.setdefault(len(combined) - first, []).append(
                    (pi, combined[first + 1 - h :], first - len(stored))
                )
        windows, owners = [], []  # one window per row: (plan, index j of its new bar)
        for n, members in groups.items():
            windows.append(self._run_windows(np.stack([seg for _, seg, _ in members])))
            owners += [(pi, j0 + k) for pi, _, j0 in members for k in range(n)]
        rows_of: dict[int, list[int]] = {}
        for row, (pi, _) in enumerate(owners):
            rows_of.setdefault(pi, []).append(row)
        res = self._infer(plans, np.concatenate(windows), rows_of) if owners else None
        out = []
        for pi, plan in enumerate(plans):
            rows = rows_of.get(pi, [])
            out.append(self._finish(plan, new_values.get(pi), rows, [owners[r][1] for r in rows], res))
        return out

    def _infer(self, plans: list[_SymbolPlan], wins: np.ndarray, rows_of: dict[int, list[int]]) -> _Rows:
        """Encoder, regime geometry and costs, decoder, OOD and forecast for every row of the batch: each step
        is one call over all symbols' rows (the decoder on the stacked (N, memory, K) cost windows)."""
        m, dec = self.model, self.model.decoder
        z = m.embed(wins)
        g = m.geometry(wins, z)
        costs = m.costs(g)
        ood = m.ood(g)
        prior = {pi: (self._nothing if plans[pi].replay is not None else plans[pi].prior) for pi in rows_of}
        order = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows_of.values()])
        w = np.empty_like(costs)
        # the decoder: each row's last `memory` costs, from Redis then from this batch, in one call
        w[order] = dec.values(
            np.concatenate([dec.cost_windows(prior[pi].costs, costs[r]) for pi, r in rows_of.items()])
        )
        regime = w.argmin(1)
        regimes = regime.tolist()
        dwell_rows = np.empty(len(regime), dtype=np.int64)
        for pi, r in rows_of.items():  # continued from the stored last regime and its dwell
            st = plans[pi].state
            start = (None, 0) if plans[pi].replay is not None else (st.regime, st.dwell or 0)
            dwell_rows[r] = dwell(regime[r], *start)

        # forecaster input: last L embeddings spaced by stride, from Redis then from this batch; only bars
        # with an event (a rebuild's replayed bars need none)
        fc_hist, fc_rows = [], []
        lags = self.stride * np.arange(self.span // self.stride, -1, -1)  # oldest first, ending at the bar
        n_replayed = {
            pi: max(len(plans[pi].replay) - self.history + 1, 0) for pi in rows_of if plans[pi].replay is not None
        }
        for pi, r in rows_of.items():
            seq = np.concatenate([prior[pi].z, z[r]])
            q = len(prior[pi].z) + np.arange(len(r))  # each row's index in seq
            ok = q >= max(self.span, n_replayed.get(pi, 0))  # L embeddings behind it, and an event
            if ok.any():
                fc_hist.append(seq[q[ok, None] - lags])
                fc_rows.append(np.asarray(r, dtype=np.int64)[ok])
        next_regime: dict[int, int] = {}
        next_proba: dict[int, list[float]] = {}
        if fc_hist:
            at = np.concatenate(fc_rows)
            nw = m.next_values(w[at], wins[at], m.forecast(np.concatenate(fc_hist)))
            at_list = at.tolist()
            next_regime = dict(zip(at_list, nw.argmin(1).tolist()))
            next_proba = dict(zip(at_list, dec.proba(nw).tolist()))
        return _Rows(
            regimes, dec.proba(w).tolist(), ood.tolist(), dwell_rows.tolist(), next_regime, next_proba, z, costs
        )

    def _run_windows(self, runs: np.ndarray) -> np.ndarray:
        """(G, T, 5) runs of bars of G symbols -> (G * (T - history + 1), W, F) windows, symbol-major.

        One feature pass covers every window of every run: consecutive bars share all but one feature row,
        and features have a finite lookback, so this equals RegimeModel.windows on each bar's own history.
        Batching symbols matters as much as batching bars: compute_features costs ~0.3 ms per call whatever
        its size, which would dominate a batch of one bar for each of many symbols."""
        b = self.model.bundle
        wins = scaled_windows(runs, b.spec, b.scaler, b.window_size)  # (G, n, W, F)
        return wins.reshape(-1, *wins.shape[-2:])

    def _finish(
        self, plan: _SymbolPlan, values: np.ndarray | None, rows: list[int], js: list[int], res: _Rows | None
    ) -> tuple[SymbolWrite | None, object]:
        """Events of one symbol, its Redis write, and a callback that fills Outgoing once the write held.
        `values` are the plan's new bars as an array; `rows` the plan's rows in the batch arrays, `js` the
        index of each row's new bar (negative: a stored bar replayed by a rebuild)."""
        st = plan.state
        now = time.time()
        encoded: dict[int, bytes] = {}
        observations = []
        rebuilding = plan.replay is not None
        write = SymbolWrite(plan.symbol, st.last_time, reset_emb=rebuilding) if plan.new else None
        regime, pred = (None, None) if rebuilding else (st.regime, st.pred)
        times = [bar.time for bar in plan.new]
        n_replay = len(plan.replay) if rebuilding else 0
        warming = len(times) - sum(j >= 0 for j in js)
        if write is not None:
            write.bars = list(zip(times, pack_bars(times, values)))
            if rows:
                keep = slice(-self.keep_emb, None)
                emb_times = [times[j] if j >= 0 else int(plan.replay_times[n_replay + j]) for j in js[keep]]
                write.emb = list(zip(emb_times, pack_embeddings(emb_times, res.z[rows[keep]], res.costs[rows[keep]])))
        for row, j in zip(rows, js):
            if j < 0:  # a replayed bar: state only, its event (if any) was sent long ago
                regime = res.regime[row]
                continue
            doc = build_event(
                plan.symbol,
                times[j],
                self.version,
                res.regime[row],
                res.proba[row],
                regime,
                res.dwell[row],
                res.next_regime.get(row),
                res.next_proba.get(row),
                res.ood[row],
                self.ood_threshold,
                self.profiles,
                emitted_at=now,
            )
            encoded[j] = encode(doc)
            write.events.append((times[j], encoded[j]))
            observations.append((doc["regime"]["id"], doc["regime"]["confidence"], doc["ood_score"], regime, pred))
            regime = doc["regime"]["id"]
            pred = doc["predicted"]["regime"] if doc["predicted"] else None
        if write is not None:
            write.meta["last_time"] = plan.new[-1].time
            if rows:
                write.meta["regime"] = regime
                write.meta["dwell"] = res.dwell[rows[-1]]
                write.meta["pred"] = "" if pred is None else pred
            elif rebuilding:  # nothing of the old model's state may survive a rebuild
                write.meta.update(regime="", dwell="", pred="")
        rebuilt = self._rebuild_result(plan, rows, js, res) if rebuilding and n_replay >= self.history else None

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
            if rebuilt is not None:
                out.rebuilt.append(rebuilt)
            if encoded:
                last = plan.records[-1]
                self.metrics.set_regime(plan.symbol, regime, (last.topic, last.partition))

        return write, finish

    def _rebuild_result(
        self, plan: _SymbolPlan, rows: list[int], js: list[int], res: _Rows | None
    ) -> tuple[str, str, str]:
        """How far a rebuild equals the whole history's batch reference (docs/worker.md, "State in doubt"); not
        asked when fewer than history bars were stored (no bar had a window: there was nothing to rebuild)."""
        n = len(plan.replay)
        detail = f"{plan.doubt}; {n} stored bars"
        if n < self.rebuild_bars:
            return plan.symbol, "short", detail
        if n >= self.store.keep_bars and rows:
            # bars may have been trimmed: replayed row r decodes as the whole history does once r >= memory - 1;
            # the first event's run must start after such a row for its dwell to be the whole history's
            first = next(i for i, j in enumerate(js) if j >= 0)
            if first - res.dwell[rows[first]] + 1 < self.model.decoder.memory:
                return plan.symbol, "dwell_bound", detail
        return plan.symbol, "exact", detail
