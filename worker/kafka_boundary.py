"""Every place the worker goes below Faust's public API, for this app's consumer only.

Tested with faust-streaming 0.15.3 and aiokafka 0.14.0 (pinned ``>=0.15.3,<0.16`` and ``>=0.14,<0.15`` in
pyproject.toml's ``worker`` extra and docker/worker.Dockerfile). ``tests/test_kafka_boundary_contract.py``
hashes the source of every function below that is overridden or relied on (``CONTRACT``) and checks the
coroutine-ness of what is awaited, so an upgrade that changes one of them fails CI before it reaches a worker.

With ``REGIMETRY_DIRECT_RECORDS=false`` none of this is installed: the app is stock Faust through its public
API (``faust.App`` settings, ``@app.agent``, ``stream.events()``, ``consumer.track_message`` / ``ack``,
``app.producer.send``), slower and with Faust's 1.5 s fetch wait, same events (worker/delivery.py,
tests/test_worker_stream_path.py).

How it is scoped: ``install(app, ...)`` gives *this* app its own transport through Faust's public
``App.transport`` setter: an ``AppTransport`` (subclass of the aiokafka driver's ``Transport``) whose
``Consumer`` class is ``AppConsumer``. Nothing in the faust or aiokafka modules is replaced, so another
Faust app in the same process (or aiokafka used directly) is untouched.

Internals touched, and why:

Faust, ``faust.transport.drivers.aiokafka``
  - ``Transport`` (subclassed: ``Consumer`` class attribute) and ``Consumer`` (subclassed).
  - ``Consumer._new_consumer_thread`` (overridden): builds ``AppConsumerThread`` instead of
    ``AIOKafkaConsumerThread``, the same way (``(self, loop=self.loop, beacon=self.beacon)``).
  - ``AIOKafkaConsumerThread._create_worker_consumer`` (extended, called through ``super()``): it builds the
    aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``; against Tansu aiokafka then sees new
    records ~450 ms late on every fetch cycle (452 ms with 1500, 3 ms with 100, same broker and client). The
    consumer it returns gets ``REGIMETRY_FETCH_MAX_WAIT_MS`` before it starts (aiokafka, below).
  - ``Producer._ensure_producer`` (called, ``aiokafka_producer``): the aiokafka producer Faust started and
    stops, so events go out as one aiokafka record batch per partition (worker/delivery.py).
Faust, ``faust.transport.consumer.Consumer`` (the fetch loop, replaced by ``AppConsumer._drain_messages``)
  - ``_drain_messages`` (overridden whole): one guarded step per fetched chunk instead of per record, and the
    bars topic's records handed straight to the runner's buffer (``install``'s sinks) instead of through
    Faust's conductor, channel and stream: ~30 us of event-loop time per bar and four tasks plus an
    ``asyncio.wait`` per record (``Service.wait_first``) were the largest shares left in the worker.
  - used by it: ``getmany`` (async generator), ``wait_first`` and ``sleep`` (mode.Service coroutines),
    ``suspend_flow`` (an asyncio.Event), ``_read_offset`` (dict tp -> last delivered offset), ``_add_gap``
    (coroutine: acks a hole in the offsets), ``_commit_every`` / ``_n_acked`` / ``commit`` (coroutine: commit
    every N acks), ``callback`` (coroutine: the conductor's ``on_message`` for other topics), ``diag``
    flags with ``CONSUMER_FETCHING``, ``_stopped``, ``should_stop``, ``consumer_stopped_errors``,
    ``app.topics.acks_enabled_for``, ``app.flow_control.is_active``, ``app.consumer_generation_id`` and
    ``message.generation_id`` (records fetched before a rebalance are skipped: the seek fetches them again).
  - ``track_message`` and ``ack`` (plain methods, called by the runner): unacked records hold the commit back.
Faust, ``faust.sensors.monitor.Monitor`` (subclassed through the public ``Monitor`` app setting): the
  per-record hooks do nothing (``quiet_monitor``, ~5 % of CPU; nothing reads those statistics).
aiokafka
  - ``AIOKafkaConsumer._fetch_max_wait_ms``: set on the consumer Faust built, read by ``AIOKafkaConsumer.start``
    when it creates its Fetcher (the one aiokafka attribute touched).
  - ``AIOKafkaProducer.create_batch`` / ``send_batch`` / ``partitions_for`` (public aiokafka API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("regimetry.worker")

TESTED = {"faust-streaming": ">=0.15.3,<0.16", "aiokafka": ">=0.14,<0.15"}

Sink = Callable[[list], Awaitable[None]]

# sha256 (first 16 hex digits) of inspect.getsource of each function overridden or relied on, as installed
# when this module was last checked against upstream (tests/test_kafka_boundary_contract.py)
CONTRACT = {
    # Fetcher: its _fetcher task calls consumer._drain_messages; _create_consumer calls _create_worker_consumer
    "faust.transport.consumer:Fetcher": "c922e4ab78d9e296",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_consumer": "8259d08bb468e150",
    "faust.transport.consumer:Consumer._drain_messages": "8f35dd7a11144daa",
    "faust.transport.consumer:Consumer._add_gap": "f1cc1db634f5ea09",
    "faust.transport.consumer:Consumer.getmany": "e486c434b7928ee8",
    "faust.transport.consumer:Consumer.track_message": "e43b88ec93553217",
    "faust.transport.consumer:Consumer.ack": "5548cf0f75843f73",
    "faust.transport.consumer:Consumer.commit": "e43a7d03685f9206",
    "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread": "8fd0d41b15145615",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": "c179c0bdb9755c3a",
    "faust.transport.drivers.aiokafka:Producer._ensure_producer": "04016bd22147281a",
    "mode.services:Service.wait_first": "3ed3b8c32e14dec3",
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start": "5ba1baa38f6246a0",
}
# what the replaced fetch loop awaits (True) or calls without awaiting (False)
AWAITED = {
    "faust.transport.consumer:Consumer._add_gap": True,
    "faust.transport.consumer:Consumer.commit": True,
    "mode.services:Service.wait_first": True,
    "mode.services:Service.sleep": True,
    "faust.transport.consumer:Consumer.track_message": False,
    "faust.transport.consumer:Consumer.ack": False,
}
ASYNC_GENERATORS = ("faust.transport.consumer:Consumer.getmany",)


def install(app, fetch_max_wait_ms: int, sinks: dict[str, Sink]) -> None:
    """Give `app` its own consumer: fetch wait capped at `fetch_max_wait_ms`, fetched chunks delivered whole,
    and the records of each topic in `sinks` handed to its sink (in offset order per partition) instead of
    Faust's stream. Call before the app starts (before anything reads ``app.transport``)."""
    app.transport = _transport_class(fetch_max_wait_ms, dict(sinks))(app.conf.broker_consumer, app)


