"""The pure steps of a batch (worker/steps.py) with no broker and no Redis: a fake SymbolState stands in for
what Redis would return, the tiny bundle for the model.

plan sorts bars into typed actions; window/infer/build give the batch reference's events; a second batch
built on the state the first batch's write describes continues the series exactly (live equals batch).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import schema_validator

from regimetry.synthetic import generate_bars
from worker import steps
from worker.redis_store import SymbolState, pack_bar, unpack_bars, unpack_cusum
from worker.serving import load_serving
from worker.settings import load_settings
from worker.steps import Action, BarAction, Outgoing, Record
from worker.validate import Bar, Reason


@pytest.fixture(scope="module")
def serving(tiny_bundle):
    return load_serving(tiny_bundle, load_settings({}, bundle=str(tiny_bundle)))


def bars_of(symbol: str, n: int, seed: int) -> list[Bar]:
    b = generate_bars(n_bars=n, seed=seed, symbol=symbol).bars
    return [Bar(symbol, int(t), *map(float, row)) for t, row in zip(b.times.tolist(), b.values.tolist())]


def items(bars: list[Bar], offset: int = 0) -> list[tuple[Bar, Record]]:
    return [(bar, Record(bar.symbol.encode(), b"{}", "bars", 0, offset + i, 1.0)) for i, bar in enumerate(bars)]


class FakeRedis:
    """The state one symbol's writes leave, as the read script would return it (no trimming needed here)."""

    def __init__(self) -> None:
        self.bars: dict[int, bytes] = {}
        self.emb: dict[int, bytes] = {}
        self.events: dict[int, bytes] = {}
        self.side: dict[int, bytes] = {}
        self.meta: dict = {}

    def apply(self, write, keep_emb: int) -> None:
        if write.reset_emb:
            self.emb.clear()
        self.bars.update(write.bars)
        self.emb.update(write.emb)
        self.events.update(write.events)
        self.side.update(write.side)
        for t in sorted(self.emb)[:-keep_emb]:
            del self.emb[t]
        self.meta.update(write.meta)

    def state(self, serving, candidates: list[int]) -> SymbolState:
        times = sorted(self.bars)
        _, values = unpack_bars(b"".join(self.bars[t] for t in times[-(serving.history - 1) :]))

        def opt(name):
            v = self.meta.get(name, "")
            return None if v == "" else int(v)

        last = opt("last_time")
        return SymbolState(
            last_time=last,
            regime=opt("regime"),
            pred=opt("pred"),
            model_version=serving.version if self.meta else None,
            bars=values,
            emb=b"".join(self.emb[t] for t in sorted(self.emb)),
            oldest_time=times[0] if times else None,
            lookups={t: (self.bars.get(t, b""), self.events.get(t, b"")) for t in candidates if last and t <= last},
            dwell=opt("dwell"),
            n_bars=len(times),
            bar_times=np.asarray(times[-(serving.history - 1) :], dtype=np.int64),
            partition=opt("partition"),
            offset=opt("offset"),
            side={t: self.side[t] for t in candidates if last and t <= last and t in self.side},
            cusum=unpack_cusum(self.meta.get("cusum")),
        )


def run_batch(serving, redis: FakeRedis, batch: list[tuple[Bar, Record]]) -> Outgoing:
    """plan -> window -> infer -> build -> emit for one symbol, its write applied to the fake Redis."""
    symbol = batch[0][0].symbol
    plan = steps.plan(serving, symbol, batch, redis.state(serving, [bar.time for bar, _ in batch]))
    win = steps.window(serving, [plan])
    inf = steps.infer(serving, [plan], win)
    result = steps.build(serving, plan, win, 0, inf, now=123.0, keep_bars=10_000)
    if result.write is not None:
        redis.apply(result.write, serving.keep_emb)
    out = Outgoing(steps.BatchReport(serving.version, serving.drift, serving.rebuild_bars))
    steps.emit(plan, result, out, dlq_limit=512)
    return out


