"""Worker parts that need no broker: validation reasons, settings, event ids and schema, drift arithmetic."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest
from helpers import schema_validator
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from worker.drift import DriftMonitor
from worker.events import Profiles, build_event, dead_letter, encode, event_id
from worker.settings import Settings, SettingsError, load_settings
from worker.validate import Bar, BarValidator, Rejection

GOOD = {"symbol": "EURUSD", "time": 1_700_000_000, "open": 1.1, "high": 1.2, "low": 1.0, "close": 1.15, "volume": 10}


def msg(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


@pytest.fixture(scope="module")
def validator() -> BarValidator:
    return BarValidator(max_payload_bytes=512, allowed_symbols=("EURUSD",), clock=lambda: 1_700_000_000.0)


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"{", "malformed_json"),
        (b"\xff", "malformed_json"),
        (None, "malformed_json"),
        (b"[1, 2]", "schema_violation"),
        (msg(volume=-1), "schema_violation"),
        (msg(time=-5), "schema_violation"),
        (msg(time=1.5), "schema_violation"),
        (msg(open=True), "schema_violation"),
        (msg(symbol="EUR{USD}"), "schema_violation"),
        (msg(open=10**40), "schema_violation"),
        (msg(open=float("nan")), "non_finite"),
        (msg(volume=float("inf")), "non_finite"),
        (msg(low=0), "non_positive_price"),
        (msg(high=0.9), "high_below_low"),
        (msg(open=1.3, high=1.25), "ohlc_out_of_range"),
        (msg(time=1_800_000_000), "time_in_future"),
        (json.dumps({**GOOD, "note": "x" * 600}).encode(), "payload_too_large"),
    ],
)
def test_rejections_carry_the_specific_reason(validator, value, reason):
    out = validator.check(b"EURUSD", value)
    assert isinstance(out, Rejection) and out.reason.value == reason, out


def test_key_and_allow_list(validator):
    assert validator.check(b"GBPUSD", msg()).reason.value == "key_mismatch"
    assert validator.check(b"GBPUSD", msg(symbol="GBPUSD")).reason.value == "unknown_symbol"
    assert validator.check(b"EURUSD", msg()) == Bar("EURUSD", 1_700_000_000, 1.1, 1.2, 1.0, 1.15, 10.0)


@hsettings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(list(GOOD) + ["x"]), inner, max_size=8)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_validator_never_raises(value):
    out = BarValidator(max_payload_bytes=512).check(b"EURUSD", value)
    assert isinstance(out, (Bar, Rejection))


def test_settings_env_file_and_secrets(tmp_path):
    f = tmp_path / "worker.yaml"
    f.write_text("batch_size: 64\nredis_password: s3cret\n")
    s = load_settings(
        {
            "REGIMETRY_SETTINGS": str(f),
            "REGIMETRY_BATCH_SIZE": "128",
            "REGIMETRY_REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
            "REGIMETRY_ALLOWED_SYMBOLS": "A, B",
        }
    )
    assert s.batch_size == 128 and s.redis_password == "s3cret" and s.allowed_symbols == ("A", "B")
    shown = repr(s) + json.dumps(s.redacted())
    assert "s3cret" not in shown and ":pw@" not in shown
    with pytest.raises(SettingsError, match="REGIMETRY_BATCH_SIZE"):
        load_settings({"REGIMETRY_BATCH_SIZE": "many"})
    assert Settings().session_timeout <= 10


def test_event_id_is_uuid5_of_symbol_time_and_version():
    """The id is a published contract (DESIGN.md): uuid5 over "symbol|bar_time|model_version" in the event
    namespace. event_id spells uuid5 out for speed; it must stay equal to the library's."""
    import uuid

    from worker.events import EVENT_NAMESPACE

    rng = np.random.default_rng(11)
    for symbol in ("EURUSD", "EQ.A", "ÜBER-€", "x" * 40):
        for t in rng.integers(0, 2**40, 50).tolist() + [0, -5]:
            for version in ("v1", "eurusd-ad4a5681a8"):
                assert event_id(symbol, t, version) == str(uuid.uuid5(EVENT_NAMESPACE, f"{symbol}|{t}|{version}"))


