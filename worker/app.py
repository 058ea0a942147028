"""The worker process, wired: settings, the model in force (Runtime), the Faust app, and `main`.

The loop itself (take -> process -> deliver -> ack, with the commit steps numbered) is worker/runner.py; the
processing steps are worker/pipeline.py; the send path worker/delivery.py; everything below Faust's public
API worker/kafka_boundary.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from worker import gc_pauses
from worker.runner import EXIT_BROKEN_BATCH, Runner
from worker.settings import Settings

__all__ = ["EXIT_BAD_BUNDLE", "EXIT_BROKEN_BATCH", "Runtime", "create_app", "main"]

if TYPE_CHECKING:
    from worker.pipeline import BatchProcessor
    from worker.serving import Serving

log = logging.getLogger("regimetry.worker")

EXIT_BAD_BUNDLE = 2


class Runtime:
    """Everything one worker process holds: the model in force, Redis store, metrics, the batch processor."""

    def __init__(self, settings: Settings):
        from regimetry.bundle import resolve_bundle_dir
        from worker.metrics import WorkerMetrics
        from worker.serving import load_serving
        from worker.telemetry import Telemetry
        from worker.validate import BarValidator

        self.settings = settings
        self.serving = load_serving(resolve_bundle_dir(settings.bundle), settings)
        self.metrics = WorkerMetrics(self.serving.n_clusters, settings.symbol_label_limit)
        self.telemetry = Telemetry(self.metrics)
        self.metrics.state_ttl.set(settings.state_ttl_seconds)
        self._record_model()
        self.validator = BarValidator(settings.max_payload_bytes, settings.allowed_symbols, settings.max_future_seconds)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regimetry-infer")
        self.processor: BatchProcessor | None = None
        self.pending: Serving | None = None  # a verified Serving waiting for the next batch boundary
        self.connected = False
        self.assigned = False

    @property
    def model(self):
        return self.serving.model

    def _record_model(self) -> None:
        b = self.serving.model.bundle
        self.metrics.set_model(b.manifest)
        if self.serving.detectors:
            log.info(
                "drift alarms of %s on: CUSUM per symbol on %s -> %s",
                b.version,
                ", ".join(sorted(self.serving.detectors)),
                self.settings.drift_topic,
            )
        else:
            log.warning(
                "bundle %s has no calibrated drift alarms (no drift_alarms section in its manifest: trained "
                "before them): drift detectors off, nothing is sent to %s",
                b.version,
                self.settings.drift_topic,
            )
        if self.settings.audit_log:
            from regimetry.audit import record_model_load

            record_model_load(self.settings.audit_log, b.manifest, b.path, group_id=self.settings.group_id)

    async def connect(self) -> None:
        """Open Redis and load the scripts, retrying with back-off until Redis answers."""
        from worker.client_security import redis_client
        from worker.log_reader import LogReader
        from worker.pipeline import BatchProcessor
        from worker.redis_store import RedisStore

        if self.processor is not None:
            return
        s, sv = self.settings, self.serving
        store = RedisStore(
            redis_client(s), s.key_prefix, sv.history, sv.keep_emb, s.dedupe_window, sv.version, s.state_ttl_seconds
        )
        processor = BatchProcessor(
            sv,
            store,
            self.validator,
            self.telemetry,
            self.executor,
            s.max_payload_bytes,
            s.redis_retry_max_seconds,
            LogReader(s),
            s.max_future_bars,
            s.state_cache_symbols,
            s.state_cache_verify,
        )
        await processor._with_redis(lambda _: store.load_scripts(), None)
        self.processor = processor
        self.connected = True
        self._update_ready()

    async def check_for_new_bundle(self) -> None:
        """Hot reload, step 1: if the bundle setting now resolves elsewhere (CURRENT pointer moved), verify
        and open the new bundle off the event loop. A bundle that fails verification is refused, logged and
        counted; the current model keeps serving."""
        from regimetry.bundle import BundleError, resolve_bundle_dir
        from worker.serving import load_serving

        try:
            target = resolve_bundle_dir(self.settings.bundle).resolve()
            current = (self.pending or self.serving).path
            if target == current:
                return
            loop = asyncio.get_running_loop()
            self.pending = await loop.run_in_executor(None, load_serving, target, self.settings)
            log.info("bundle %s verified; switching at the next batch boundary", self.pending.version)
        except (BundleError, ValueError, OSError) as exc:
            self.metrics.reload_failures.inc()
            log.error("new bundle refused, still serving %s: %s", self.serving.version, exc)

    def apply_pending(self) -> None:
        """Hot reload, step 2 (between batches): serve the verified new bundle from now on."""
        if self.pending is None or self.processor is None:
            return
        old, self.serving, self.pending = self.serving, self.pending, None
        self.processor.use(self.serving)
        self._record_model()
        log.info("model switched from %s to %s", old.version, self.serving.version)

    async def process(self, messages, checked):
        """Commit step 1 of one batch (worker/runner.py): the bundle in force (a verified new one switches
        here, between batches), then plan, infer, store and build (worker/pipeline.py)."""
        self.apply_pending()
        assert self.processor is not None, "batches are taken only once connected"
        return await self.processor.compute(messages, checked)

    async def close(self) -> None:
        """What connect opened beside Faust: the log reader's consumer."""
        if self.processor is not None and self.processor.log_reader is not None:
            await self.processor.log_reader.close()

    def on_assigned(self) -> None:
        self.assigned = True
        self._update_ready()

    def _update_ready(self) -> None:
        if self.connected and self.assigned:
            if not self.metrics.ready._value.get():
                from worker import startup_clock

                startup_clock.mark("Faust start, Redis scripts and group join")
                self.metrics.gc_frozen.set(gc_pauses.freeze_startup_heap())  # full collections ~60 -> ~1 ms
                took = startup_clock.phases()
                for phase, seconds in took.items():
                    self.metrics.startup.labels(phase=phase).set(seconds)
                log.info(
                    "regimetry worker ready: model %s, metrics on %s:%d; start-up %.1f s: %s",
                    self.model.bundle.version,
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                    sum(took.values()),
                    ", ".join(f"{p} {s:.2f} s" for p, s in took.items()),
                )
            self.metrics.ready.set(1)

    def record(self, out, started: float) -> None:
        """A delivered batch's telemetry: every metric and drift update, one call (worker/telemetry.py)."""
        self.telemetry.record(out, started)


