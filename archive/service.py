"""The archiver: bars topic -> validated, de-duplicated bars -> Parquet files -> committed offsets.

One loop, in this order, so that a SIGKILL anywhere loses nothing and duplicates nothing:

1. fetch records (aiokafka, consumer group ``archive_group_id``, no auto-commit);
2. validate each (worker/validate.py); a bad bar is counted by reason and skipped (the worker dead-letters it);
   a good bar whose (symbol, time) the dataset or the buffer already holds is counted as a duplicate;
3. when ``archive_flush_bars`` bars are buffered or ``archive_flush_seconds`` have passed: write them (one file
   per symbol and date, each renamed into place after an fsync: archive/dataset.py), *then* commit the offsets
   of every record consumed so far; a rebalance and a shutdown flush first;
4. every so often, merge small files (compaction, crash-safe too).

At start it recovers the dataset (temporary files of a crashed write deleted, an interrupted compaction
finished) and loads the (symbol, time) index of what it holds, so records re-read after a crash between a
write and its commit are recognised and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from aiokafka import ConsumerRebalanceListener

from archive.settings import ArchiveSettings
from connect.kafka import aiokafka_kwargs, bootstrap_servers
from regimetry.bar_archive import ArchiveDataset, ArchivedBar, crash_point

log = logging.getLogger("regimetry.archive")

EXIT_SETTINGS = 2


class ArchiveMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        r = self.registry = CollectorRegistry()
        self.archived = Counter("regimetry_archive_bars_archived_total", "Bars written to the archive", registry=r)
        self.duplicates = Counter(
            "regimetry_archive_duplicates_total", "Good bars already archived (same symbol and bar time)", registry=r
        )
        self.rejected = Counter(
            "regimetry_archive_bars_rejected_total", "Bad bars not archived, by reason", ["reason"], registry=r
        )
        self.files = Counter("regimetry_archive_files_written_total", "Parquet files written", registry=r)
        self.compactions = Counter("regimetry_archive_compactions_total", "Folders compacted", registry=r)
        self.lag = Gauge("regimetry_archive_lag_records", "Records on the bars topic not yet archived", registry=r)
        self.last_flush = Gauge(
            "regimetry_archive_last_flush_timestamp_seconds", "When bars were last written and committed", registry=r
        )
        self.ready = Gauge("regimetry_archive_ready", "1 once partitions are assigned", registry=r)

    def serve(self, host: str, port: int):
        """Serve /metrics on a daemon thread; returns (server, thread) so a caller may shut it down."""
        from prometheus_client import start_http_server

        return start_http_server(port, host, registry=self.registry)


class Archiver:
    """The loop of the module docstring; ``run`` returns after ``stop`` (flushing first)."""

    def __init__(self, settings: ArchiveSettings, metrics: ArchiveMetrics | None = None):
        from worker.validate import BarValidator

        self.s = settings
        self.metrics = metrics or ArchiveMetrics()
        self.dataset = ArchiveDataset(settings.archive_dir)
        self.validator = BarValidator(settings.max_payload_bytes, settings.allowed_symbols, settings.max_future_seconds)
        self.known: dict[str, set[int]] = {}
        self.buffer: list[ArchivedBar] = []
        self.buffered: set[tuple[str, int]] = set()
        self.positions: dict = {}  # TopicPartition -> next offset to commit
        self.dirty = False  # records consumed since the last commit
        self.first_buffered_at: float | None = None
        self.flushes = 0
        self._stop = asyncio.Event()
        self.consumer = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        recovered = self.dataset.recover()
        if any(recovered.values()):
            log.warning("recovered the archive after a crash: %s", recovered)
        self.known = self.dataset.known_times()
        log.info(
            "archive %s holds %d bars of %d symbol(s)",
            self.dataset.root,
            sum(len(v) for v in self.known.values()),
            len(self.known),
        )
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.s.broker_url),
            group_id=self.s.archive_group_id,
            enable_auto_commit=False,
            session_timeout_ms=int(self.s.archive_session_timeout * 1000),
            heartbeat_interval_ms=max(int(self.s.archive_session_timeout * 1000 / 5), 100),
            auto_offset_reset="earliest",
            **aiokafka_kwargs(self.s),
        )
        await consumer.start()
        consumer.subscribe([self.s.bars_topic], listener=_Rebalance(self))
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.s.archive_flush_bars)
                for tp, records in batches.items():
                    for rec in records:
                        self._take(rec)
                        self.positions[tp] = rec.offset + 1
                        self.dirty = True
                if self._due():
                    await self.flush()
                    self._update_lag()
        finally:
            try:
                await self.flush()
            finally:
                await consumer.stop()

    def _take(self, rec) -> None:
        from worker.validate import Rejection

        result = self.validator.check(rec.key, rec.value)
        if isinstance(result, Rejection):
            self.metrics.rejected.labels(reason=result.reason.value).inc()
            return
        key = (result.symbol, result.time)
        if result.time in self.known.get(result.symbol, ()) or key in self.buffered:
            self.metrics.duplicates.inc()
            return
        self.buffered.add(key)
        self.buffer.append(ArchivedBar(result.symbol, result.time, result.values(), rec.partition, rec.offset))
        if self.first_buffered_at is None:
            self.first_buffered_at = time.monotonic()

    def _due(self) -> bool:
        if len(self.buffer) >= self.s.archive_flush_bars:
            return True
        if self.first_buffered_at is not None:
            return time.monotonic() - self.first_buffered_at >= self.s.archive_flush_seconds
        return self.dirty  # only bad bars or duplicates since the last commit: commit their offsets too

    async def flush(self) -> None:
        """Write the buffered bars, then commit every consumed offset (in that order: see the module doc)."""
        from aiokafka.structs import OffsetAndMetadata

        if not self.dirty and not self.buffer:
            return
        bars, self.buffer = self.buffer, []
        loop = asyncio.get_running_loop()
        if bars:
            files = await loop.run_in_executor(None, self.dataset.append, bars)
            self.metrics.files.inc(len(files))
            self.metrics.archived.inc(len(bars))
            for b in bars:
                self.known.setdefault(b.symbol, set()).add(b.time)
        self.buffered.clear()
        self.first_buffered_at = None
        crash_point("before_commit")
        if self.positions and self.consumer is not None:
            await self.consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in self.positions.items()})
        self.dirty = False
        self.metrics.last_flush.set(time.time())
        self.flushes += 1
        if self.flushes % max(self.s.archive_compact_every, 1) == 0:
            n = await loop.run_in_executor(None, self.dataset.compact, self.s.archive_compact_files)
            self.metrics.compactions.inc(n)

    def _update_lag(self) -> None:
        c = self.consumer
        if c is None:
            return
        lag = 0
        for tp in c.assignment():
            high = c.highwater(tp)
            if high is not None:
                lag += max(high - self.positions.get(tp, high), 0)
        self.metrics.lag.set(lag)


class _Rebalance(ConsumerRebalanceListener):
    """Flush before partitions go (their offsets are committed while they are still ours)."""

    def __init__(self, archiver: Archiver):
        self.a = archiver

    async def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            await self.a.flush()
            for tp in revoked:
                self.a.positions.pop(tp, None)
        self.a.metrics.ready.set(0)

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        self.a.metrics.ready.set(1)


def main() -> int:
    """Entry point of `python -m archive` and `regimetry archive`."""
    from archive.settings import load_archive_settings
    from connect.settings import SettingsError

    try:
        settings = load_archive_settings()
    except SettingsError as exc:
        print(f"regimetry archive: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("settings: %s", settings.redacted())
    metrics = ArchiveMetrics()
    metrics.serve(settings.archive_metrics_host, settings.archive_metrics_port)
    archiver = Archiver(settings, metrics)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, archiver.stop)
        await archiver.run()

    asyncio.run(run())
    log.info("archiver stopped")
    return 0