def test_event_is_deterministic_and_valid():
    profiles = Profiles((0.9, 0.8, 0.7), (20.0, 10.0, 5.0), ("calm", "normal up", "turbulent"))
    a = build_event(
        "EURUSD",
        1_700_000_000,
        "v1",
        1,
        np.array([0.1, 0.7, 0.2]),
        0,
        1,
        2,
        np.array([0.2, 0.2, 0.6]),
        1.5,
        4.0,
        profiles,
        emitted_at=1.0,
    )
    assert a["event_id"] == event_id("EURUSD", 1_700_000_000, "v1") != event_id("EURUSD", 1_700_000_000, "v2")
    assert a["schema_version"] == 2 and a["bars_in_regime"] == 1
    assert a["regime"]["id"] == 1 and a["regime"]["confidence"] == 0.7 and a["regime_changed"]
    assert a["previous_regime"] == 0
    assert a["predicted"]["regime"] == 2 and not a["ood"] and a["profile"]["stickiness"] == 0.8
    assert a["regime"]["name"] == "normal up" and a["predicted"]["name"] == "turbulent"
    schema_validator("regime_event.schema.json").validate(json.loads(encode(a)))
    b = build_event("EURUSD", 1_700_000_000, "v1", 1, np.array([0.1, 0.7, 0.2]), 1, 12, None, None, 9.0, 4.0, profiles)
    assert b["predicted"] is None and b["previous_regime"] is None and not b["regime_changed"] and b["ood"]
    assert b["bars_in_regime"] == 12
    schema_validator("regime_event.schema.json").validate(b)
    # the regime is the decoder's argmin, passed as computed: never re-derived from rounded probabilities
    tie = build_event("EURUSD", 1, "v1", 2, [0.5, 0.0, 0.5], None, 1, 0, [0.5, 0.0, 0.5], 0.1, 4.0, profiles)
    assert tie["regime"]["id"] == 2 and tie["predicted"]["regime"] == 0
    assert (tie["regime"]["name"], tie["predicted"]["name"]) == ("turbulent", "calm")
    with pytest.raises(jsonschema.ValidationError):
        schema_validator("regime_event.schema.json").validate({k: v for k, v in b.items() if k != "bars_in_regime"})
    with pytest.raises(jsonschema.ValidationError):  # every producer sets the names: the schema requires them
        schema_validator("regime_event.schema.json").validate(
            {**b, "regime": {k: v for k, v in b["regime"].items() if k != "name"}}
        )
    d = json.loads(dead_letter("malformed_json", "x", b"\xff" * 100, None, "bars", 0, 7, limit=10))
    assert d["raw_truncated"] and d["raw_bytes"] == 100 and d["source"]["offset"] == 7
    schema_validator("dlq.schema.json").validate(d)


