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
