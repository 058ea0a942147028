"""Sending a batch's output and waiting until the broker acknowledged all of it (commit step 2, worker/runner.py).

``Delivery.deliver`` sends every event and dead letter of a batch and returns once the broker acknowledged each
one (``acks=all``). A broker error (``broker_errors()``: Kafka client errors, timeouts, connection errors)
resends the whole batch after a capped back-off, for as long as it takes: duplicates are harmless (same event
id, same bytes), losses are not, and the batch stays unacknowledged meanwhile. Anything else is a bug and
propagates, so the runner exits without acknowledging (``EXIT_BROKEN_BATCH``) instead of looping on it.

Two senders, the same messages in the same order per partition:

- ``RecordBatchSender`` (the default): one aiokafka record batch per partition instead of one ``send`` per
  event. Each send is a coroutine, a future, a partitioner hash and a debug line, ~25 us of event-loop time
  per event at full load; a record batch takes an append per message. Partitions come from the same default
  partitioner a keyed send uses (murmur2 of the key, via Faust's ``key_partition``), cached per key, so events
  land where a keyed send would put them. Needs the aiokafka producer under Faust's (worker/kafka_boundary.py).
- ``StockSender`` (``REGIMETRY_DIRECT_RECORDS=false``): Faust's public ``producer.send``, one per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from worker import kafka_boundary

log = logging.getLogger("regimetry.worker")

Message = tuple[str, bytes | None, bytes]  # (topic, key, value)


def broker_errors() -> tuple[type[BaseException], ...]:
    """The errors a send is retried on (imported when the send path is built, not when this module is)."""
    from aiokafka.errors import KafkaError
    from faust.exceptions import NotReady, ProducerSendError

    # TimeoutError is asyncio.TimeoutError since Python 3.11 (an OSError, like ConnectionError)
    return (KafkaError, ProducerSendError, NotReady, TimeoutError, OSError)


class Sender(Protocol):
    async def send(self, messages: list[Message]) -> list[Awaitable]:
        """Queue every message (in order) and return the futures of their broker acknowledgements."""
        ...

    def forget(self) -> None:
        """Drop cached topic metadata (after a failure: the topic may have been re-created)."""
        ...


class RecordBatchSender:
    def __init__(self, app) -> None:
        self.app = app
        self._partitions: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition of keyed sends
        self._topics_ready: set[str] = set()  # topics whose metadata the producer has

    def forget(self) -> None:
        self._partitions.clear()
        self._topics_ready.clear()

    async def send(self, messages: list[Message]) -> list[Awaitable]:
        producer = kafka_boundary.aiokafka_producer(self.app)
        for topic in {topic for topic, _, _ in messages} - self._topics_ready:
            await producer.partitions_for(topic)  # waits for the topic's metadata, as a keyed send would
            self._topics_ready.add(topic)
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value in messages:
            by_partition.setdefault((topic, self._partition(topic, key)), []).append((key, value))
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

    def _partition(self, topic: str, key: bytes | None) -> int:
        if key is None:  # keyless (a dead letter without a key): the partitioner picks one
            return self.app.producer.key_partition(topic, key).partition
        cached = self._partitions.get((topic, key))
        if cached is None:
            cached = self._partitions[(topic, key)] = self.app.producer.key_partition(topic, key).partition
        return cached


class StockSender:
    def __init__(self, app) -> None:
        self.app = app

    def forget(self) -> None:
        return None

    async def send(self, messages: list[Message]) -> list[Awaitable]:
        send = self.app.producer.send
        return [await send(t, k, v, partition=None, timestamp=None, headers=None) for t, k, v in messages]


class Delivery:
    def __init__(self, sender: Sender, retry_max_seconds: float):
        self.sender = sender
        self.retry_max_seconds = retry_max_seconds
        self.broker_errors = broker_errors()

    async def deliver(self, messages: list[Message]) -> None:
        """Send and await every broker acknowledgement; on a broker error resend everything with capped
        back-off. Other exceptions propagate (a bug: the runner exits without acknowledging the batch)."""
        delay = 0.1
        while True:
            try:
                await asyncio.gather(*await self.sender.send(messages))
                return
            except self.broker_errors as exc:  # broker trouble: keep the batch unacknowledged and try again
                log.warning("sending %d messages failed (%r); retrying in %.1f s", len(messages), exc, delay)
                self.sender.forget()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