def test_event_names_come_from_the_bundle_once_per_load():
    """Profiles holds one name per id, built when a bundle is loaded: from the manifest's names, computed from
    the profiles of a manifest without them (older bundles), "regime <id>" when built by hand without names."""
    from worker.metrics import WorkerMetrics

    profiles = [
        {
            "id": i,
            "share": 1 / 3,
            "mean_duration": 9.0,
            "stickiness": 0.9,
            "row_entropy": 0.1,
            "n_bars": 900,
            "mean_return": m,
            "volatility": v,
        }
        for i, (m, v) in enumerate([(0.0, 0.02), (1e-3, 0.01), (0.0, 0.03)])
    ]
    manifest = {
        "model_version": "v1",
        "window_size": 16,
        "feature_spec_hash": "ab" * 32,
        "n_clusters": 3,
        "regime_profiles": profiles,
        "baseline": {"cluster_distribution": [0.3, 0.3, 0.4]},
    }
    assert Profiles.from_manifest(manifest).names == ("normal", "calm up", "turbulent")
    named = {**manifest, "regime_profiles": [{**p, "name": n} for p, n in zip(profiles, ("a", "b", "c"))]}
    p = Profiles.from_manifest(named)
    assert p.names == ("a", "b", "c") and p.stickiness == (0.9, 0.9, 0.9)
    e = build_event("S", 1, "v1", 2, [0.1, 0.2, 0.7], 0, 1, 0, [0.6, 0.2, 0.2], 0.5, 4.0, p)
    assert e["regime"]["name"] == "c" and e["predicted"]["name"] == "a"
    assert Profiles((0.9, 0.8), (2.0, 3.0)).names == ("regime 0", "regime 1")
    # the dashboard's legend join: one info series per id, replaced (not added to) at a reload
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    m = WorkerMetrics(3)

    def info() -> dict[str, str]:
        fams = text_string_to_metric_families(generate_latest(m.registry).decode())
        return {
            s.labels["regime"]: s.labels["name"]
            for f in fams
            for s in f.samples
            if s.name == "regimetry_regime_info" and s.value == 1.0
        }

    m.set_model(manifest)
    assert info() == {"0": "normal", "1": "calm up", "2": "turbulent"}
    m.set_model(named)
    assert info() == {"0": "a", "1": "b", "2": "c"}


def test_stored_members_round_trip_costs_as_float64():
    """Each embedding member carries its bar's regime costs as the float64 numbers the decoder used; a blob
    of the schema-1 layout (no costs) or of another model's sizes is not taken for members."""
    from worker.redis_store import pack_embeddings, unpack_embeddings

    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 8)).astype(np.float32)
    costs = rng.standard_normal((5, 3)) * 1e3 + 1e-12
    times = [100, 200, 300, 400, 500]
    got = unpack_embeddings(b"".join(pack_embeddings(times, z, costs)), 8, 3)
    assert got.times.tolist() == times
    np.testing.assert_array_equal(got.z, z)
    np.testing.assert_array_equal(got.costs, costs)
    assert got.costs.dtype == np.float64
    old = b"".join(m[: 8 + 4 * 8] for m in pack_embeddings(times, z, costs))  # schema 1: (time, float32[D])
    assert unpack_embeddings(old, 8, 3) is None
    assert len(unpack_embeddings(b"", 8, 3).times) == 0


def test_drift_follows_the_horizon():
    baseline = {"cluster_distribution": [0.5, 0.5], "transition_matrix": [[0.9, 0.1], [0.1, 0.9]]}
    mon = DriftMonitor(baseline, 2, horizon=100, ood_threshold=3.0)
    for i in range(100):
        mon.observe(i % 2, 0.9, 1.0, None, None)
    calm = mon.snapshot()
    assert calm.psi < 1e-9 and calm.js < 1e-9 and calm.ood_share == 0 and math.isnan(calm.hit_rate)
    prev = 0
    for _ in range(100):
        mon.observe(0, 0.5, 5.0, prev, 1)
    shifted = mon.snapshot()
    assert shifted.psi > 1 and shifted.js > 0.3 and shifted.ood_share == 1.0 and shifted.hit_rate == 0.0
    assert shifted.transition_shift > 0 and shifted.mean_confidence == 0.5


