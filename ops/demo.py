"""`regimetry demo`: the whole live path on one machine with nothing but this repository installed.

Starts the embedded Tansu broker and Redis (devstack.stack), a worker process serving the committed bundle,
replays the EURUSD sample into `bars` (plus three deliberately bad messages so the dead-letter path shows),
prints regime events as they arrive, and ends with a summary: events, transitions, regime shares against the
training baseline, the worker's drift gauges, dead letters by reason, and how many live regimes equal the
batch reference (RegimeModel.run_series on the same bars). Everything started is stopped on the way out,
including on Ctrl-C, SIGTERM and errors. No Docker, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devstack.kafka_kit import bar_message
from regimetry.data import BarSeries

# The bad messages the demo sends after the sample, and the dead-letter reason each must get.
BAD_BARS_EXPECTED = {"malformed_json": 1, "high_below_low": 1, "out_of_order": 1}
DRIFT_GAUGES = ("psi", "js", "transition_shift", "hit_rate", "mean_confidence", "ood_share")


@dataclass(frozen=True)
class DemoOptions:
    bars: int = 5000
    bundle: str = "exported_models"
    source: str = "eurusd"
    symbol: str = "EURUSD"
    rate: float | None = None  # bars/s; None = as fast as the worker takes them
    show: str = "transitions"  # all | transitions | none
    bad_bars: bool = True
    timeout: float | None = None  # for the events to arrive; default scales with --bars
    workdir: Path | None = None
    keep_workdir: bool = False


def bad_messages(series: BarSeries) -> list[tuple[bytes, bytes]]:
    """Malformed JSON, a bar with high < low, and a bar older than the last one (out of order)."""
    key = series.symbol.encode()
    t_last, t_prev = int(series.times[-1]), int(series.times[-2])
    o, h, l, c, v = (float(x) for x in series.values[-1])
    return [
        (key, b'{"symbol": "' + key + b'", "time": '),
        (key, bar_message(series.symbol, t_last + 3600 * 24 * 365, (o, l * 0.99, h * 1.01, c, v))),
        (key, bar_message(series.symbol, (t_prev + t_last) // 2 - 1, (o, h, l, c, v))),
    ]


def locate_bundle(path: str) -> Path:
    """`path` as given, or, for the default relative path run outside the clone, the clone's committed bundle."""
    p = Path(path)
    repo_models = Path(__file__).resolve().parents[2] / "exported_models"
    if not p.exists() and not p.is_absolute() and p == Path("exported_models") and repo_models.exists():
        return repo_models
    return p