def _scratch_dir() -> str:
    """Faust wants a data folder even without tables; ours holds nothing worth keeping, so it goes at exit."""
    import atexit
    import shutil

    path = tempfile.mkdtemp(prefix="regimetry-faust-")
    atexit.register(shutil.rmtree, path, True)
    return path


def create_app(settings: Settings, runtime: Runtime):
    """The Faust app, wired: bars topic -> Runner (worker/runner.py) -> regime-events, regime-drift,
    regime-transitions / bars-dlq.

    Raw (bytes) serializers, so malformed JSON reaches our validator, not Faust's. With direct records (the
    default) the app has its own consumer (worker/kafka_boundary.py) that hands the bars topic's fetched
    records to `Runner.accept`; otherwise (stock Faust) the agent reads them from its stream."""
    import faust

    from worker import kafka_boundary
    from worker.batching import MicroBatcher
    from worker.client_security import faust_credentials
    from worker.delivery import Delivery, RecordBatchSender, StockSender

    direct = settings.direct_records
    # stock Faust (direct_records false) keeps Faust's own Monitor too: nothing of kafka_boundary is used
    extra: dict[str, Any] = {"Monitor": kafka_boundary.quiet_monitor()} if direct else {}
    if settings.group_instance_id:  # static membership: a restart under this id skips the session timeout
        extra["consumer_group_instance_id"] = settings.group_instance_id
    app = faust.App(
        settings.group_id,
        broker=settings.faust_broker,
        broker_credentials=faust_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=os.environ.get("REGIMETRY_DATADIR") or _scratch_dir(),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=settings.commit_interval,
        producer_acks=-1,
        producer_linger=0.0,  # no wait for company on the way out either (Faust's default, made explicit)
        producer_max_batch_size=settings.producer_batch_bytes,
        topic_allow_declare=True,
        **extra,
    )
    bars = app.topic(settings.bars_topic, key_type=bytes, value_type=bytes)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # Faust awaits async receivers too
    async def _assigned(sender, assigned, **kwargs) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        # Faust passes the whole new assignment: whatever is not in it was revoked
        dropped = runtime.metrics.keep_partitions({(tp.topic, tp.partition) for tp in assigned})
        if dropped:
            log.info(
                "no longer reporting regimetry_current_regime for %d symbol(s) whose partitions moved", len(dropped)
            )
        runtime.on_assigned()

    if settings.reload_interval > 0:
        app.timer(settings.reload_interval)(runtime.check_for_new_bundle)

    delivery = Delivery(RecordBatchSender(app) if direct else StockSender(app), settings.redis_retry_max_seconds)
    runner = Runner(
        MicroBatcher(settings.batch_size, settings.batch_within),
        check=runtime.validator.check,
        process=runtime.process,
        deliver=lambda out: delivery.deliver(
            out.messages(settings.events_topic, settings.dlq_topic, settings.drift_topic, settings.transitions_topic)
        ),
        ack=lambda message: app.consumer.ack(message),
        record=runtime.record,
    )

    async def accept(messages: list) -> None:  # the consumer's sink for the bars topic (direct records)
        await runner.accept(messages, track=app.consumer.track_message)
        runtime.metrics.buffered.set(len(runner.batches))

    if direct:
        kafka_boundary.install(app, settings.fetch_max_wait_ms, {settings.bars_topic: accept})
    transport = type(app.transport)
    log.info(
        "bar records go %s; consumer transport %s.%s",
        "straight from the consumer into the micro-batch buffer"
        if direct
        else "through Faust's agent stream into the micro-batch buffer (stock Faust, public API only)",
        transport.__module__,
        transport.__qualname__,
    )

    @app.agent(bars, name="regimetry-bars")
    async def consume(stream) -> None:
        """Subscribes the bars topic (so the group assigns its partitions) and runs the runner for as long as
        Faust runs this agent. Stock Faust: the records come through this stream (Faust's conductor tracked
        them already); acks are the runner's, after the broker confirmed the output."""
        await runtime.connect()
        running = asyncio.ensure_future(runner.run())
        try:
            if direct:
                await running
            else:
                stream.enable_acks = False
                async for event in stream.events():
                    await runner.accept([event.message])
                    runtime.metrics.buffered.set(len(runner.batches))
        finally:
            if not running.done():  # shutting down: finish the batch in flight (its acks precede the commit)
                running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await runtime.close()

    return app