def test_plan_sorts_every_bar_into_a_typed_action(serving):
    bars = bars_of("PL", 8, seed=1)
    stored = {bars[2].time: (pack_bar(bars[2].time, bars[2].values()), b"stored-event-2")}
    other = bars[3]._replace(close=bars[3].close * 1.01)
    stored[other.time] = (pack_bar(other.time, other.values()), b"e3")
    state = SymbolState(
        bars[4].time, None, None, serving.version, np.zeros((0, 5)), b"", bars[1].time, stored, n_bars=3
    )
    late = bars[0]  # before the oldest stored bar, not stored: out of order
    batch = [bars[2], bars[3], late, bars[5], bars[5], bars[6], bars[6]._replace(volume=bars[6].volume + 1)]
    plan = steps.plan(serving, "PL", items(batch), state)

    assert [a.action for a in plan.actions] == [
        Action.STORED,
        Action.REJECT,
        Action.REJECT,
        Action.NEW,
        Action.AGAIN,
        Action.NEW,
        Action.REJECT,
    ]
    assert plan.actions[0] == BarAction(Action.STORED, stored_event=b"stored-event-2")
    assert [a.dead.reason for a in plan.actions if a.dead] == [
        Reason.CONFLICTING_DUPLICATE,
        Reason.OUT_OF_ORDER,
        Reason.CONFLICTING_DUPLICATE,
    ]
    assert "dedupe window" in plan.actions[2].dead.detail
    assert plan.actions[4].new_index == 0 and [b.time for b in plan.new] == [bars[5].time, bars[6].time]
    assert plan.doubt is None and plan.prior is not None and not plan.rebuilding


def test_plan_doubts_another_models_state(serving):
    bars = bars_of("PD", 3, seed=2)
    state = SymbolState(bars[0].time, None, None, "other-model", np.zeros((0, 5)), b"", bars[0].time, {}, n_bars=1)
    plan = steps.plan(serving, "PD", items(bars[1:]), state)
    assert plan.prior is None and plan.doubt == "state of model other-model"


def test_infer_and_build_give_the_batch_reference_and_a_second_batch_continues_it(serving):
    h = serving.history
    bars = bars_of("BR", h + 40, seed=3)
    redis = FakeRedis()
    first = run_batch(serving, redis, items(bars[: h + 10]))
    second = run_batch(serving, redis, items(bars[h + 10 :], h + 10))
    again = run_batch(serving, redis, items(bars[-3:]))  # a redelivery: the stored events, byte for byte

    events = [json.loads(v) for _, v in first.events + second.events]
    ref = serving.model.run_series(np.asarray([b.values() for b in bars]))
    assert [e["bar_time"] for e in events] == [b.time for b in bars[ref.offset :]]
    np.testing.assert_array_equal([e["regime"]["id"] for e in events], ref.regime)
    np.testing.assert_array_equal([e["bars_in_regime"] for e in events], ref.dwell)
    np.testing.assert_allclose([e["regime"]["probabilities"] for e in events], ref.proba, atol=1e-5)
    np.testing.assert_array_equal([e["predicted"]["regime"] if e["predicted"] else -1 for e in events], ref.next_regime)
    assert first.warming == h - 1 and second.warming == 0
    assert len(first.report.observations) == 11 and first.report.regimes[-1][:2] == ("BR", events[10]["regime"]["id"])
    assert again.events == second.events[-3:] and again.duplicates == 3 and again.reemitted == 3


def test_a_batch_without_full_windows_infers_nothing(serving):
    bars = bars_of("SH", 5, seed=4)
    plan = steps.plan(serving, "SH", items(bars), steps.empty_state())
    win = steps.window(serving, [plan])
    assert steps.infer(serving, [plan], win) is None
    result = steps.build(serving, plan, win, 0, None, now=1.0, keep_bars=10_000)
    assert result.events == {} and result.warming == 5 and result.write is not None
    assert (
        result.write.meta == {"last_time": bars[-1].time, "partition": 0, "offset": 4} and len(result.write.bars) == 5
    )


def test_records_the_stored_state_is_past_are_overtaken_not_dead_letters(serving):
    """A worker paused past its session resumes with records another worker processed meanwhile and went far
    beyond (its bars trimmed from the dedupe window): they are a fencing outcome, not out of order."""
    bars = bars_of("FN", 40, seed=8)
    redis = FakeRedis()
    run_batch(serving, redis, items(bars[:30]))  # offsets 0..29 processed (by "the other worker")
    for t in [b.time for b in bars[:20]]:  # trimmed: no longer in the dedupe window
        del redis.bars[t]
        redis.events.pop(t, None)
    assert (redis.meta["partition"], redis.meta["offset"]) == (0, 29)
    stale = run_batch(serving, redis, items(bars[5:12], offset=5))  # the paused worker's batch, same offsets
    assert stale.dead == [] and stale.events == [] and stale.overtaken == 7
    late = run_batch(serving, redis, items(bars[5:7], offset=40))  # the same bars later in the log: bad input
    assert [reason for _, _, reason in late.dead] == ["out_of_order", "out_of_order"] and late.overtaken == 0


