"""The pure steps of one micro-batch: plan, window, infer, build, emit. No broker, no Redis, no metrics.

Each takes plain data (the Serving in force, a symbol's SymbolState as Redis returned it, Bars) and returns a
typed result; worker/pipeline.py does the I/O around them and worker/telemetry.py turns a batch's
BatchReport into metrics and drift updates.

    plan(serving, symbol, [(bar, record)], state) -> SymbolPlan     a BarAction per input bar: new /
                                                                    again / stored / overtaken / reject
    window(serving, plans) -> Windows                               every new bar's window, one feature
                                                                    pass per group of equal runs
    infer(serving, plans, windows) -> Inference | None              encoder, costs, decoder, OOD,
                                                                    forecast: one call each for the batch
    build(serving, plan, windows, i, inference, now, keep_bars)     one symbol's events and its Redis
        -> SymbolResult                                             write
    emit(plan, result, out, dlq_limit)                              once the write held: the symbol's
                                                                    events, re-emissions, dead letters

Live equals batch: each event is what RegimeModel.run_series computes for that bar (docs/worker.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from regimetry.drift_alarms import step_detectors
from regimetry.features import scaled_windows
from regimetry.regimes import dwell
from worker.drift import DriftMonitor
from worker.events import build_alarm, build_event, build_transition, dead_letter, encode
from worker.redis_store import (
    SIDE_DRIFT,
    SIDE_TRANSITION,
    SideRecord,
    StoredWindows,
    SymbolState,
    SymbolWrite,
    pack_bar,
    pack_bars,
    pack_cusum,
    pack_embeddings,
    pack_side,
    unpack_embeddings,
    unpack_side,
)
from worker.serving import Serving
from worker.validate import Bar, Reason


@dataclass(frozen=True)
class Record:
    """One consumed Kafka message, as raw as it arrived (the worker passes Faust's messages, same fields)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None  # producer/broker timestamp, epoch seconds


class Action(Enum):
    """What a batch does with one input bar of a symbol, after comparing it with the symbol's stored state."""

    NEW = "new"  # after the last stored bar: stored; its event sent if its window is full
    AGAIN = "again"  # the same bar twice in this batch: the first copy's event sent again
    STORED = "stored"  # already stored with the same values: its stored event re-emitted byte for byte
    # the record is at or before the one the symbol's stored state ends at: it was processed already (another
    # worker took the partition over while this one was paused, then went past it): a fencing outcome, not
    # bad input, so nothing is sent and nothing is dead-lettered
    OVERTAKEN = "overtaken"
    REJECT = "reject"  # dead-lettered (conflicting duplicate, out of order)


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    reason: Reason
    detail: str


@dataclass(frozen=True)
class BarAction:
    action: Action
    new_index: int = -1  # NEW, AGAIN: index of the bar among the plan's new bars
    stored_event: bytes = b""  # STORED: the event stored for it (empty: its window was not full)
    stored_side: bytes = b""  # STORED: the drift alarms and transition stored with it (pack_side), if any
    dead: DeadLetter | None = None  # REJECT
    restored: bool = False  # a bar read back from the log (worker/log_reader.py): stored, nothing sent


@dataclass(frozen=True)
class SymbolPlan:
    """One symbol's share of a batch after comparing it with Redis."""

    symbol: str
    state: SymbolState
    new: list[Bar]
    records: list[Record]  # record of each new bar
    actions: list[BarAction]  # per input bar, in input order
    prior: StoredWindows | None  # the stored embeddings and costs, when they can be used as they are
    doubt: str | None  # why they cannot (then the symbol is rebuilt from its stored bars)
    replay_times: np.ndarray | None = None  # rebuild: every stored bar, replayed through the model in force
    replay: np.ndarray | None = None  # (n, 5) their values
    restored_new: int = 0  # the first new bars are read back from the log: stored, their events not sent
    reset: SymbolState | None = None  # the stored state this plan replaces whole (`state` is then empty)

    @property
    def rebuilding(self) -> bool:
        return self.replay is not None

    def with_replay(self, times: np.ndarray, values: np.ndarray) -> SymbolPlan:
        return replace(self, replay_times=times, replay=values)


@dataclass(frozen=True)
class Windows:
    """The batch's windowed bars ("rows"), symbol-major."""

    windows: np.ndarray  # (N, W, F) scaled feature windows
    rows: dict[int, list[int]]  # plan index -> its rows
    bar_index: list[int]  # row -> index of its new bar in the plan (negative: a stored bar replayed)
    values: dict[int, np.ndarray]  # plan index -> its new bars, (n, 5) float64


@dataclass(frozen=True)
class Inference:
    """Per row of Windows, as plain Python values for building events one bar at a time."""

    regime: list[int]
    proba: list[list[float]]
    ood: list[float]
    dwell: list[int]
    next_regime: dict[int, int]  # row -> predicted regime (rows with a forecast)
    next_proba: dict[int, list[float]]
    z: np.ndarray  # (N, D) embeddings, float32
    costs: np.ndarray  # (N, K) costs, float64


class RebuildResult(Enum):
    """How far a rebuild equals the whole history's batch reference (docs/worker.md, "State in doubt")."""

    EXACT = "exact"
    SHORT = "short"
    DWELL_BOUND = "dwell_bound"


@dataclass(frozen=True)
class Rebuild:
    symbol: str
    result: RebuildResult
    detail: str


@dataclass(frozen=True)
class Observation:
    """One event as drift sees it (DriftMonitor.observe)."""

    regime: int
    confidence: float
    ood_score: float
    previous: int | None  # the symbol's regime at its prior bar
    previous_prediction: int | None  # and its forecast then


@dataclass(frozen=True)
class SymbolResult:
    write: SymbolWrite | None  # None: no new bar
    events: dict[int, bytes]  # new-bar index -> encoded event
    observations: list[Observation]
    side: dict[int, list[SideRecord]]  # new-bar index -> the drift alarms and transition its event raised
    last_regime: int | None  # regime after the symbol's last event (None: no event)
    warming: int  # new bars stored without an event (window not full)
    rebuilt: Rebuild | None


@dataclass
class BatchReport:
    """Everything telemetry needs of one batch (worker/telemetry.py), gathered as data while it runs."""

    model_version: str
    drift: DriftMonitor  # of the model that computed the batch (a hot reload may switch before it is sent)
    rebuild_bars: int  # stored bars an exact rebuild needs, for the rebuild log line
    bars: int = 0
    inference_seconds: float = 0.0
    inferred: bool = False  # some bar went through the model
    conflicts: int = 0  # symbol writes lost to another worker (re-read and redone)
    cached: set[str] = field(default_factory=set)  # symbols planned on this worker's cached state (no read)
    cache_stale: int = 0  # of those, writes refused because Redis had moved under the cache (re-read, redone)
    states_lost: int = 0  # symbols whose stored state vanished or went back
    log_reads: int = 0  # reads of the bars topic for bars missing from Redis (worker/log_reader.py)
    resets: int = 0  # symbols started again from nothing: the log no longer held their missing bars
    started: int = 0  # symbols whose new bars found nothing stored (new, expired, or lost)
    observations: list[Observation] = field(default_factory=list)
    regimes: list[tuple[str, int, tuple[str, int]]] = field(default_factory=list)  # (symbol, regime, partition)
    rebuilt: list[Rebuild] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)  # detector of each drift alarm sent (re-emissions included)