def main() -> int:
    """Entry point of `python -m worker` and `regimetry worker`."""
    from regimetry.bundle import BundleError
    from worker import startup_clock
    from worker.settings import SettingsError, load_settings

    startup_clock.mark("imports")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"regimetry worker: {exc}", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("settings: %s", settings.redacted())
    if settings.classify_threads != 1:
        log.warning(
            "REGIMETRY_CLASSIFY_THREADS=%d has no effect: regimes come from the jump decoder, the kNN "
            "classifier is no longer on the serving path",
            settings.classify_threads,
        )
    from worker.logfilter import limit_kafka_log_repeats

    limit_kafka_log_repeats()
    try:
        runtime = Runtime(settings)
    except (BundleError, ValueError) as exc:
        print(f"regimetry worker: refusing to start: {exc}", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    startup_clock.mark("bundle load and ONNX Runtime warm-up")
    from worker.preflight import PreflightError, check_dependencies

    try:
        asyncio.run(check_dependencies(settings))
    except PreflightError as exc:
        print(f"regimetry worker: {exc}", file=sys.stderr)
        return exc.exit_code
    startup_clock.mark("Redis and broker connection")
    runtime.metrics.serve(settings.metrics_host, settings.metrics_port)
    gc_pauses.watch(lambda generation, seconds: runtime.metrics.gc_pause.labels(str(generation)).observe(seconds))
    app = create_app(settings, runtime)
    startup_clock.mark("Faust import and app wiring")
    import faust

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner, active at log levels WARNING and above, sets the root logger to DEBUG so it
    # can spin on every record: every aiokafka debug line (one per produced event) then becomes a LogRecord,
    # ~4 % of the worker's CPU at full load. A service has no terminal to spin on.
    worker.spinner = None
    worker.execute_from_commandline()  # exits the process with Faust's exit code
    return 0