def scrape(port: int) -> dict:
    """Drift gauges, dead letters by reason and latency figures from the worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    from devstack.stack import metrics_text

    out: dict = {"drift": {}, "dlq": {}}
    for family in text_string_to_metric_families(metrics_text(port)):
        for s in family.samples:
            if s.name.startswith("regimetry_drift_") and s.name[16:] in DRIFT_GAUGES:
                out["drift"][s.name[16:]] = s.value
            elif s.name == "regimetry_bars_dead_lettered_total" and s.value:
                out["dlq"][s.labels["reason"]] = int(s.value)
            elif s.name == "regimetry_drift_horizon_events":
                out["drift_horizon_events"] = int(s.value)
            elif s.name in (
                "regimetry_end_to_end_latency_seconds_sum",
                "regimetry_end_to_end_latency_seconds_count",
                "regimetry_bars_consumed_total",
                "regimetry_events_emitted_total",
            ):
                out[s.name] = s.value
    return out


def summarize(events: list[dict], series: BarSeries, model, metrics: dict, sent: int, bad: int, seconds: float) -> dict:
    """The figures printed at the end (and written by --summary-json)."""
    b = model.bundle
    k = b.n_clusters
    from regimetry.diagnostics import jensen_shannon, psi, shares

    live = np.array([e["regime"]["id"] for e in events], dtype=np.int64)
    live_shares = shares(live, k)
    baseline = np.asarray(b.manifest["baseline"]["cluster_distribution"], dtype=np.float64)
    ref = model.run_series(series.values)
    ref_by_time = dict(zip(series.times[ref.offset :].tolist(), ref.regime.tolist()))
    agree = sum(ref_by_time.get(e["bar_time"]) == e["regime"]["id"] for e in events)
    lat_n = metrics.get("regimetry_end_to_end_latency_seconds_count") or 0
    return {
        "model_version": b.version,
        "symbol": series.symbol,
        "bars_sent": sent,
        "bad_messages_sent": bad,
        "events": len(events),
        "expected_events": max(0, len(series) - b.history_bars + 1),
        "transitions": int(sum(bool(e["regime_changed"]) for e in events)),
        "ood_events": int(sum(bool(e["ood"]) for e in events)),
        "regime_names": {str(i): name for i, name in enumerate(b.regime_names)},
        "regime_shares": {str(i): float(x) for i, x in enumerate(live_shares)},
        "baseline_shares": {str(i): float(x) for i, x in enumerate(baseline)},
        "drift": metrics["drift"],
        "drift_horizon_events": metrics.get("drift_horizon_events"),
        "whole_run": {"psi": psi(live_shares, baseline), "js": jensen_shannon(live_shares, baseline)},
        "dlq": metrics["dlq"],
        "batch_reference_agreement": {"equal": int(agree), "of": len(events)},
        "mean_end_to_end_latency_seconds": (metrics["regimetry_end_to_end_latency_seconds_sum"] / lat_n)
        if lat_n
        else None,
        "seconds": round(seconds, 3),
        "events_per_second": round(len(events) / seconds, 1) if seconds > 0 else None,
    }


class _Interrupted(Exception):
    """Raised in the replay thread when the demo is stopping."""


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def _hold_interrupts() -> tuple:
    """Ignore SIGINT and SIGTERM while the demo stops its processes; returns the handlers to put back."""
    return signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Feeder(threading.Thread):
    """Replays the series then the bad messages into `bars` on its own thread, so events print as they come."""

    def __init__(
        self,
        prod,
        series: BarSeries,
        bad: list[tuple[bytes, bytes]],
        rate: float | None,
        on_sent: Callable[[int], None],
    ):
        super().__init__(name="demo-replay", daemon=True)
        self.prod, self.series, self.bad, self.rate, self.on_sent = prod, series, bad, rate, on_sent
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def _send(self, symbol: str, msg: bytes) -> None:
        if self.stopping.is_set():
            raise _Interrupted
        self.prod.send("bars", key=symbol.encode(), value=msg)

    def run(self) -> None:
        from ops.replay import Pace, replay

        try:
            replay([self.series], self._send, Pace(rate=self.rate), on_sent=self.on_sent)
            for key, value in self.bad:
                self.prod.send("bars", key=key, value=value)
            self.prod.flush()
            self.on_sent(len(self.series) + len(self.bad))
        except _Interrupted:
            pass
        except BaseException as exc:  # surfaced in the main thread
            self.failure = exc


def _collect(
    collector,
    expected: int,
    timeout: float,
    show: str,
    feeder: _Feeder,
    printer,
    on_count: Callable[[int], None],
    log: Path,
) -> list[dict]:
    """Unique events from regime-events until `expected` arrived (printing them per `show`), with a deadline."""
    from ops.events_view import Seen, decode, line

    seen, events = Seen(), list[dict]()
    deadline = time.monotonic() + timeout
    while len(events) < expected:
        if feeder.failure is not None:
            raise feeder.failure
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(events)} of {expected} events arrived within {timeout:.0f} s; worker log: {log}")
        before = len(collector.records)
        collector.poll()
        for r in collector.records[before:]:
            e = decode(r.value)
            if e is None or not seen.first_time(e["event_id"]):
                continue
            events.append(e)
            if show == "all" or (show == "transitions" and e["regime_changed"]):
                printer(line(e))
        on_count(len(events))
    return events


def _final_metrics(port: int, dead_letters: int) -> dict:
    """The worker's figures once it has counted every bad message (they trail the last event)."""
    from devstack.stack import wait_until

    def counted() -> dict | None:
        m = scrape(port)
        return m if sum(m["dlq"].values()) >= dead_letters else None

    return wait_until(counted, 30.0, f"{dead_letters} dead letters counted by the worker")