@dataclass
class Outgoing:
    """What a batch sends: events (key, value) in bar order per symbol, the drift alarms and regime
    transitions those events raised (same keys, same order), and dead letters; and its report."""

    report: BatchReport
    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    drift: list[tuple[bytes, bytes]] = field(default_factory=list)
    transitions: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead: list[tuple[bytes | None, bytes, str]] = field(default_factory=list)  # (key, value, reason)
    new_event_timestamps: list[float] = field(default_factory=list)
    reemitted: int = 0
    duplicates: int = 0
    warming: int = 0  # new bars stored without an event: the symbol's window is not full yet
    restored: int = 0  # bars read back from the log into Redis (their events were sent when they first came)
    overtaken: int = 0  # records the symbol's stored state is already past (a fencing outcome, nothing sent)

    def messages(
        self,
        events_topic: str,
        dlq_topic: str,
        drift_topic: str = "regime-drift",
        transitions_topic: str = "regime-transitions",
    ) -> list[tuple[str, bytes | None, bytes]]:
        """(topic, key, value) of everything the batch sends: its events in order, their drift alarms and
        transitions in order, then its dead letters (all in one delivery, before any offset commits)."""
        return (
            [(events_topic, k, v) for k, v in self.events]
            + [(drift_topic, k, v) for k, v in self.drift]
            + [(transitions_topic, k, v) for k, v in self.transitions]
            + [(dlq_topic, k, v) for k, v, _ in self.dead]
        )

    def side(self, key: bytes, records: list[SideRecord]) -> None:
        """A bar's drift alarms and transition, sent after its event (new or re-emitted, byte for byte)."""
        for r in records:
            if r.kind == SIDE_DRIFT:
                self.drift.append((key, r.value))
                self.report.alarms.append(r.detector)
            else:
                self.transitions.append((key, r.value))

    def dead_letter(self, dead: DeadLetter, limit: int) -> None:
        rec = dead.record
        value = dead_letter(
            dead.reason.value, dead.detail, rec.value, rec.key, rec.topic, rec.partition, rec.offset, limit
        )
        self.dead.append((rec.key, value, dead.reason.value))


