"""The Faust application: bars topic -> micro-batches -> BatchProcessor -> regime-events / bars-dlq.

Records of the bars topic go from Faust's consumer into a micro-batch buffer (worker/batching.py, via
worker/kafka_boundary.deliver_records_to), where they are tracked as unacknowledged; Faust commits no offset
past an unacknowledged record. A batch's records are acknowledged only after Redis holds the batch and the
broker has confirmed every event and dead letter it produced. A crash anywhere before that leaves the
offsets uncommitted and the batch is redelivered; the Redis state turns the redelivery into byte-identical
re-emissions. Exactly-once and idempotent producers are deliberately not used (Tansu does not support them,
and the event id already makes duplicates harmless for subscribers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from worker.settings import Settings

if TYPE_CHECKING:
    from worker.pipeline import BatchProcessor
    from worker.serving import Serving

log = logging.getLogger("regimetry.worker")

EXIT_BAD_BUNDLE = 2
EXIT_BROKEN_BATCH = 70  # EX_SOFTWARE: a bug while processing; exit without acknowledging the batch


class Runtime:
    """Everything one worker process holds: the model in force, Redis store, metrics, the batch processor."""

    def __init__(self, settings: Settings):
        from regimetry.bundle import resolve_bundle_dir
        from worker.metrics import WorkerMetrics
        from worker.serving import load_serving
        from worker.validate import BarValidator

        self.settings = settings
        self.serving = load_serving(resolve_bundle_dir(settings.bundle), settings)
        self.metrics = WorkerMetrics(self.serving.n_clusters, settings.symbol_label_limit)
        self._record_model()
        self.validator = BarValidator(settings.max_payload_bytes, settings.allowed_symbols, settings.max_future_seconds)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regimetry-infer")
        self.processor: BatchProcessor | None = None
        self.pending: Serving | None = None  # a verified Serving waiting for the next batch boundary
        self.connected = False
        self.assigned = False
        self._partitions: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition of keyed sends
        self._topics_ready: set[str] = set()  # topics whose metadata the producer has

    @property
    def model(self):
        return self.serving.model

    def _record_model(self) -> None:
        b = self.serving.model.bundle
        self.metrics.set_model(b.manifest)
        if self.settings.audit_log:
            from regimetry.audit import record_model_load

            record_model_load(self.settings.audit_log, b.manifest, b.path, group_id=self.settings.group_id)

    async def connect(self) -> None:
        """Open Redis and load the scripts, retrying with back-off until Redis answers."""
        from worker.client_security import redis_client
        from worker.pipeline import BatchProcessor
        from worker.redis_store import RedisStore

        if self.processor is not None:
            return
        s, sv = self.settings, self.serving
        store = RedisStore(redis_client(s), s.key_prefix, sv.history, sv.keep_emb, s.dedupe_window, sv.version)
        processor = BatchProcessor(
            sv, store, self.validator, self.metrics, self.executor, s.max_payload_bytes, s.redis_retry_max_seconds
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

    def on_assigned(self) -> None:
        self.assigned = True
        self._update_ready()

    def _update_ready(self) -> None:
        if self.connected and self.assigned:
            if not self.metrics.ready._value.get():
                log.info(
                    "regimetry worker ready: model %s, metrics on %s:%d",
                    self.model.bundle.version,
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                )
            self.metrics.ready.set(1)

    async def confirm(self, app, out, t0: float) -> None:
        """Stage 2: send the batch's events and dead letters and wait until the broker confirmed them all.
        It overlaps stage 1 of the next batch, whose sends start only after this returns, so the output
        topics keep bar order per symbol even when a send has to be repeated."""
        s = self.settings
        messages = [(s.events_topic, key, value) for key, value in out.events]
        messages += [(s.dlq_topic, key, value) for key, value, _ in out.dead]
        await self._deliver(app, messages)
        now = time.time()
        m = self.metrics
        m.events_emitted.inc(len(out.events))
        m.events_reemitted.inc(out.reemitted)
        m.duplicates.inc(out.duplicates)
        m.bars_warming.inc(out.warming)
        for reason, n in Counter(reason for _, _, reason in out.dead).items():
            m.dead_lettered.labels(reason=reason).inc(n)
        for ts in out.new_event_timestamps:
            m.e2e_latency.observe(max(now - ts, 0.0))
        m.batch_latency.observe(time.perf_counter() - t0)
        m.set_drift(self.serving.drift.snapshot())

    async def _send_stock(self, app, messages: list[tuple[str, bytes | None, bytes]]) -> list:
        """Stock Faust (REGIMETRY_DIRECT_RECORDS=false): one public ``producer.send`` per message, in order."""
        return [
            await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)
            for topic, key, value in messages
        ]

    async def _deliver(self, app, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        """Send and await broker acknowledgement; on failure resend everything (duplicates are harmless,
        losses are not) with capped back-off."""
        delay = 0.1
        while True:
            try:
                send = self._send_batches if self.settings.direct_records else self._send_stock
                await asyncio.gather(*await send(app, messages))
                return
            except Exception as exc:  # broker trouble: keep the batch unacknowledged and try again
                log.warning("sending %d messages failed (%r); retrying in %.1f s", len(messages), exc, delay)
                self._partitions.clear()  # the topic may have changed (re-created with other partitions)
                self._topics_ready.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.redis_retry_max_seconds)

    async def _send_batches(self, app, messages: list[tuple[str, bytes | None, bytes]]) -> list:
        """Queue the messages as one record batch per partition (in order) and return the delivery futures.

        Why not one producer.send per message: each send is a coroutine, a future, a partitioner hash and a
        debug line, ~25 us of event-loop time per event at full load; a record batch takes an append per
        message. Partitions come from the same default partitioner a keyed send uses (murmur2 of the key,
        via Faust's key_partition), cached per key, so events land where a keyed send would put them."""
        from worker.kafka_boundary import aiokafka_producer

        producer = aiokafka_producer(app)  # the aiokafka producer Faust started and stops
        for topic in {topic for topic, _, _ in messages} - self._topics_ready:
            await producer.partitions_for(topic)  # waits for the topic's metadata, as a keyed send would
            self._topics_ready.add(topic)
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value in messages:
            by_partition.setdefault((topic, self._partition(app, topic, key)), []).append((key, value))
        futures = []
        for (topic, partition), items in by_partition.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send, start another
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def _partition(self, app, topic: str, key: bytes | None) -> int:
        if key is None:  # keyless (a dead letter without a key): the partitioner picks one
            return app.producer.key_partition(topic, key).partition
        cached = self._partitions.get((topic, key))
        if cached is None:
            cached = self._partitions[(topic, key)] = app.producer.key_partition(topic, key).partition
        return cached


def _scratch_dir() -> str:
    """Faust wants a data folder even without tables; ours holds nothing worth keeping, so it goes at exit."""
    import atexit
    import shutil

    path = tempfile.mkdtemp(prefix="regimetry-faust-")
    atexit.register(shutil.rmtree, path, True)
    return path


def create_app(settings: Settings, runtime: Runtime):
    """The Faust app with raw (bytes) serializers, so malformed JSON reaches our validator, not Faust's."""
    import faust

    from worker import kafka_boundary
    from worker.batching import MicroBatcher
    from worker.client_security import faust_credentials

    direct = settings.direct_records
    # stock Faust (direct_records false) keeps Faust's own Monitor too: nothing of kafka_boundary is used
    extra: dict[str, Any] = {"Monitor": kafka_boundary.quiet_monitor()} if direct else {}
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

    batches: MicroBatcher = MicroBatcher(settings.batch_size, settings.batch_within)

    async def accept(messages: list) -> None:
        """Take fetched bar messages into the micro-batch buffer (waiting while it is full, which holds the
        consumer back) and track them, so Faust commits no offset past them until `ack`."""
        track, check = app.consumer.track_message, runtime.validator.check

        def prepare(piece: list) -> list:
            for message in piece:
                track(message)
            return [(message, check(message.key, message.value)) for message in piece]

        await batches.feed(messages, prepare)
        runtime.metrics.buffered.set(len(batches))

    if direct:  # this app's own consumer (worker/kafka_boundary.py); stock Faust otherwise
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
        """Subscribes the bars topic and runs the pipeline for as long as Faust runs this agent. Records reach
        `accept` straight from the consumer (worker/kafka_boundary.py); only if that could not be installed do
        they come through this stream."""
        await runtime.connect()
        pipeline = asyncio.ensure_future(_pipeline())
        try:
            if direct:
                await pipeline
            else:
                stream.enable_acks = False  # acked by _confirm_and_ack, after the broker confirmed the output
                async for event in stream.events():
                    await accept([event.message])
        finally:
            if not pipeline.done():  # shutting down: finish the batch in flight (its acks precede the commit)
                pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pipeline

    async def _pipeline() -> None:
        """Two stages: while the broker confirms batch N's output, batch N+1 is inferred and stored;
        meanwhile the consumer validates batch N+2's records into the buffer. Batch N+1's sends start only
        after N is confirmed, so the output keeps bar order per symbol even when a send is repeated."""
        confirming: asyncio.Task | None = None
        try:
            while True:
                batch = await batches.take()
                runtime.metrics.buffered.set(len(batches))
                t0 = time.perf_counter()
                out = await _unless_broken(_process(batch))
                if confirming is not None:
                    await confirming
                confirming = asyncio.ensure_future(_unless_broken(_confirm_and_ack(batch, out, t0)))
        finally:
            if confirming is not None:
                await asyncio.wait_for(asyncio.shield(confirming), timeout=30)

    async def _process(batch: list):
        runtime.apply_pending()
        messages, checked = zip(*batch)  # Faust messages carry every field of a Record: no copy per bar
        assert runtime.processor is not None, "batches are taken only once connected"
        return await runtime.processor.process(messages, checked)

    async def _confirm_and_ack(batch: list, out, t0: float) -> None:
        await runtime.confirm(app, out, t0)
        ack = app.consumer.ack
        for message, _ in batch:
            ack(message)

    return app


async def _unless_broken(awaitable):
    """Await a pipeline stage; a bug (input never raises) exits the process without acknowledging anything,
    so the supervisor restarts the worker and the batches are redelivered. A shutdown lets the stage finish."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait_for(task, timeout=30)
        raise
    except Exception:
        log.exception("micro-batch failed; exiting without acknowledging it")
        logging.shutdown()
        os._exit(EXIT_BROKEN_BATCH)


def main() -> int:
    """Entry point of `python -m worker` and `regimetry worker`."""
    from regimetry.bundle import BundleError
    from worker.settings import SettingsError, load_settings

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
    from worker.preflight import PreflightError, check_dependencies

    try:
        asyncio.run(check_dependencies(settings))
    except PreflightError as exc:
        print(f"regimetry worker: {exc}", file=sys.stderr)
        return exc.exit_code
    runtime.metrics.serve(settings.metrics_host, settings.metrics_port)
    app = create_app(settings, runtime)
    import faust

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner, active at log levels WARNING and above, sets the root logger to DEBUG so it
    # can spin on every record: every aiokafka debug line (one per produced event) then becomes a LogRecord,
    # ~4 % of the worker's CPU at full load. A service has no terminal to spin on.
    worker.spinner = None
    worker.execute_from_commandline()  # exits the process with Faust's exit code
    return 0
