"""Read a range of the bars topic back: the records of some symbols between two offsets of one partition.

Why: Redis can come back *older* than the offsets Kafka has committed (restarted from a snapshot without its
append-only file, a replica promoted behind its master). The bars between a symbol's last stored bar and the
first bar this process sees were then processed (their offsets are committed) but are missing from Redis, and a
window built across them would have a hole. The log still holds them, so worker/pipeline.py reads them back
with this module and replays them into Redis ahead of the new bars, sending nothing for them (their events went
out when they first came). Where the log no longer holds them (retention), the symbol's state is reset instead.

A plain aiokafka consumer with no group (``assign`` + ``seek``): it commits nothing and never joins the worker's
group, so reading back cannot disturb the assignment or the offsets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connect.kafka import aiokafka_kwargs, bootstrap_servers
from connect.settings import ConnectionSettings
from worker.steps import Record

log = logging.getLogger("regimetry.worker")


@dataclass(frozen=True)
class LogRange:
    """What a read found: the wanted records in offset order, and the partition's first offset still held."""

    records: list[Record]
    log_start: int


class LogReader:
    """Opened on first use and kept for the process (a rollback touches every symbol of a partition)."""

    def __init__(self, settings: ConnectionSettings, fetch_records: int = 5000):
        self.settings = settings
        self.fetch_records = fetch_records
        self._consumer = None

    async def _open(self):
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers(self.settings.broker_url),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **aiokafka_kwargs(self.settings),
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, topic: str, partition: int, start: int, end: int, keys: set[bytes]) -> LogRange:
        """Records of `topic`/`partition` with start <= offset < end whose key is in `keys`, oldest first."""
        from aiokafka import TopicPartition

        consumer = await self._open()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        log_start = (await consumer.beginning_offsets([tp]))[tp]
        found: list[Record] = []
        position = max(start, log_start)
        if position < end:
            consumer.seek(tp, position)
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=self.fetch_records)
            for msg in batch.get(tp, []):
                position = msg.offset + 1
                if msg.offset >= end:
                    break
                if msg.key in keys:
                    ts = msg.timestamp / 1000.0 if msg.timestamp is not None else None
                    found.append(Record(msg.key, msg.value, topic, partition, msg.offset, ts))
            if not batch and position < end:
                ends = await consumer.end_offsets([tp])
                if ends[tp] <= position:  # nothing more to read: the range ends past the log
                    break
        return LogRange(found, log_start)

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