def test_drift_running_counts_equal_a_recount_of_the_horizon():
    """The snapshot's running counts (kept as the horizon slides) give exactly what recounting every event in
    the horizon gives: shares, transition matrix, hit rate and OOD share (and the mean confidence to 2^-32),
    also long after the deques wrapped."""
    from regimetry.diagnostics import jensen_shannon, psi, transition_shift

    rng = np.random.default_rng(3)
    k, horizon = 3, 57
    baseline = {"cluster_distribution": [0.5, 0.3, 0.2], "transition_matrix": np.full((k, k), 1 / k).tolist()}
    mon = DriftMonitor(baseline, k, horizon=horizon, ood_threshold=1.0)
    events = []
    for i in range(400):
        e = (int(rng.integers(k)), float(rng.random()), float(rng.random() * 2))
        prev = int(rng.integers(k)) if rng.random() < 0.8 else None
        pred = int(rng.integers(k)) if rng.random() < 0.6 else None
        mon.observe(*e, prev, pred)
        events.append((*e, prev, pred))
        if i % 37 and i < 390:
            continue
        regimes = [r for r, *_ in events][-horizon:]
        pairs = [(p, r) for r, _, _, p, _ in events if p is not None][-horizon:]
        hits = [q == r for r, _, _, _, q in events if q is not None][-horizon:]
        ood = [o > 1.0 for _, _, o, _, _ in events][-horizon:]
        counts = np.zeros((k, k))
        for a, b in pairs:
            counts[a, b] += 1
        rows = counts.sum(1, keepdims=True)
        tm = np.where(rows > 0, counts / np.maximum(rows, 1.0), np.asarray(baseline["transition_matrix"]))
        shares = np.bincount(regimes, minlength=k) / len(regimes)
        snap = mon.snapshot()
        np.testing.assert_array_equal(snap.shares, shares)
        np.testing.assert_array_equal(mon.transition_matrix(), tm)
        assert snap.psi == psi(shares, mon.expected) and snap.js == jensen_shannon(shares, mon.expected)
        assert snap.transition_shift == transition_shift(tm, mon.baseline_p)
        assert snap.hit_rate == float(np.mean(hits)) and snap.ood_share == float(np.mean(ood))
        assert snap.n == len(regimes) == min(i + 1, horizon)
        confidence = [c for _, c, _, _, _ in events][-horizon:]  # kept in units of 2^-32: the mean to that
        assert abs(snap.mean_confidence - float(np.mean(confidence))) <= 2.0**-32


@hsettings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "symbol": st.one_of(st.sampled_from(["EURUSD", "a{b}", "", "X" * 40, "EQ:C"]), st.integers()),
            "time": st.one_of(st.integers(-10, 5_000_000_000), st.floats(allow_nan=False), st.text(max_size=3)),
            "open": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**14), st.booleans()),
            "high": st.floats(allow_nan=False, allow_infinity=False),
            "low": st.floats(allow_nan=False, allow_infinity=False),
            "close": st.floats(allow_nan=False, allow_infinity=False),
            "volume": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.none()),
        },
    )
)
def test_compiled_schema_agrees_with_jsonschema(doc):
    """fastjsonschema (the worker's compiled validator) gives jsonschema's verdict on the bar schema."""
    import fastjsonschema

    from regimetry.bundle import load_schema

    fast = fastjsonschema.compile(load_schema("bar.schema.json"))
    try:
        fast(doc)
        accepted = True
    except fastjsonschema.JsonSchemaValueException:
        accepted = False
    assert accepted == schema_validator("bar.schema.json").is_valid(doc)


def test_current_regime_forgets_symbols_of_partitions_moved_away():
    """After a rebalance a worker must not keep reporting a symbol another worker now updates."""
    from prometheus_client import CollectorRegistry, generate_latest

    from devstack.stack import metric_value
    from worker.metrics import WorkerMetrics

    m = WorkerMetrics(3, registry=CollectorRegistry())
    m.set_regime("A", 1, ("bars", 0))
    m.set_regime("B", 2, ("bars", 1))
    assert m.keep_partitions({("bars", 1), ("bars", 2)}) == ["A"]
    text = generate_latest(m.registry).decode()
    assert metric_value(text, "regimetry_current_regime", {"symbol": "A"}) is None
    assert metric_value(text, "regimetry_current_regime", {"symbol": "B"}) == 2.0
    m.set_regime("A", 0, ("bars", 2))  # the symbol's partition comes back: reported again
    assert metric_value(generate_latest(m.registry).decode(), "regimetry_current_regime", {"symbol": "A"}) == 0.0


