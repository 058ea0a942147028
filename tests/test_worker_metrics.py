"""Metrics scraped over HTTP from the running worker, and drift gauges that follow the input distribution."""

from __future__ import annotations

import pytest
from fixtures_stack import WORKER_SETTINGS
from helpers import TIMEOUT, series

from devstack.kafka_kit import interleave, produce, series_messages
from devstack.stack import metric_value, metrics_text, wait_until
from regimetry.synthetic import Regime

pytestmark = pytest.mark.slow

# Ten times the volatility and volume of anything in training: the encoder has never seen such windows.
WILD = (
    Regime("crash", drift=-3e-3, volatility=0.08, volume=40_000.0),
    Regime("melt_up", drift=3e-3, volatility=0.06, volume=30_000.0),
)


def drift(port: int) -> dict[str, float]:
    text = metrics_text(port)
    names = ["psi", "js", "transition_shift", "mean_confidence", "ood_share", "horizon_events"]
    return {n: metric_value(text, f"regimetry_drift_{n}") for n in names}


def feed_and_wait(stack, worker, bars: dict, history: int) -> dict[str, float]:
    """Send the bars and wait until the worker has emitted every event for them; return the drift gauges."""
    before = metric_value(metrics_text(worker.port), "regimetry_events_emitted_total") or 0.0
    produce(stack.bootstrap, "bars", interleave(*[series_messages(s, b.times, b.values) for s, b in bars.items()]))
    n_events = sum(len(b) - history + 1 for b in bars.values())
    wait_until(
        lambda: metric_value(metrics_text(worker.port), "regimetry_events_emitted_total") >= before + n_events,
        TIMEOUT,
        f"{n_events} events emitted",
    )
    return drift(worker.port)


def test_metrics_endpoint_and_drift_gauges_move(stack, worker, model, fresh_symbols):
    history = model.bundle.history_bars
    text = metrics_text(worker.port)
    for name in [
        "regimetry_bars_consumed_total",
        "regimetry_events_emitted_total",
        "regimetry_batch_size_count",
        "regimetry_end_to_end_latency_seconds_count",
        "regimetry_inference_latency_seconds_count",
        "regimetry_redis_errors_total",
        "regimetry_buffered_bars",
        "regimetry_drift_psi",
        "regimetry_drift_js",
        "regimetry_drift_transition_shift",
        "regimetry_drift_ood_share",
        "regimetry_drift_mean_confidence",
    ]:
        assert metric_value(text, name) is not None, f"{name} missing from /metrics"
    assert metric_value(text, "regimetry_model_info", {"model_version": model.bundle.version}) == 1.0
    # where the start-up went (issue 13): every phase measured, positive, once the worker is ready
    phases = ["imports", "bundle load and ONNX Runtime warm-up", "Redis and broker connection"]
    phases += ["Faust import and app wiring", "Faust start, Redis scripts and group join"]
    assert all((metric_value(text, "regimetry_startup_seconds", {"phase": p}) or 0) > 0 for p in phases)
    # the start-up heap is out of the collector's way and every collection's pause is measured
    assert (metric_value(text, "regimetry_gc_frozen_objects") or 0) > 10_000
    assert (metric_value(text, "regimetry_gc_pause_seconds_count", {"generation": "0"}) or 0) > 0
    baseline = model.bundle.manifest["baseline"]["cluster_distribution"]
    for k, share in enumerate(baseline):  # the dashboard draws live shares against these
        assert metric_value(text, "regimetry_regime_baseline_share", {"regime": str(k)}) == pytest.approx(share)

    horizon = WORKER_SETTINGS["drift_horizon"]
    per_symbol = horizon // 2 + history  # two symbols fill the whole horizon
    calm_too, wild_too = fresh_symbols(2)  # CALM and WILD name the phases (WILD is looked up below)
    # Phase 1: the distribution the bundle was trained on (the tiny bundle trains on generate_bars defaults).
    calm = {s: series(s, per_symbol, seed=100 + i) for i, s in enumerate(["CALM", calm_too])}
    d1 = feed_and_wait(stack, worker, calm, history)
    # Phase 2: a market the model never saw.
    wild = {s: series(s, per_symbol, seed=200 + i, regimes=WILD) for i, s in enumerate(["WILD", wild_too])}
    d2 = feed_and_wait(stack, worker, wild, history)

    assert d1["horizon_events"] == d2["horizon_events"] == horizon
    # in distribution: regime shares close to the training baseline, few embeddings beyond q99
    assert d1["js"] < 0.1 and d1["ood_share"] < 0.1, d1
    # shifted: shares far from the baseline. (Whether the OOD share rises depends on the model: the feature
    # scaler clips at 8 sd, so extreme bars can land inside the training cloud; it is checked in range only.)
    assert d2["js"] > d1["js"] + 0.2 and d2["psi"] > d1["psi"] + 0.5, (d1, d2)
    assert d2["transition_shift"] != d1["transition_shift"], (d1, d2)
    assert 0.0 <= d2["ood_share"] <= 1.0 and 0.0 < d2["mean_confidence"] <= 1.0, d2
    text = metrics_text(worker.port)
    assert metric_value(text, "regimetry_current_regime", {"symbol": "WILD"}) is not None
