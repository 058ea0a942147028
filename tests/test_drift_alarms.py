"""Drift alarms (regimetry/drift_alarms.py) and `regimetry drift-report` (ops/drift_report.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from regimetry.drift_alarms import Cusum, calibrate, run_detectors, streams_of


def test_cusum_path_by_hand():
    det = Cusum("ood", mean=0.0, std=1.0, threshold=2.0, allowance=0.5)
    s, alarms = det.path(np.array([1.0, 1.0, 1.0, -5.0, 2.0, 2.0]))
    # 0.5, 1.0, 1.5, max(0, -4) = 0, 1.5, 3.0 > 2 -> alarm at 5, then restart
    np.testing.assert_allclose(s, [0.5, 1.0, 1.5, 0.0, 1.5, 3.0])
    assert alarms.tolist() == [5]


def test_calibration_meets_its_false_alarm_target_and_detects_a_shift():
    rng = np.random.default_rng(0)
    det, rec = calibrate("ood", rng.normal(size=4000), arl0=2000)
    assert rec["train_alarms"] <= 2
    fresh = rng.normal(size=200_000)  # in distribution: alarms at most at the target rate (with margin)
    assert len(det.path(fresh)[1]) <= 3 * 200_000 / 2000
    shifted = rng.normal(size=3000)
    shifted[1000:] += 1.5  # a 1.5-sigma shift at event 1000
    alarms = det.path(shifted)[1]
    after = alarms[alarms >= 1000]
    assert len(after) and after[0] - 1000 < 60
    # a tighter target gives a higher threshold
    assert calibrate("ood", rng.normal(size=4000), arl0=20_000)[0].threshold > det.threshold


def test_streams_and_nan_handling():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    regimes = np.array([0, 1, 0, 0])
    predicted = np.array([1, -1, 0, 1])
    s = streams_of(proba, regimes, np.array([1.0, 2.0, 3.0, 4.0]), predicted)
    np.testing.assert_allclose(s["uncertainty"], [0.1, 0.2, 0.4, 0.5])
    # miss[t] = predicted[t-1] != regimes[t]; bar 2's predecessor had no forecast
    assert s["miss"][0] != s["miss"][0] and s["miss"][2] != s["miss"][2]
    assert s["miss"][1] == 0.0 and s["miss"][3] == 0.0
    det = {"miss": Cusum("miss", 0.0, 1.0, 0.4)}
    alarms = run_detectors(det, {"miss": np.array([np.nan, 1.0, np.nan, 1.0])})
    assert [a["index"] for a in alarms] == [1, 3]


@pytest.mark.slow
def test_the_trainer_calibrates_and_drift_report_fires_after_a_shift(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from regimetry import cli
    from regimetry.bundle import verify_bundle
    from regimetry.synthetic import generate_bars, write_csv

    manifest = verify_bundle(tiny_bundle)
    section = manifest["drift_alarms"]
    assert {d["stream"] for d in section["detectors"]} == {"ood", "uncertainty", "miss"}
    assert all(r["train_alarms"] * section["target_arl_events"] <= 2 * r["n_train"] for r in section["calibration"])

    bars = generate_bars(n_bars=1500, seed=123).bars  # the generator the tiny bundle was trained on
    v = bars.values.copy()
    t0 = 1000
    # from bar t0 on, ranges ten times wider around the same closes: a market unlike anything in training
    mid = v[t0:, 3:4]
    v[t0:, 1] = mid[:, 0] * (1 + 10 * (v[t0:, 1] / v[t0:, 3] - 1)) + 1e-9
    v[t0:, 2] = mid[:, 0] * (1 - 10 * (1 - v[t0:, 2] / v[t0:, 3])) - 1e-9
    v[t0:, 0] = np.clip(v[t0:, 0], v[t0:, 2], v[t0:, 1])
    from regimetry.data import BarSeries

    data = tmp_path / "bars.csv"
    write_csv(BarSeries(bars.times, v, bars.symbol), str(data))
    runner = CliRunner()
    cli._register()
    events = tmp_path / "events.jsonl"
    r = runner.invoke(cli.app, ["predict", "--bundle", str(tiny_bundle), "--data", str(data), "--out", str(events)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "report"
    r = runner.invoke(
        cli.app, ["drift-report", "--bundle", str(tiny_bundle), "--events", str(events), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "drift_log.jsonl").read_text().splitlines()]
    t_shift = int(bars.times[t0])
    before = [a for a in log if a["bar_time"] < t_shift]
    after = [a for a in log if a["bar_time"] >= t_shift]
    assert after, "no alarm after the shift"
    first = min(a["bar_time"] for a in after)
    delay = int(np.searchsorted(bars.times, first)) - t0
    print(f"drift alarms: {len(before)} before the shift, first after it {delay} bars late ({after[0]['detector']})")
    assert delay < 100
    assert len(before) <= 1
    assert {"event_id", "statistic", "threshold", "symbol", "model_version", "time"} <= set(log[0])
    text = (out / "anomaly_report.md").read_text()
    assert "## Transition deviation" in text and "cusum_" in text
    for name in ("divergence.png", "transitions.png", "confidence_ood.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "transition_deviation.csv").read_text().splitlines()
    assert rows[0].startswith("from,to,predicted,realised")


@pytest.mark.slow
def test_drift_report_reads_the_events_topic_of_a_live_run_and_its_alarms_are_the_workers(
    stack, worker, model, tiny_bundle, fresh_symbols, tmp_path
):
    """The session worker on the embedded stack serves bars whose ranges widen tenfold part-way through; then
    `regimetry drift-report --events regime-events` reads the topic and writes every file. Its drift log for
    the symbol holds exactly the alarms the worker sent to regime-drift while it ran (same events, detectors,
    statistics), each a valid drift_alarm record keyed by the symbol."""
    import subprocess
    import sys

    from helpers import TIMEOUT, schema_validator, series

    from devstack.kafka_kit import Collector, produce, series_messages
    from regimetry.data import BarSeries

    (sym,) = fresh_symbols(1)
    history = model.bundle.history_bars
    bars = series(sym, history + 300, seed=123)
    v = bars.values.copy()
    t0 = history + 120  # from here on, ranges ten times wider around the same closes (as in the test above)
    mid = v[t0:, 3:4]
    v[t0:, 1] = mid[:, 0] * (1 + 10 * (v[t0:, 1] / v[t0:, 3] - 1)) + 1e-9
    v[t0:, 2] = mid[:, 0] * (1 - 10 * (1 - v[t0:, 2] / v[t0:, 3])) - 1e-9
    v[t0:, 0] = np.clip(v[t0:, 0], v[t0:, 2], v[t0:, 1])
    bars = BarSeries(bars.times, v, sym)
    n = len(bars) - history + 1
    events = Collector(stack.bootstrap, "regime-events")
    alarms = Collector(stack.bootstrap, "regime-drift")
    try:
        produce(stack.bootstrap, "bars", series_messages(sym, bars.times, bars.values))
        events.wait_for(lambda vals: sum(e["symbol"] == sym for e in vals) >= n, TIMEOUT, f"{sym} events")
        out = tmp_path / "report"
        r = subprocess.run(
            [sys.executable, "-m", "regimetry.cli", "drift-report", "--bundle", str(tiny_bundle)]
            + ["--events", "regime-events", "--out", str(out), "--broker", stack.bootstrap, "--timeout", "60"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        for name in ("drift_log.jsonl", "anomaly_report.md", "transition_deviation.csv"):
            assert (out / name).stat().st_size > 0, name
        for name in ("divergence.png", "transitions.png", "confidence_ood.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert sym in (out / "anomaly_report.md").read_text()
        offline = [a for a in map(json.loads, (out / "drift_log.jsonl").read_text().splitlines()) if a["symbol"] == sym]
        assert offline, "the widened ranges should raise alarms"
        want = {(a["event_id"], a["detector"]) for a in offline}
        # the worker sent them in the same delivery as the events: wait until all are read, then compare
        got = alarms.wait_for(
            lambda vals: want <= {(a["event_id"], a["detector"]) for a in vals if a["symbol"] == sym},
            TIMEOUT,
            f"{sym} alarms on regime-drift",
        )
        keys = {rec.key for rec in alarms.records if json.loads(rec.value)["symbol"] == sym}
    finally:
        events.close()
        alarms.close()
    live = sorted((a for a in got if a["symbol"] == sym), key=lambda a: (a["bar_time"], a["detector"]))
    fields = ("event_id", "detector", "stream", "statistic", "value", "threshold", "bar_time", "model_version")
    assert [tuple(a[f] for f in fields) for a in live] == [tuple(a[f] for f in fields) for a in offline]
    assert keys == {sym.encode()}
    validate = schema_validator("drift_alarm.schema.json")
    for a in live:
        validate.validate(a)