# -- plan: sort a symbol's bars against its stored state ---------------------------------------------------
def plan(
    serving: Serving,
    symbol: str,
    items: list[tuple[Bar, Record]],
    st: SymbolState,
    restored: int = 0,
    reset: bool = False,
    future_limit: float | None = None,
) -> SymbolPlan:
    """A BarAction per item. The first `restored` items are bars read back from the log to fill a gap in the
    stored state (worker/pipeline.py): planned like any other, marked so that nothing is sent for them.
    `reset`: the stored state cannot be continued (the log no longer holds its gap): plan from nothing, and
    the write replaces everything stored. `future_limit` (see future_limit()): a later bar is dead-lettered
    as time_in_future instead of holding the symbol's real bars back."""
    replaced = None
    if reset:
        replaced, st = st, empty_state()
    new: list[Bar] = []
    records: list[Record] = []
    actions: list[BarAction] = []
    last = st.last_time
    in_batch: dict[int, int] = {}  # bar time -> index among new
    for bar, rec in items:
        if future_limit is not None and bar.time > future_limit:
            why = f"bar time {bar.time} is past {future_limit:.0f}, the worker clock plus its bar spacing allowance"
            actions.append(_reject(rec, Reason.TIME_IN_FUTURE, why))
        elif last is None or bar.time > last:
            in_batch[bar.time] = len(new)
            actions.append(BarAction(Action.NEW, new_index=len(new)))
            new.append(bar)
            records.append(rec)
            last = bar.time
        elif bar.time in in_batch:
            if new[in_batch[bar.time]].values() == bar.values():
                actions.append(BarAction(Action.AGAIN, new_index=in_batch[bar.time]))
            else:
                why = f"bar {bar.time} already in this batch with other values"
                actions.append(_reject(rec, Reason.CONFLICTING_DUPLICATE, why))
        else:
            stored_bar, stored_event = st.lookups.get(bar.time, (b"", b""))
            if stored_bar == pack_bar(bar.time, bar.values()):
                side = st.side.get(bar.time, b"")
                actions.append(BarAction(Action.STORED, stored_event=stored_event, stored_side=side))
            elif st.partition == rec.partition and st.offset is not None and rec.offset <= st.offset:
                actions.append(BarAction(Action.OVERTAKEN))
            elif stored_bar:
                why = f"bar {bar.time} already stored with other values"
                actions.append(_reject(rec, Reason.CONFLICTING_DUPLICATE, why))
            else:
                window = (
                    f" (the dedupe window starts at {st.oldest_time})"
                    if st.oldest_time is not None and bar.time < st.oldest_time
                    else ""
                )
                why = f"bar time {bar.time} <= last bar time {st.last_time}{window}"
                actions.append(_reject(rec, Reason.OUT_OF_ORDER, why))
    actions[:restored] = [replace(a, restored=True) for a in actions[:restored]]
    restored_new = sum(a.action is Action.NEW for a in actions[:restored])
    prior, doubt = stored_windows(serving, st) if new else (None, None)
    return SymbolPlan(symbol, st, new, records, actions, prior, doubt, restored_new=restored_new, reset=replaced)


