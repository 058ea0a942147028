"""Where Faust's defaults cost the worker most, overridden for this app only.

- ``limit_fetch_wait``: Faust builds its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``;
  against Tansu aiokafka then sees new records ~450 ms late on every fetch cycle (452 ms with 1500, 3 ms with
  100, same broker, same client). Real Kafka brokers answer as soon as fetch_min_bytes arrive, where a
  shorter wait only means an idle consumer polls a little more often. Faust's aiokafka driver gets a copy of
  the `aiokafka` module namespace whose consumer class applies our wait; every other user of aiokafka in the
  process is untouched.
- ``deliver_fetches_whole`` and ``deliver_records_to``: one guarded step per fetched chunk instead of per
  record, and the bars topic's records handed to the worker's micro-batch buffer without Faust's per-record
  stream machinery.
- ``quiet_monitor``: Faust's Monitor without per-record statistics.

These use Faust internals (``Consumer._drain_messages``, ``_read_offset``, ``_add_gap``); a faust-streaming
upgrade must re-run the worker's scale-out, crash and broker-restart tests.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable


def limit_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Make Faust's consumers wait at most `fetch_max_wait_ms` for new records per fetch."""
    import aiokafka
    import faust.transport.drivers.aiokafka as driver

    base = aiokafka.AIOKafkaConsumer

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["fetch_max_wait_ms"] = fetch_max_wait_ms
            super().__init__(*args, **kwargs)

    scoped = types.ModuleType("aiokafka")
    scoped.__dict__.update(aiokafka.__dict__)
    scoped.AIOKafkaConsumer = Consumer  # type: ignore[attr-defined]
    driver.aiokafka = scoped


RECORD_SINKS = "regimetry_record_sinks"


def deliver_fetches_whole() -> bool:
    """Hand each fetched chunk of records to the streams in one guarded step instead of one per record.

    Why: Faust's consumer delivers every record through ``Service.wait_first(callback, suspend_flow)``, which
    creates four tasks and an ``asyncio.wait`` per record so that a rebalance can abandon a delivery blocked
    on a full stream buffer. That bookkeeping was ~10 % of the worker's CPU at full load, more than the
    classifier. Guarding the whole chunk keeps the behaviour (a rebalance, stop or crash abandons the rest of
    the chunk; those records are fetched again from the committed offsets) at one task per fetch. The
    per-record offset bookkeeping (read offsets, gaps for acks, commit every N acks) is unchanged.
    """
    import asyncio

    import faust.transport.drivers.aiokafka as driver
    from faust.transport.consumer import CONSUMER_FETCHING

    base = driver.Transport.Consumer
    if getattr(base, "delivers_fetches_whole", False):
        return True
    if not all(
        hasattr(base, name)
        for name in ("_drain_messages", "getmany", "wait_first", "_add_gap", "commit", "track_message", "ack")
    ):
        # another Faust: keep its own delivery, just slower
        logging.getLogger("regimetry.worker").warning(
            "faust %s consumer differs from the one this override was written for; per-record delivery kept",
            getattr(__import__("faust"), "__version__", "?"),
        )
        return False

    class Consumer(base):  # type: ignore[misc, valid-type]
        delivers_fetches_whole = True

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
            read_offset = self._read_offset
            acks_enabled_for = self.app.topics.acks_enabled_for
            sinks = getattr(self.app, RECORD_SINKS, None) or {}
            flow_active, app = self.app.flow_control.is_active, self.app
            direct: dict[str, list] = {}
            n = 0
            for tp, message in chunk:
                n += 1
                if n % 100 == 0:
                    await asyncio.sleep(0)  # a large chunk must not starve heartbeats and the agents
                offset, last = message.offset, read_offset[tp]
                if last is not None and offset < last:
                    continue  # already delivered (a re-fetch after a seek)
                if last and offset - last > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, last + 1, offset)  # compacted or transactional hole: ack it
                if self._commit_every is not None and self._n_acked >= self._commit_every:  # type: ignore[has-type]
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

    driver.Transport.Consumer = Consumer
    return True


def deliver_records_to(app, topic: str, sink: Callable[[list], Awaitable[None]]) -> bool:
    """Hand each fetched chunk's records of `topic` straight to `sink` (an async callable taking a list of
    Faust messages, in offset order per partition), bypassing Faust's conductor, channel and stream.

    Why: for every record Faust's stream path builds an Event, takes an asyncio lock, queues it on a channel,
    runs the stream iterator and its processors, then acks through two locks: ~30 us of event-loop time per
    bar, the largest share left in the worker, and all of it serial with the batch it feeds. The sink owns
    tracking (``consumer.track_message``) and acking (``consumer.ack``) of what it accepts; the consumer
    keeps the offset bookkeeping, gap handling, commits, rebalances and the suspend-on-rebalance guard.
    Returns False (and the records keep flowing through Faust's stream) when the chunk delivery above could
    not be installed."""
    if not deliver_fetches_whole():
        return False
    sinks = getattr(app, RECORD_SINKS, None)
    if sinks is None:
        sinks = {}
        setattr(app, RECORD_SINKS, sinks)
    sinks[topic] = sink
    return True


def quiet_monitor():
    """Faust's Monitor sensor with its per-record statistics switched off.

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