def run_demo(opts: DemoOptions, say: Callable[[object], None], progress_console) -> dict:
    """Run the demo; returns the summary. Raises TimeoutError if the events do not all arrive in time.

    Everything it starts (Tansu, Redis, the worker, the feeder thread, Kafka clients) is stopped on every
    path, Ctrl-C and SIGTERM included; the work folder is removed after a clean run, kept (and named) after
    a failed one."""
    from ops.replay import load_series
    from regimetry.bundle import resolve_bundle_dir
    from regimetry.inference import RegimeModel

    bundle_dir = resolve_bundle_dir(locate_bundle(opts.bundle)).resolve()  # the worker runs in the demo workdir
    model = RegimeModel(bundle_dir)
    series = load_series([opts.source], [opts.symbol], opts.bars)[0]
    bad = bad_messages(series) if opts.bad_bars else []
    say(f"[bold]regimetry demo[/]: {len(series)} {series.symbol} bars, model {model.bundle.version}")

    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="regimetry-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    ok = False
    cleanup = contextlib.ExitStack()  # stops what was started, last started first
    try:
        try:
            stack, worker = _start_processes(workdir, bundle_dir, say, cleanup)
            events, seconds = _feed_and_collect(opts, stack, worker, model, series, bad, progress_console, cleanup)
            metrics = _final_metrics(worker.port, sum(BAD_BARS_EXPECTED.values()) if bad else 0)
            summary = summarize(events, series, model, metrics, len(series), len(bad), seconds)
            summary["processes"] = {"tansu": stack.kafka.pid, "redis": stack.redis.pid, "worker": worker.pid}
            audit = workdir / "audit.jsonl"
            summary["audit_log"] = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
            ok = True
            return summary
        finally:  # a second Ctrl-C (or SIGTERM) must not cut the stopping short and leave processes behind
            held = _hold_interrupts() if in_main else None
            try:
                cleanup.close()
            finally:
                if held is not None:
                    signal.signal(signal.SIGINT, held[0])
                    signal.signal(signal.SIGTERM, held[1])
    except KeyboardInterrupt:
        say("[yellow]interrupted[/]: stopped everything the demo started")
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if ok and not opts.keep_workdir and opts.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            say(f"logs kept in {workdir}")


def _start_processes(workdir: Path, bundle_dir: Path, say: Callable[[object], None], cleanup: contextlib.ExitStack):
    """Tansu and Redis, then a worker serving the bundle, once its metrics say it is ready: (stack, worker)."""
    from devstack.stack import start_stack, start_worker

    t0 = time.monotonic()
    stack = start_stack(workdir)
    cleanup.callback(stack.stop)  # the worker is one of the stack's processes: stopped with it
    say(
        f"started Tansu (Kafka) on {stack.bootstrap} (pid {stack.kafka.pid}) and Redis on port "
        f"{stack.redis.port} (pid {stack.redis.pid})"
    )
    worker = start_worker(stack, workdir, bundle=str(bundle_dir), audit_log=str(workdir / "audit.jsonl"))
    say(
        f"started worker pid {worker.pid}: metrics on http://127.0.0.1:{worker.port}/metrics "
        f"(ready in {time.monotonic() - t0:.1f} s)"
    )
    return stack, worker


def _feed_and_collect(
    opts: DemoOptions, stack, worker, model, series: BarSeries, bad: list, progress_console, cleanup
) -> tuple[list[dict], float]:
    """Replay the bars (and the bad ones) at the demo's rate while collecting the events, with two progress
    bars: (events, seconds from the first bar sent to the last event)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from devstack.kafka_kit import Collector, producer
    from ops.events_view import HEADER

    expected = max(0, len(series) - model.bundle.history_bars + 1)
    timeout = opts.timeout or 60.0 + len(series) / 100.0
    collector = Collector(stack.bootstrap, "regime-events")
    cleanup.callback(collector.close)
    prod = producer(stack.bootstrap)
    cleanup.callback(prod.close, timeout=5)
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress_console,
        transient=False,
    )
    sent_task = progress.add_task("bars -> Kafka", total=len(series) + len(bad))
    events_task = progress.add_task("events <- worker", total=expected)
    feeder = _Feeder(prod, series, bad, opts.rate, lambda n: progress.update(sent_task, completed=n))
    cleanup.callback(feeder.stopping.set)
    started = time.monotonic()
    with progress:
        if opts.show != "none":
            progress.console.print(HEADER, style="bold", soft_wrap=True)
        feeder.start()
        # soft_wrap: an event row stays one line however narrow the terminal (the terminal folds it)
        events = _collect(
            collector,
            expected,
            timeout,
            opts.show,
            feeder,
            lambda row: progress.console.print(row, soft_wrap=True),
            lambda n: progress.update(events_task, completed=n),
            worker.log,
        )
        feeder.join(timeout=30)
    return events, time.monotonic() - started