def test_restored_bars_are_stored_but_send_nothing(serving):
    """Bars read back from the log after Redis came back older (worker/pipeline.py) go through the same steps
    as new ones: their events are computed and stored, never sent, never observed twice."""
    h = serving.history
    bars = bars_of("RS", h + 20, seed=9)
    straight, redis = FakeRedis(), FakeRedis()
    run_batch(serving, straight, items(bars))
    run_batch(serving, redis, items(bars[: h + 5]))
    symbol_items = items(bars[h + 5 :], offset=h + 5)
    restored = 10  # the first ten are "read back"
    plan = steps.plan(serving, "RS", symbol_items, redis.state(serving, []), restored=restored)
    win = steps.window(serving, [plan])
    result = steps.build(serving, plan, win, 0, steps.infer(serving, [plan], win), now=123.0, keep_bars=10_000)
    out = Outgoing(steps.BatchReport(serving.version, serving.drift, serving.rebuild_bars))
    steps.emit(plan, result, out, dlq_limit=512)
    assert plan.restored_new == restored and out.restored == restored
    assert len(out.events) == len(symbol_items) - restored and len(result.observations) == len(out.events)
    sent = [json.loads(v) for _, v in out.events]
    assert [e["bar_time"] for e in sent] == [b.time for b in bars[h + 5 + restored :]]
    assert result.write is not None and len(result.write.events) == len(symbol_items)  # all stored
    same = {k: straight.events[k] for k, _ in result.write.events}
    for (t, _), doc in zip(result.write.events[restored:], sent):
        assert json.loads(same[t])["regime"] == doc["regime"]  # as if Redis had never lost them


def test_a_bar_far_ahead_of_its_spacing_is_dead_lettered_and_holds_nothing_back(serving):
    """Issue 14, defect 6: a bar stamped 12 h ahead of an hourly feed used to be accepted (24 h tolerance) and
    then every real bar of its symbol was dead-lettered as out of order until the clock caught up."""
    bars = bars_of("FU", 30, seed=10)
    spacing = bars[1].time - bars[0].time
    redis = FakeRedis()
    run_batch(serving, redis, items(bars[:20]))
    st = redis.state(serving, [])
    now = bars[21].time  # the clock: at the latest real bar
    ahead = bars[20]._replace(time=bars[19].time + 12 * spacing)
    batch = items([ahead, bars[20], bars[21]], offset=20)
    limit = steps.future_limit(st, now, 1.0)
    assert limit == now + spacing
    fixed = steps.plan(serving, "FU", batch, st, future_limit=limit)
    assert [a.action for a in fixed.actions] == [Action.REJECT, Action.NEW, Action.NEW]
    assert fixed.actions[0].dead is not None and fixed.actions[0].dead.reason is Reason.TIME_IN_FUTURE
    before = steps.plan(serving, "FU", batch, st)  # without the check: the real bars are held back
    assert [a.action for a in before.actions] == [Action.NEW, Action.REJECT, Action.REJECT]
    assert steps.future_limit(st, now, 0.0) is None and steps.future_limit(steps.empty_state(), now, 1.0) is None
    # a batch whose latest bar is not past the clock needs no limit (none of its bars can be past it) ...
    assert steps.future_limit(st, now, 1.0, latest=bars[21].time) is None
    # ... and one with a bar past the clock gets the limit
    assert steps.future_limit(st, now, 1.0, latest=ahead.time) == limit