def future_limit(st: SymbolState, now: float, bars_ahead: float, latest: float | None = None) -> float | None:
    """The latest bar time the symbol may take now: `bars_ahead` of its bar spacing (the median gap of its
    stored bars) past the clock; None when it has fewer than two stored bars or the check is off (0). Why: a
    bar stamped 12 h ahead of an hourly feed was accepted and then held back every real bar of its symbol.
    `latest`, the batch's latest bar time for the symbol: None too when it is not past the clock, since no bar
    can then be past a limit later still (the median costs ~0.1 ms a symbol, and live bars are in the past)."""
    if bars_ahead <= 0 or st.bar_times is None or len(st.bar_times) < 2 or (latest is not None and latest <= now):
        return None
    gaps = np.diff(st.bar_times)
    gaps = gaps[gaps > 0]
    return now + bars_ahead * float(np.median(gaps)) if len(gaps) else None


def empty_state() -> SymbolState:
    """A symbol with nothing stored."""
    return SymbolState(None, None, None, None, np.zeros((0, 5)), b"", None, {})


def _reject(rec: Record, reason: Reason, detail: str) -> BarAction:
    return BarAction(Action.REJECT, dead=DeadLetter(rec, reason, detail))


def nothing_stored(serving: Serving) -> StoredWindows:
    return StoredWindows(
        np.zeros(0, np.int64), np.zeros((0, serving.dim), np.float32), np.zeros((0, serving.n_clusters))
    )


def stored_windows(serving: Serving, st: SymbolState) -> tuple[StoredWindows | None, str | None]:
    """The symbol's stored embeddings and costs if they are exactly what the model in force left after its
    last bar, else why not (the symbol is then rebuilt). A symbol with no last bar has nothing stored."""
    if st.last_time is None:
        return nothing_stored(serving), None
    if st.model_version != serving.version:
        return None, f"state of model {st.model_version}"
    stored = unpack_embeddings(st.emb, serving.dim, serving.n_clusters)
    if stored is None:
        return None, "embeddings/costs stored in another layout"
    due = min(max(st.n_bars - serving.history + 1, 0), serving.keep_emb)  # one per stored bar with a window
    if len(stored.times) != due:
        return None, f"{len(stored.times)} embeddings/costs stored where {st.n_bars} bars make {due}"
    if due and (stored.times[-1] != st.last_time or bool((np.diff(stored.times) <= 0).any())):
        return None, "stored embeddings/costs do not end at the last bar"
    if due and (st.regime is None or st.dwell is None):
        return None, "last regime or its dwell missing"
    if not due and st.regime is not None:
        return None, "a last regime stored without a window"
    return stored, None


# -- window: every new bar with a full history, one feature pass per group ----------------------------------
def window(serving: Serving, plans: list[SymbolPlan]) -> Windows:
    """Each symbol's run of new bars with a full history, grouped by length: one feature pass per group. A
    symbol being rebuilt replays every stored bar from its first full window on (bar_index < 0)."""
    h = serving.history
    groups: dict[int, list[tuple[int, np.ndarray, int]]] = {}
    values: dict[int, np.ndarray] = {}
    for pi, p in enumerate(plans):
        if not p.new:
            continue
        values[pi] = np.asarray([b.values() for b in p.new], dtype=np.float64)
        if p.replay is not None:
            stored, first = p.replay, h - 1
        else:
            stored = p.state.bars[-(h - 1) :] if h > 1 else p.state.bars[:0]
            first = max(len(stored), h - 1)  # first combined index with a full history
        combined = np.concatenate([stored, values[pi]])
        if first < len(combined):
            groups.setdefault(len(combined) - first, []).append((pi, combined[first + 1 - h :], first - len(stored)))
    blocks, owners = [], []  # owners: (plan, index of its new bar) per row
    for n, members in groups.items():
        blocks.append(_run_windows(serving, np.stack([seg for _, seg, _ in members])))
        owners += [(pi, j0 + k) for pi, _, j0 in members for k in range(n)]
    rows: dict[int, list[int]] = {}
    for row, (pi, _) in enumerate(owners):
        rows.setdefault(pi, []).append(row)
    b = serving.model.bundle
    wins = np.concatenate(blocks) if blocks else np.zeros((0, b.window_size, b.spec.n_features), np.float32)
    return Windows(wins, rows, [j for _, j in owners], values)


