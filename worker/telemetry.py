"""Every metric and drift update of a batch, in one call: ``Telemetry.record(out)``.

The steps (worker/steps.py) gather what happened as data (``BatchReport`` in ``Outgoing``); the runner records
it once the batch is delivered, so the counters describe delivered output. One exception by design: Redis
errors are counted as they happen (``redis_error``), because a batch retrying an absent Redis never ends and
the counter is how an operator (and tests/test_worker_redis_outage.py) sees the retries.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from worker.metrics import WorkerMetrics
from worker.steps import Outgoing, Rebuild, RebuildResult

log = logging.getLogger("regimetry.worker")


class Telemetry:
    def __init__(self, metrics: WorkerMetrics):
        self.metrics = metrics

    def redis_error(self) -> None:
        self.metrics.redis_errors.inc()

    def record(self, out: Outgoing, started: float | None = None) -> None:
        """One batch: counts, dead letters by reason, drift alarms by detector, latencies, rebuilds, lost
        states, the drift of the model that computed it, the current regime per symbol. `started`
        (perf_counter at take) only for a delivered batch: then the end-to-end and batch latencies are
        observed too."""
        m, r = self.metrics, out.report
        m.bars_consumed.inc(r.bars)
        m.batch_size.observe(r.bars)
        if r.inferred:
            m.inference_latency.observe(r.inference_seconds)
        m.redis_conflicts.inc(r.conflicts)
        m.state_cache_hits.inc(len(r.cached))
        m.state_cache_stale.inc(r.cache_stale)
        m.state_lost.inc(r.states_lost)
        m.bars_restored.inc(out.restored)
        m.bars_overtaken.inc(out.overtaken)
        m.log_reads.inc(r.log_reads)
        m.state_resets.inc(r.resets)
        m.symbols_started.inc(r.started)
        m.events_emitted.inc(len(out.events))
        m.events_reemitted.inc(out.reemitted)
        m.duplicates.inc(out.duplicates)
        m.bars_warming.inc(out.warming)
        for reason, n in Counter(reason for _, _, reason in out.dead).items():
            m.dead_lettered.labels(reason=reason).inc(n)
        for detector, n in Counter(r.alarms).items():
            m.drift_alarms.labels(detector=detector).inc(n)
        self._rebuilds(r.rebuilt, r.model_version, r.rebuild_bars)
        for obs in r.observations:
            r.drift.observe(obs.regime, obs.confidence, obs.ood_score, obs.previous, obs.previous_prediction)
        for symbol, regime, partition in r.regimes:
            m.set_regime(symbol, regime, partition)
        if started is not None:
            now = time.time()
            for ts in out.new_event_timestamps:
                m.e2e_latency.observe(max(now - ts, 0.0))
            m.batch_latency.observe(time.perf_counter() - started)
        m.set_drift(r.drift.snapshot())

    def _rebuilds(self, rebuilt: list[Rebuild], version: str, rebuild_bars: int) -> None:
        """Count the batch's rebuilds by result and say in one log line per result which symbols and why."""
        if not rebuilt:
            return
        by: dict[RebuildResult, list[Rebuild]] = {}
        for rb in rebuilt:
            self.metrics.state_rebuilds.labels(result=rb.result.value).inc()
            by.setdefault(rb.result, []).append(rb)
        exact = by.pop(RebuildResult.EXACT, [])
        if exact:
            log.info(
                "rebuilt the regime state of %d symbol(s) from their stored bars with model %s (%s): %s",
                len(exact),
                version,
                exact[0].detail,
                ", ".join(rb.symbol for rb in exact[:10]) + (" ..." if len(exact) > 10 else ""),
            )
        for result, items in by.items():
            why = (
                "fewer bars stored than an exact rebuild needs (history + memory - 1 = "
                f"{rebuild_bars}): their events follow the batch reference of the stored bars"
                if result is RebuildResult.SHORT
                else "the current regime began before the first bar the stored bars decode exactly: "
                "bars_in_regime follows the stored bars until the regime changes"
            )
            log.warning(
                "rebuilt the regime state of %d symbol(s) with model %s, %s: %s",
                len(items),
                version,
                why,
                ", ".join(f"{rb.symbol} ({rb.detail})" for rb in items[:10]) + (" ..." if len(items) > 10 else ""),
            )