def aiokafka_producer(app):
    """The aiokafka producer of a started Faust app (Faust starts, flushes and stops it)."""
    return app.producer._ensure_producer()


def _transport_class(fetch_max_wait_ms: int, sinks: dict[str, Sink]) -> type:
    import faust.transport.drivers.aiokafka as driver
    from faust.transport.consumer import CONSUMER_FETCHING

    class AppConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start
            return consumer

    class AppConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return AppConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - runs in Faust's fetcher
            consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
            try:
                while not (consumer_stopped() or fetcher_stopped()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    # The fetch itself runs unguarded, as in Faust: cancelling it midway (it is a call into
                    # the consumer thread) could drop records the client already counted as fetched.
                    chunk = [item async for item in self.getmany(timeout=1.0)]
                    await self.sleep(0)  # getmany can return at once, over and over: let the loop breathe
                    if chunk and not self.should_stop:
                        await self.wait_first(self._deliver_chunk(chunk), self.suspend_flow.wait())
                    self.diag.unset_flag(CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise
            finally:
                self.diag.unset_flag(CONSUMER_FETCHING)

        async def _deliver_chunk(self, chunk: list) -> None:
            """Faust's per-record offset bookkeeping (read offsets, gaps, commit every N acks) for the whole
            chunk, then each sink's records in one call; a rebalance, stop or crash abandons the rest of the
            chunk (those records are fetched again from the committed offsets)."""
            read_offset = self._read_offset
            acks_enabled_for = self.app.topics.acks_enabled_for
            flow_active, app = self.app.flow_control.is_active, self.app
            direct: dict[str, list] = {}
            for n, (tp, message) in enumerate(chunk, 1):
                if n % 100 == 0:
                    await asyncio.sleep(0)  # a large chunk must not starve heartbeats and the agents
                offset, last = message.offset, read_offset[tp]
                if last is not None and offset < last:
                    continue  # already delivered (a re-fetch after a seek)
                if last and offset - last > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, last + 1, offset)  # compacted or transactional hole: ack it
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                if message.topic in sinks:
                    if not flow_active() or message.generation_id != app.consumer_generation_id:
                        continue  # fetched before a rebalance: the seek after it fetches it again
                    direct.setdefault(message.topic, []).append(message)
                else:
                    await self.callback(message)
                read_offset[tp] = offset
            for topic, messages in direct.items():
                await sinks[topic](messages)

    class AppTransport(driver.Transport):
        Consumer = AppConsumer

    return AppTransport


def quiet_monitor() -> type:
    """Faust's Monitor sensor with its per-record statistics switched off (public sensor hooks).

    Why: Faust's default Monitor updates counters, timings and per-stream dictionaries for every record in and
    out (five calls per bar through the sensor delegate). Nothing reads them here: Faust's web server is off
    and the worker's own Prometheus metrics cover throughput and latency. Per-batch hooks (commits,
    rebalances, assignment) keep their statistics.
    """
    from faust.sensors.monitor import Monitor

    class QuietMonitor(Monitor):
        def on_message_in(self, tp, offset, message) -> None:
            return None

        def on_stream_event_in(self, tp, offset, stream, event):
            return None

        def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
            return None

        def on_message_out(self, tp, offset, message) -> None:
            return None

        def on_send_initiated(self, producer, topic, message, keysize, valsize):
            return None

        def on_send_completed(self, producer, state, metadata) -> None:
            return None

        def track_tp_end_offset(self, tp, offset) -> None:
            return None

    return QuietMonitor
