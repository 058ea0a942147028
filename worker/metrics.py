"""Prometheus metrics of one worker process (prometheus-client, served over HTTP).

Names follow Prometheus conventions (snake_case, base units, `_total` counters, `_seconds` histograms).
Labels stay low-cardinality: `reason` (a fixed set), `regime` (K values), `detector` (three), and `symbol` only on
regimetry_current_regime, capped at `symbol_label_limit` symbols so a feed of thousands of instruments
cannot blow up the time-series count. Regime names are not a label of the per-regime series: they sit in one
info gauge, regimetry_regime_info{regime, name} = 1 (K series per process, replaced at every bundle load),
which a dashboard joins on `regime` for its legends.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from regimetry.drift_alarms import STREAMS
from regimetry.naming import manifest_names
from worker.drift import DriftSnapshot

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class WorkerMetrics:
    def __init__(self, n_clusters: int, symbol_label_limit: int = 64, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.ready = Gauge(
            "regimetry_worker_ready", "1 once the bundle is loaded and partitions are assigned", registry=r
        )
        self.bars_consumed = Counter(
            "regimetry_bars_consumed_total", "Bar messages read from the bars topic", registry=r
        )
        self.events_emitted = Counter(
            "regimetry_events_emitted_total", "Regime events sent (re-emissions included)", registry=r
        )
        self.events_reemitted = Counter(
            "regimetry_events_reemitted_total",
            "Stored events sent again for a redelivered or duplicate bar",
            registry=r,
        )
        self.duplicates = Counter(
            "regimetry_bars_duplicate_total", "Bars already stored (redelivery or duplicate)", registry=r
        )
        self.dead_lettered = Counter(
            "regimetry_bars_dead_lettered_total", "Bars sent to the DLQ", ["reason"], registry=r
        )
        self.batch_size = Histogram("regimetry_batch_size", "Bars per micro-batch", buckets=BATCH_BUCKETS, registry=r)
        self.e2e_latency = Histogram(
            "regimetry_end_to_end_latency_seconds",
            "Bar message timestamp to event delivered",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "regimetry_inference_latency_seconds",
            "Features + ONNX Runtime + regime decoder per micro-batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "regimetry_batch_latency_seconds",
            "Whole micro-batch: validate to delivered",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.buffered = Gauge(
            "regimetry_buffered_bars",
            "Bar records fetched and waiting for a micro-batch (at most two batches; staying "
            "near that means the worker, not the feed, sets the pace)",
            registry=r,
        )
        self.redis_errors = Counter(
            "regimetry_redis_errors_total", "Redis calls that failed (then retried)", registry=r
        )
        self.state_lost = Counter(
            "regimetry_redis_state_lost_total",
            "Symbols whose stored state vanished (Redis came back empty: windows refill) or went back (Redis "
            "came back older: the missing bars are read back from the bars topic)",
            registry=r,
        )
        self.bars_restored = Counter(
            "regimetry_bars_restored_total",
            "Bars read back from the bars topic into Redis because Redis came back older than the committed "
            "offsets (no event sent for them: theirs went out when they first came)",
            registry=r,
        )
        self.log_reads = Counter(
            "regimetry_log_reads_total",
            "Reads of a bars topic range, one per partition, to check or fill a gap in the stored state",
            registry=r,
        )
        self.bars_overtaken = Counter(
            "regimetry_bars_overtaken_total",
            "Bar records the symbol's stored state was already past: processed by another worker that took the "
            "partition over while this one was paused (a fencing outcome, not bad input: nothing sent, no dead "
            "letter)",
            registry=r,
        )
        self.symbols_started = Counter(
            "regimetry_symbols_started_total",
            "Symbols whose bars found nothing stored: new symbols, and symbols back after their state expired "
            "(REGIMETRY_STATE_TTL_SECONDS) or was lost; each refills its window",
            registry=r,
        )
        self.startup = Gauge(
            "regimetry_startup_seconds",
            "Seconds the worker's start-up spent per phase (worker/startup_clock.py), set once it is ready",
            ["phase"],
            registry=r,
        )
        self.state_cache_hits = Counter(
            "regimetry_state_cache_hits_total",
            "Symbol batches planned on the worker's own last write instead of a Redis read (worker/state_cache.py)",
            registry=r,
        )
        self.state_cache_stale = Counter(
            "regimetry_state_cache_stale_total",
            "Of those, writes Redis refused because the symbol had moved meanwhile (another worker, a restart, "
            "expiry): re-read and redone",
            registry=r,
        )
        self.gc_pause = Histogram(
            "regimetry_gc_pause_seconds",
            "Duration of each garbage collection (worker/gc_pauses.py), by generation: no bar moves meanwhile",
            ["generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
            registry=r,
        )
        self.gc_frozen = Gauge(
            "regimetry_gc_frozen_objects",
            "Objects of the start-up heap moved out of the collector's way when the worker became ready",
            registry=r,
        )
        self.state_ttl = Gauge(
            "regimetry_state_ttl_seconds",
            "Per-symbol Redis state expires this long after the symbol's last write (0: never)",
            registry=r,
        )
        self.state_resets = Counter(
            "regimetry_state_resets_total",
            "Symbols started again from nothing: Redis lost bars the log no longer holds (no event until the "
            "window is full again)",
            registry=r,
        )
        self.bars_warming = Counter(
            "regimetry_bars_without_window_total",
            "New bars stored without an event: the symbol's window is not full yet "
            "(first bars of a symbol, or refilling after lost state)",
            registry=r,
        )
        self.state_rebuilds = Counter(
            "regimetry_state_rebuilds_total",
            "Symbols whose stored costs/embeddings (another model's, or missing) were rebuilt from their stored "
            "bars. result: exact; short (fewer bars stored than history + memory - 1: events follow the batch "
            "reference of the stored bars); dwell_bound (the current regime began before the first bar the "
            "stored bars decode exactly: bars_in_regime follows the stored bars)",
            ["result"],
            registry=r,
        )
        self.redis_conflicts = Counter(
            "regimetry_redis_conflicts_total", "Symbol writes lost to another worker (re-read and retried)", registry=r
        )
        self.model_info = Info("regimetry_model", "The model bundle in force", registry=r)
        self.model_switches = Counter(
            "regimetry_model_loads_total", "Bundles put in force (start-up and hot reloads)", registry=r
        )
        self.reload_failures = Counter(
            "regimetry_model_reload_failures_total",
            "New bundles refused at hot reload (verification failed)",
            registry=r,
        )
        self.drift_psi = Gauge("regimetry_drift_psi", "PSI of regime shares vs the training baseline", registry=r)
        self.drift_js = Gauge(
            "regimetry_drift_js", "Jensen-Shannon divergence (bits) of regime shares vs baseline", registry=r
        )
        self.drift_transition = Gauge(
            "regimetry_drift_transition_shift",
            "Mean total-variation distance of transition rows vs baseline",
            registry=r,
        )
        self.drift_hit_rate = Gauge(
            "regimetry_drift_hit_rate", "Share of next-regime forecasts that came true", registry=r
        )
        self.drift_confidence = Gauge(
            "regimetry_drift_mean_confidence", "Mean confidence (decoder probability of the served regime)", registry=r
        )
        self.drift_ood = Gauge(
            "regimetry_drift_ood_share", "Share of embeddings beyond the training distance quantile", registry=r
        )
        self.drift_alarms = Counter(
            "regimetry_drift_alarms_total",
            "Drift alarms sent to the drift topic (re-emissions of a redelivered bar included), by detector: "
            "the bundle's calibrated one-sided CUSUMs on each symbol's OOD score (cusum_ood), 1 - confidence "
            "(cusum_uncertainty) and forecast miss (cusum_miss)",
            ["detector"],
            registry=r,
        )
        self.drift_events = Gauge("regimetry_drift_horizon_events", "Events in the drift horizon", registry=r)
        self.regime_share = Gauge(
            "regimetry_regime_share", "Share of each regime over the drift horizon", ["regime"], registry=r
        )
        self.current_regime = Gauge(
            "regimetry_current_regime", "Latest regime per symbol (capped count)", ["symbol"], registry=r
        )
        self.baseline_share = Gauge(
            "regimetry_regime_baseline_share",
            "Share of each regime in the training baseline of the bundle in force",
            ["regime"],
            registry=r,
        )
        self.regime_info = Gauge(
            "regimetry_regime_info",
            "1 per regime id of the bundle in force, labelled with its descriptive name (join on regime for legends)",
            ["regime", "name"],
            registry=r,
        )
        self._symbols: dict[str, tuple[str, int] | None] = {}  # symbol -> (topic, partition) its bars came from
        self._symbol_limit = symbol_label_limit
        self._k = n_clusters
        for reason in ("malformed_json", "schema_violation", "out_of_order"):
            self.dead_lettered.labels(reason=reason)  # visible at 0 from the start
        for result in ("exact", "short", "dwell_bound"):
            self.state_rebuilds.labels(result=result)
        for stream in STREAMS:  # at 0 from the start, so increase() sees the first alarm
            self.drift_alarms.labels(detector=f"cusum_{stream}")

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def set_model(self, manifest: dict) -> None:
        self.model_switches.inc()
        self.model_info.info(
            {
                "model_version": str(manifest["model_version"]),
                "window_size": str(manifest["window_size"]),
                "n_clusters": str(manifest["n_clusters"]),
                "feature_spec_hash": str(manifest["feature_spec_hash"])[:12],
            }
        )
        # next to regimetry_regime_share, so a dashboard can draw live against training shares per regime
        self.baseline_share.clear()
        for k, share in enumerate(manifest["baseline"]["cluster_distribution"]):
            self.baseline_share.labels(regime=str(k)).set(float(share))
        self.regime_info.clear()  # a reload may rename a regime: the old name's series must go
        for k, name in enumerate(manifest_names(manifest)):
            self.regime_info.labels(regime=str(k), name=name).set(1)

    def set_regime(self, symbol: str, regime: int, partition: tuple[str, int] | None = None) -> None:
        """Latest regime of `symbol`, remembered with the partition its bars came from (see keep_partitions)."""
        if symbol in self._symbols or len(self._symbols) < self._symbol_limit:
            self._symbols[symbol] = partition
            self.current_regime.labels(symbol=symbol).set(regime)

    def keep_partitions(self, assigned: set[tuple[str, int]]) -> list[str]:
        """After a rebalance: drop the symbols whose partition moved to another worker, so this process stops
        reporting a regime it no longer updates (the new owner reports it). Returns the symbols dropped."""
        gone = [s for s, tp in self._symbols.items() if tp is not None and tp not in assigned]
        for s in gone:
            self.current_regime.remove(s)
            del self._symbols[s]
        return gone

    def set_drift(self, d: DriftSnapshot) -> None:
        self.drift_psi.set(d.psi)
        self.drift_js.set(d.js)
        self.drift_transition.set(d.transition_shift)
        if not math.isnan(d.hit_rate):
            self.drift_hit_rate.set(d.hit_rate)
        if not math.isnan(d.mean_confidence):
            self.drift_confidence.set(d.mean_confidence)
        self.drift_ood.set(d.ood_share)
        self.drift_events.set(d.n)
        for k in range(self._k):
            self.regime_share.labels(regime=str(k)).set(float(d.shares[k]))