def test_repeat_filter_holds_back_repeats_and_says_how_many():
    """While the broker is down aiokafka repeats the same errors every ~100 ms; one per interval is enough."""
    import logging

    from worker.logfilter import RepeatFilter

    now = [0.0]
    f = RepeatFilter(5.0, clock=lambda: now[0])

    def rec(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", level, __file__, 1, msg, None, None)

    assert f.filter(rec("Unable connect to node %s"))
    passed = [f.filter(rec("Unable connect to node %s")) for _ in range(40)]
    assert not any(passed)
    assert f.filter(rec("Failed fetch messages from %s"))  # another template is not held back by the first
    now[0] = 6.0
    back = rec("Discovered coordinator %s", logging.INFO)
    assert f.filter(back) and back.msg.endswith("[40 repeated Kafka client warnings/errors held back]")
    again = rec("Unable connect to node %s")
    assert f.filter(again) and again.msg == "Unable connect to node %s"


def test_drift_alarm_counter_starts_at_zero_per_detector_and_counts_a_batchs_alarms():
    """regimetry_drift_alarms_total{detector} is visible at 0 for every detector (so increase() sees the first
    alarm) and telemetry adds each delivered batch's alarms by detector."""
    from prometheus_client import CollectorRegistry, generate_latest

    from devstack.stack import metric_value
    from worker.metrics import WorkerMetrics
    from worker.steps import BatchReport, Outgoing
    from worker.telemetry import Telemetry

    m = WorkerMetrics(3, registry=CollectorRegistry())
    text = generate_latest(m.registry).decode()
    for d in ("cusum_ood", "cusum_uncertainty", "cusum_miss"):
        assert metric_value(text, "regimetry_drift_alarms_total", {"detector": d}) == 0.0
    drift = DriftMonitor({"cluster_distribution": [1 / 3] * 3, "transition_matrix": np.eye(3).tolist()}, 3, 10, 1.0)
    out = Outgoing(BatchReport("v", drift, 10, alarms=["cusum_ood", "cusum_miss", "cusum_ood"]))
    Telemetry(m).record(out)
    text = generate_latest(m.registry).decode()
    assert metric_value(text, "regimetry_drift_alarms_total", {"detector": "cusum_ood"}) == 2.0
    assert metric_value(text, "regimetry_drift_alarms_total", {"detector": "cusum_miss"}) == 1.0
    assert metric_value(text, "regimetry_drift_alarms_total", {"detector": "cusum_uncertainty"}) == 0.0


def test_side_records_and_detector_state_round_trip_through_their_redis_encoding():
    from worker.events import alarm_id, build_alarm, build_transition
    from worker.redis_store import SideRecord, pack_cusum, pack_side, unpack_cusum, unpack_side

    prof = Profiles((0.9, 0.8), (10.0, 5.0), ("calm", "wild ü"))
    e = build_event("S", 3600, "v1", 1, [0.25, 0.75], 0, 1, None, None, 2.5, 3.0, prof, emitted_at=9.0)
    a = build_alarm(e, {"detector": "cusum_ood", "stream": "ood", "statistic": 8.5, "threshold": 8.0, "value": 2.5})
    t = build_transition(e, 12, prof)
    assert a["alarm_id"] == alarm_id(e["event_id"], "cusum_ood") != alarm_id(e["event_id"], "cusum_miss")
    assert (t["from"], t["to"], t["dwell"], t["emitted_at"]) == (
        {"id": 0, "name": "calm"},
        {"id": 1, "name": "wild ü"},
        12,
        9.0,
    )
    schema_validator("drift_alarm.schema.json").validate(a)
    schema_validator("regime_transition.schema.json").validate(t)
    records = [SideRecord("transition", "", encode(t)), SideRecord("drift", "cusum_ood", encode(a))]
    assert unpack_side(pack_side(records)) == records  # byte for byte, non-ASCII names included
    state = {"ood": 0.1 + 0.2, "miss": 1e-300, "uncertainty": 7.123456789012345}
    assert unpack_cusum(pack_cusum("v1", state)) == ("v1", state)
    assert unpack_cusum(b"not json") is None and unpack_cusum(None) is None