def _run_windows(serving: Serving, runs: np.ndarray) -> np.ndarray:
    """(G, T, 5) runs of bars of G symbols -> (G * (T - history + 1), W, F) windows, symbol-major.

    One feature pass covers every window of every run: consecutive bars share all but one feature row, and
    features have a finite lookback, so this equals RegimeModel.windows on each bar's own history. Batching
    symbols matters as much as batching bars: compute_features costs ~0.3 ms per call whatever its size,
    which would dominate a batch of one bar for each of many symbols."""
    b = serving.model.bundle
    wins = scaled_windows(runs, b.spec, b.scaler, b.window_size)  # (G, n, W, F)
    return wins.reshape(-1, *wins.shape[-2:])


# -- infer: the model over every row of the batch -----------------------------------------------------------
def infer(serving: Serving, plans: list[SymbolPlan], win: Windows) -> Inference | None:
    """Encoder, regime geometry and costs, decoder, OOD and forecast for every row of the batch: each step
    is one call over all symbols' rows (the decoder on the stacked (N, memory, K) cost windows). None when no
    bar of the batch has a full window."""
    if not win.rows:
        return None
    m, dec = serving.model, serving.model.decoder
    wins, rows_of = win.windows, win.rows
    z = m.embed(wins)
    g = m.geometry(wins, z)
    costs = m.costs(g)
    ood = m.ood(g)
    empty = nothing_stored(serving)
    prior = {pi: (empty if plans[pi].rebuilding else plans[pi].prior or empty) for pi in rows_of}
    order = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows_of.values()])
    w = np.empty_like(costs)
    # the decoder: each row's last `memory` costs, from Redis then from this batch, in one call over the
    # symbols' cost sequences laid end to end (row j of a symbol's sequence starts its j-th new bar's window)
    seqs = [dec.sequence(prior[pi].costs, costs[r]) for pi, r in rows_of.items()]
    offsets = np.cumsum([0] + [len(q) for q in seqs[:-1]])
    starts = np.concatenate([o + np.arange(len(r)) for o, r in zip(offsets, rows_of.values())])
    w[order] = dec.values_at(np.concatenate(seqs), starts)
    regime = w.argmin(1)
    dwell_rows = np.empty(len(regime), dtype=np.int64)
    for pi, r in rows_of.items():  # continued from the stored last regime and its dwell
        st = plans[pi].state
        start = (None, 0) if plans[pi].rebuilding else (st.regime, st.dwell or 0)
        dwell_rows[r] = dwell(regime[r], *start)

    # forecaster input: last L embeddings spaced by stride, from Redis then from this batch; only bars with
    # an event (a rebuild's replayed bars need none)
    fc_hist, fc_rows = [], []
    lags = serving.stride * np.arange(serving.span // serving.stride, -1, -1)  # oldest first, ending at the bar
    for pi, r in rows_of.items():
        replay = plans[pi].replay
        n_replayed = max(len(replay) - serving.history + 1, 0) if replay is not None else 0
        seq = np.concatenate([prior[pi].z, z[r]])
        q = len(prior[pi].z) + np.arange(len(r))  # each row's index in seq
        ok = q >= max(serving.span, n_replayed)  # L embeddings behind it, and an event
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
    return Inference(
        regime.tolist(), dec.proba(w).tolist(), ood.tolist(), dwell_rows.tolist(), next_regime, next_proba, z, costs
    )


# -- build: one symbol's events and Redis write ------------------------------------------------------------
def build(
    serving: Serving, plan: SymbolPlan, win: Windows, pi: int, inf: Inference | None, now: float, keep_bars: int
) -> SymbolResult:
    """Events of plan `pi` (emitted_at = `now`) and its Redis write: bars, embeddings with costs, encoded
    events, last regime, dwell and forecast. `keep_bars`: bars Redis keeps per symbol (for the rebuild
    result)."""
    st = plan.state
    rows = win.rows.get(pi, [])
    js = [win.bar_index[r] for r in rows]  # each row's new bar (negative: a stored bar replayed)
    times = [bar.time for bar in plan.new]
    warming = len(times) - sum(j >= 0 for j in js)
    if not plan.new:
        return SymbolResult(None, {}, [], {}, None, 0, None)
    expected = (plan.reset or st).last_time
    write = SymbolWrite(plan.symbol, expected, reset_emb=plan.rebuilding, reset_all=plan.reset is not None)
    write.bars = list(zip(times, pack_bars(times, win.values[pi])))
    regime, pred = (None, None) if plan.rebuilding else (st.regime, st.pred)
    prev_dwell = None if plan.rebuilding else st.dwell  # bars in `regime` at the prior bar
    cusum = drift_state(serving, st)
    events: dict[int, bytes] = {}
    side: dict[int, list[SideRecord]] = {}
    observations: list[Observation] = []
    if rows:
        assert inf is not None, "rows come with an inference"
        replay_times = plan.replay_times if plan.replay_times is not None else np.zeros(0, np.int64)
        keep = slice(-serving.keep_emb, None)
        emb_times = [times[j] if j >= 0 else int(replay_times[len(replay_times) + j]) for j in js[keep]]
        write.emb = list(zip(emb_times, pack_embeddings(emb_times, inf.z[rows[keep]], inf.costs[rows[keep]])))
        for row, j in zip(rows, js):
            if j < 0:  # a replayed bar: state only, its event (if any) was sent long ago
                regime, prev_dwell = inf.regime[row], inf.dwell[row]
                continue
            doc = build_event(
                plan.symbol,
                times[j],
                serving.version,
                inf.regime[row],
                inf.proba[row],
                regime,
                inf.dwell[row],
                inf.next_regime.get(row),
                inf.next_proba.get(row),
                inf.ood[row],
                serving.ood_threshold,
                serving.profiles,
                emitted_at=now,
            )
            events[j] = encode(doc)
            write.events.append((times[j], events[j]))
            if j >= plan.restored_new:  # a restored bar was observed when it first came
                observations.append(
                    Observation(doc["regime"]["id"], doc["regime"]["confidence"], doc["ood_score"], regime, pred)
                )
            records = []
            if doc["regime_changed"]:
                transition = build_transition(doc, prev_dwell, serving.profiles)
                records.append(SideRecord(SIDE_TRANSITION, "", encode(transition)))
            if serving.detectors:
                cusum, alarms = step_detectors(serving.detectors, cusum, drift_values(doc, pred))
                records += [SideRecord(SIDE_DRIFT, a["detector"], encode(build_alarm(doc, a))) for a in alarms]
            if records:
                side[j] = records
                write.side.append((times[j], pack_side(records)))
            regime, prev_dwell = doc["regime"]["id"], doc["bars_in_regime"]
            pred = doc["predicted"]["regime"] if doc["predicted"] else None
        assert regime is not None
        write.meta.update(regime=regime, dwell=inf.dwell[rows[-1]], pred="" if pred is None else pred)
        if serving.detectors:
            write.meta["cusum"] = pack_cusum(serving.version, cusum)
    elif plan.rebuilding:  # nothing of the old model's state may survive a rebuild
        write.meta.update(regime="", dwell="", pred="")
    last = plan.records[-1]
    write.meta.update(last_time=plan.new[-1].time, partition=last.partition, offset=last.offset)
    rebuilt = None
    if plan.replay is not None and len(plan.replay) >= serving.history:
        rebuilt = rebuild_result(serving, plan, rows, js, inf, keep_bars)
    return SymbolResult(write, events, observations, side, regime if events else None, warming, rebuilt)


def drift_state(serving: Serving, st: SymbolState) -> dict[str, float]:
    """The symbol's drift detector statistics before this batch: as the model in force stored them after the
    symbol's last event, else zero (a new symbol, state lost, stored by another model: its detectors start
    over, as the events of a new model version start a new series for drift-report)."""
    if st.cusum is None or st.cusum[0] != serving.version:
        return {}
    return dict(st.cusum[1])


def drift_values(doc: dict, previous_prediction: int | None) -> dict[str, float]:
    """An event's value of each drift stream, as regimetry.drift_alarms.streams_of computes them from the
    events: its OOD score, 1 - its confidence, and whether the forecast made at the prior bar missed (NaN
    without one)."""
    regime = doc["regime"]["id"]
    miss = float("nan") if previous_prediction is None else float(previous_prediction != regime)
    return {"ood": doc["ood_score"], "uncertainty": 1.0 - doc["regime"]["confidence"], "miss": miss}


def rebuild_result(
    serving: Serving, plan: SymbolPlan, rows: list[int], js: list[int], inf: Inference | None, keep_bars: int
) -> Rebuild:
    """How far a rebuild equals the whole history's batch reference (docs/worker.md, "State in doubt"); not
    asked when fewer than history bars were stored (no bar had a window: there was nothing to rebuild)."""
    n = len(plan.replay) if plan.replay is not None else 0
    detail = f"{plan.doubt}; {n} stored bars"
    if n < serving.rebuild_bars:
        return Rebuild(plan.symbol, RebuildResult.SHORT, detail)
    if n >= keep_bars and rows and inf is not None:
        # bars may have been trimmed: replayed row r decodes as the whole history does once r >= memory - 1;
        # the first event's run must start after such a row for its dwell to be the whole history's
        first = next(i for i, j in enumerate(js) if j >= 0)
        if first - inf.dwell[rows[first]] + 1 < serving.memory:
            return Rebuild(plan.symbol, RebuildResult.DWELL_BOUND, detail)
    return Rebuild(plan.symbol, RebuildResult.EXACT, detail)


# -- emit: once the symbol's write held --------------------------------------------------------------------
def emit(plan: SymbolPlan, result: SymbolResult, out: Outgoing, dlq_limit: int) -> None:
    """The symbol's share of what the batch sends, in input order, and of its report."""
    key = plan.symbol.encode()
    out.warming += result.warming
    for a in plan.actions:
        if a.restored:
            out.restored += a.action is Action.NEW
        elif a.action is Action.NEW:
            if a.new_index in result.events:
                out.events.append((key, result.events[a.new_index]))
                out.side(key, result.side.get(a.new_index, []))
                ts = plan.records[a.new_index].timestamp
                if ts is not None:
                    out.new_event_timestamps.append(ts)
        elif a.action is Action.AGAIN:
            out.duplicates += 1
            if a.new_index in result.events:
                out.events.append((key, result.events[a.new_index]))
                out.side(key, result.side.get(a.new_index, []))
                out.reemitted += 1
        elif a.action is Action.OVERTAKEN:
            out.overtaken += 1
        elif a.action is Action.STORED:
            out.duplicates += 1
            if a.stored_event:
                out.events.append((key, a.stored_event))
                out.side(key, unpack_side(a.stored_side))
                out.reemitted += 1
        elif a.dead is not None:
            out.dead_letter(a.dead, dlq_limit)
    report = out.report
    report.started += plan.new != [] and plan.state.last_time is None and plan.reset is None
    report.observations += result.observations
    if result.rebuilt is not None:
        report.rebuilt.append(result.rebuilt)
    if result.last_regime is not None:
        last = plan.records[-1]
        report.regimes.append((plan.symbol, result.last_regime, (last.topic, last.partition)))
