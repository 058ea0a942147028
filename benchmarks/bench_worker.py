"""Worker benchmark on the embedded stack (Tansu + Redis + one `python -m worker` process).

Prints: worker start-up time; sustained end-to-end bars/s two ways: "live" (N bars for M symbols pushed as
fast as this script's producer can while the worker consumes, timed until the worker has delivered every
event) and "backlog" (the worker is paused with SIGSTOP while the bars are produced, then resumed and timed
until every event is delivered: the worker's own capacity, without our producer competing for the same two
cores); CPU seconds per 1,000 bars of each process (worker, broker, Redis, this script) so the limit is
visible; bar-to-event latency p50/p99 at a fixed offered rate; worker RSS; the pure batched inference rate
of the same bundle (encoder, regime costs, jump decoder over `memory` costs, OOD, forecaster and the decoder
one step ahead, on in-memory windows, same thread count) and the ratio end-to-end / pure inference.

    python benchmarks/bench_worker.py --symbols 20 --bars 2500 --rate 1000 --seconds 10

This is a measurement script, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

from worker.blas_threads import pin_math_threads

pin_math_threads()  # the same BLAS setting as the worker process, so "pure inference" is comparable

import argparse
import json
import os
import re
import resource
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from devstack.kafka_kit import interleave, produce, producer, series_messages
from devstack.stack import metric_value, metrics_text, start_stack, start_worker, wait_until
from regimetry.bundle import resolve_bundle_dir
from regimetry.features import scaled_windows
from regimetry.inference import RegimeModel
from regimetry.synthetic import generate_bars


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def make_messages(prefix: str, symbols: int, bars: int, seed: int) -> list[tuple[bytes, bytes]]:
    streams = []
    for i in range(symbols):
        b = generate_bars(n_bars=bars, seed=seed + i, symbol=f"{prefix}{i:03d}").bars
        streams.append(series_messages(b.symbol, b.times, b.values))
    return interleave(*streams)


def emitted(port: int) -> float:
    return metric_value(metrics_text(port), "regimetry_events_emitted_total") or 0.0


# Polling /metrics costs the worker CPU (every scrape renders every family), so poll a few times a second,
# not continuously: the timing error is at most one interval over runs of tens of seconds.
POLL_SECONDS = 0.2


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (None: this process)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by each named process inside a `with` block (None: this process)."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.used = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}

    def report(self, bars: int) -> str:
        parts = [
            f"{name} {sec * 1e6 / bars:.0f} us ({sec / self.wall:.0%} of a core)" for name, sec in self.used.items()
        ]
        return "CPU per bar: " + ", ".join(parts)


def send_all(stack, msgs) -> None:
    """All messages to `bars` with large producer batches, so our producer is not what limits the run."""
    prod = producer(stack.bootstrap, batch_size=262_144, linger_ms=20)
    try:
        produce(stack.bootstrap, "bars", msgs, prod)
    finally:
        prod.close()


def throughput(stack, worker, msgs, n_events: int, timeout: float) -> float:
    """Bars/s from the first send until the worker has delivered every event of these bars."""
    before = emitted(worker.port)
    t0 = time.perf_counter()
    send_all(stack, msgs)
    wait_until(
        lambda: emitted(worker.port) >= before + n_events, timeout, "all events delivered", interval=POLL_SECONDS
    )
    return len(msgs) / (time.perf_counter() - t0)


def backlog(stack, worker, msgs, n_events: int, timeout: float, meter: CpuMeter) -> float:
    """Bars/s of a paused worker catching up on a backlog produced while it was stopped."""
    before = emitted(worker.port)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        send_all(stack, msgs)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    with meter:
        wait_until(lambda: emitted(worker.port) >= before + n_events, timeout, "backlog drained", interval=POLL_SECONDS)
    return len(msgs) / meter.wall


def latency(stack, worker, msgs, rate: float, history: int, symbols: int, timeout: float) -> dict:
    """Send at a fixed rate; latency = event CreateTime (worker send) - bar CreateTime (our send)."""
    from kafka import KafkaConsumer

    sent: dict[tuple[str, int], float] = {}
    prod = producer(stack.bootstrap, linger_ms=0)
    consumer = KafkaConsumer(
        "regime-events",
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=10,
    )
    consumer.poll(timeout_ms=500)  # join and position at the end before sending
    wait_until(lambda: consumer.assignment(), 10, "latency consumer assigned")
    lat: list[float] = []
    want = {f"LAT{i:03d}" for i in range(symbols)}

    def send() -> None:
        t0 = time.perf_counter()
        for i, (key, value) in enumerate(msgs):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:  # pacing the offered load (this is the rate itself, not a wait for a result)
                time.sleep(wait)
            doc = json.loads(value)
            sent[(doc["symbol"], doc["time"])] = time.time()
            prod.send("bars", key=key, value=value, timestamp_ms=int(time.time() * 1000))
        prod.flush()

    sender = threading.Thread(target=send)
    sender.start()
    expected = len(msgs) - symbols * (history - 1)
    deadline = time.monotonic() + timeout
    while len(lat) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=50).values():
            for r in batch:
                e = json.loads(r.value)
                if e["symbol"] in want and (e["symbol"], e["bar_time"]) in sent:
                    lat.append(r.timestamp / 1000.0 - sent[(e["symbol"], e["bar_time"])])
    sender.join()
    consumer.close()
    prod.close()
    a = np.asarray(lat)
    return {
        "events": len(a),
        "expected": expected,
        "p50_ms": float(np.percentile(a, 50) * 1e3),
        "p99_ms": float(np.percentile(a, 99) * 1e3),
        "max_ms": float(a.max() * 1e3),
    }


def pure_inference(bundle: Path, threads: int, n: int, batch: int) -> float:
    """Bars/s of what the worker computes per bar, on precomputed windows and embedding histories: encoder,
    regime geometry and costs, the decoder over each bar's last `memory` costs, OOD, forecaster, the decoder
    one step ahead of the forecast."""
    model = RegimeModel(bundle, threads=threads)
    b, dec = model.bundle, model.decoder
    bars = generate_bars(n_bars=n + b.history_bars, seed=5).bars.values
    wins = scaled_windows(bars, b.spec, b.scaler, b.window_size)[:n]
    z_hist = np.ascontiguousarray(
        np.random.default_rng(0).standard_normal((batch, b.input_length, b.manifest["embedding_dim"])), np.float32
    )
    stored = np.zeros((0, b.n_clusters))

    def step(w_: np.ndarray) -> None:
        nonlocal stored
        z = model.embed(w_)
        g = model.geometry(w_, z)
        costs = model.costs(g)
        values = dec.values_at(dec.sequence(stored, costs), np.arange(len(costs)))
        stored = np.concatenate([stored, costs])[-(dec.memory - 1) :]
        dec.proba(values)
        model.ood(g)
        nxt = model.next_values(values, w_, model.forecast(z_hist))
        dec.proba(nxt)

    step(wins[:batch])  # warm-up
    t0 = time.perf_counter()
    done = 0
    for i in range(0, len(wins) - batch + 1, batch):
        step(wins[i : i + batch])
        done += batch
    return done / (time.perf_counter() - t0)


def latency_run(stack, worker, args, history: int) -> dict:
    """The latency at ``args.rate``, with the CPU each process used meanwhile: on a small machine the broker,
    Redis, this script's producer and consumer and the worker share the cores, and once they are busy every
    bar queues for CPU (the figure then measures the machine's saturation, not the worker's path)."""
    n_lat = int(args.rate * args.seconds)
    lat_symbols = max(1, min(args.symbols, n_lat // (history + 50)))
    lat_msgs = make_messages("LAT", lat_symbols, n_lat // lat_symbols, seed=2000)
    pids = {"worker": worker.pid, "broker": stack.kafka.pid, "redis": stack.redis.pid, "bench": None}
    with CpuMeter(pids) as cpu:
        lat = latency(stack, worker, lat_msgs, args.rate, history, lat_symbols, args.seconds + 60)
    print(
        f"latency at {args.rate:,.0f} bars/s offered ({lat['events']}/{lat['expected']} events): "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
    )
    busy = sum(cpu.used.values()) / cpu.wall
    print(f"  {cpu.report(len(lat_msgs))}; all together {busy:.0%} of a core, {os.cpu_count()} cores")
    lat["cpu_share"] = {name: sec / cpu.wall for name, sec in cpu.used.items()}
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="exported_models")
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--bars", type=int, default=5000, help="bars per symbol for each throughput run")
    ap.add_argument("--rate", type=float, default=1000.0, help="offered bars/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument(
        "--within", type=float, default=0.0, help="seconds a partial micro-batch may wait to fill (worker default 0)"
    )
    ap.add_argument("--ort-threads", type=int, default=1)
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=None,
        help="the worker's REGIMETRY_FETCH_MAX_WAIT_MS (default: its own)",
    )
    ap.add_argument(
        "--latency-only", action="store_true", help="skip start-up, throughput and pure inference: latency only"
    )
    args = ap.parse_args()
    tuning = {} if args.fetch_max_wait_ms is None else {"fetch_max_wait_ms": args.fetch_max_wait_ms}

    bundle = resolve_bundle_dir(args.bundle).resolve()
    history = RegimeModel(bundle).bundle.history_bars
    work = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    print(f"bundle {bundle.name}, history {history} bars; workdir {work}")
    with start_stack(
        work, {"bars": 4, "regime-events": 4, "regime-drift": 4, "regime-transitions": 4, "bars-dlq": 1}
    ) as stack:
        if not args.latency_only:
            t0 = time.perf_counter()
            first = start_worker(stack, work, name="startup", bundle=str(bundle), log_level="warning")
            startup = time.perf_counter() - t0
            print(f"worker start-up (spawn -> ready, default settings): {startup:.1f} s")
            split = re.findall(r'regimetry_startup_seconds\{phase="([^"]+)"\} (\S+)', metrics_text(first.port))
            print("  " + ", ".join(f"{phase} {float(v):.2f} s" for phase, v in split))
            first.stop()
        # the measured worker stays in the group while paused with SIGSTOP for the backlog run
        worker = start_worker(
            stack,
            work,
            bundle=str(bundle),
            batch_size=args.batch_size,
            batch_within=args.within,
            ort_threads=args.ort_threads,
            dedupe_window=history,
            log_level="warning",
            session_timeout=20,
            **tuning,
        )
        warm = make_messages("WARM", 4, history + 200, seed=900)
        throughput(stack, worker, warm, len(warm) - 4 * (history - 1), 120)
        if args.latency_only:
            latency_run(stack, worker, args, history)
            worker.stop()
            return

        pids = {"worker": worker.pid, "broker": stack.kafka.pid, "redis": stack.redis.pid, "bench": None}
        msgs = make_messages("TPUT", args.symbols, args.bars, seed=1000)
        n_events = len(msgs) - args.symbols * (history - 1)
        with CpuMeter(pids) as live_cpu:
            rate_live = throughput(stack, worker, msgs, n_events, 600)
        print(
            f"sustained end to end, live producer: {rate_live:,.0f} bars/s ({len(msgs):,} bars, "
            f"{args.symbols} symbols, {n_events:,} events)"
        )
        print("  " + live_cpu.report(len(msgs)))
        msgs = make_messages("BACK", args.symbols, args.bars, seed=3000)
        drain_cpu = CpuMeter(pids)
        rate = backlog(stack, worker, msgs, n_events, 600, drain_cpu)
        print(
            f"sustained end to end, backlog: {rate:,.0f} bars/s ({len(msgs):,} bars produced while the worker "
            f"was paused)"
        )
        print("  " + drain_cpu.report(len(msgs)))
        text = metrics_text(worker.port)
        batches = metric_value(text, "regimetry_batch_size_count")
        bars_in = metric_value(text, "regimetry_bars_consumed_total")
        infer = metric_value(text, "regimetry_inference_latency_seconds_sum")
        batch_sum = metric_value(text, "regimetry_batch_latency_seconds_sum")
        print(
            f"worker: {bars_in:,.0f} bars in {batches:,.0f} batches (mean {bars_in / batches:.0f}); "
            f"inference {infer:.1f} s of {batch_sum:.1f} s in batch handling"
        )

        latency_run(stack, worker, args, history)
        rss, peak = rss_mb(worker.pid)
        print(f"worker RSS: {rss:.0f} MiB (peak {peak:.0f} MiB)")
        worker.stop()

    pure = pure_inference(bundle, args.ort_threads, 20_000, args.batch_size)
    print(f"pure batched inference ({args.ort_threads} thread(s), batch {args.batch_size}): {pure:,.0f} bars/s")
    print(f"ratio end-to-end / pure inference: {rate / pure:.2f} backlog, {rate_live / pure:.2f} live")


if __name__ == "__main__":
    main()