def test_live_drift_alarms_equal_drift_report_and_transitions_follow_the_regime_changes(serving):
    """The worker's per-symbol detectors, fed the series in batches of varied sizes (their statistics carried
    between batches in the symbol's stored state), raise exactly the alarms drift-report computes offline
    from the same events (ops.drift_report.detect, which runs run_detectors): same events, detectors,
    statistics, values. Every regime change gets one transition record and nothing else does; a redelivered
    batch re-emits both byte for byte."""
    from dataclasses import replace

    from ops.drift_report import by_symbol, detect

    calibrated = serving.detectors
    assert set(calibrated) == {"ood", "uncertainty", "miss"}, "the tiny bundle is trained with drift alarms"
    # thresholds low enough that a few hundred in-distribution events raise alarms of every detector
    low = {k: replace(d, threshold=1.0) for k, d in calibrated.items()}
    sv = replace(serving, detectors=low)
    h = sv.history
    bars = bars_of("DA", h + 400, seed=5)
    redis = FakeRedis()
    outs, at = [], 0
    for n in [h + 3, 1, 7, 60, 2, 130, 5, 1000]:
        if at >= len(bars):
            break
        outs.append(run_batch(sv, redis, items(bars[at : at + n], at)))
        at += n
    again = run_batch(sv, redis, items(bars[h + 20 : h + 90], h + 20))  # a redelivery of stored bars

    events = [json.loads(v) for o in outs for _, v in o.events]
    live = [json.loads(v) for o in outs for _, v in o.drift]
    manifest = {**sv.model.bundle.manifest, "drift_alarms": {"detectors": [d.to_dict() for d in low.values()]}}
    symbols, _ = by_symbol(events, sv.version)
    offline = detect(symbols, manifest)
    key = ("event_id", "detector", "stream", "statistic", "value", "threshold", "bar_time", "symbol", "model_version")
    assert {a["detector"] for a in offline} == {"cusum_ood", "cusum_uncertainty", "cusum_miss"}
    assert [tuple(a[k] for k in key) for a in live] == [tuple(a[k] for k in key) for a in offline]
    assert [o.report.alarms for o in outs] == [
        [a["detector"] for _, v in o.drift for a in [json.loads(v)]] for o in outs
    ]
    validate = schema_validator("drift_alarm.schema.json")
    for a in live:
        validate.validate(a)

    transitions = [json.loads(v) for o in outs for _, v in o.transitions]
    changes = [(prev, e) for prev, e in zip(events, events[1:]) if e["regime_changed"]]
    assert changes and not events[0]["regime_changed"], "the series should switch regimes"
    assert [t["event_id"] for t in transitions] == [e["event_id"] for _, e in changes]
    for t, (prev, e) in zip(transitions, changes):
        assert (
            (t["from"]["id"], t["to"]["id"])
            == (prev["regime"]["id"], e["regime"]["id"])
            == (
                e["previous_regime"],
                e["regime"]["id"],
            )
        )
        assert t["dwell"] == prev["bars_in_regime"] and t["confidence"] == e["regime"]["confidence"]
    validate = schema_validator("regime_transition.schema.json")
    for t in transitions:
        validate.validate(t)

    # the redelivered bars: their stored events, alarms and transitions again, byte for byte
    window = {e["event_id"] for e in map(json.loads, (v for _, v in again.events))}
    assert len(window) == 70
    first_drift = [(k, v) for o in outs for k, v in o.drift if json.loads(v)["event_id"] in window]
    first_trans = [(k, v) for o in outs for k, v in o.transitions if json.loads(v)["event_id"] in window]
    assert first_drift and first_trans
    assert again.drift == first_drift and again.transitions == first_trans


def test_a_bundle_without_drift_alarms_raises_none(serving):
    from dataclasses import replace

    sv = replace(serving, detectors={})
    bars = bars_of("NA", sv.history + 50, seed=6)
    out = run_batch(sv, FakeRedis(), items(bars))
    assert len(out.events) == 51 and out.drift == [] and out.report.alarms == []


def test_the_worker_says_when_its_bundle_has_no_drift_alarms(tiny_bundle, caplog):
    """Detectors on: one info line naming them and the topic. A bundle trained before drift alarms: a warning
    that they are off."""
    import logging
    from dataclasses import replace

    from worker.app import Runtime

    rt = Runtime(load_settings({}, bundle=str(tiny_bundle), reload_interval=0))
    try:
        with caplog.at_level(logging.INFO, logger="regimetry.worker"):
            rt._record_model()
            rt.serving = replace(rt.serving, detectors={})
            rt._record_model()
    finally:
        rt.executor.shutdown()
    on, off = [r for r in caplog.records if "drift" in r.getMessage()]
    assert on.levelno == logging.INFO and "miss, ood, uncertainty -> regime-drift" in on.getMessage()
    assert off.levelno == logging.WARNING and "drift detectors off" in off.getMessage()
