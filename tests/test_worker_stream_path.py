"""The escape hatch REGIMETRY_DIRECT_RECORDS=false: stock Faust (its own transport, consumer, Monitor and
producer.send, nothing of worker/kafka_boundary.py) gives the same events, the batch reference.

Runs its own worker on its own topics, consumer group and Redis key prefix, so the session worker is not
disturbed.
"""

from __future__ import annotations

import pytest
from helpers import assert_matches_reference, by_symbol, series

from devstack.kafka_kit import Collector, interleave, produce, series_messages
from devstack.stack import create_topics, start_worker

pytestmark = pytest.mark.slow

TOPICS = {"bars-stream": 2, "regime-events-stream": 2, "bars-dlq-stream": 1}
SETTINGS = {
    "bars_topic": "bars-stream",
    "events_topic": "regime-events-stream",
    "dlq_topic": "bars-dlq-stream",
    "group_id": "regimetry-stream-path",
    "key_prefix": "stream",
    "batch_size": 32,
    "batch_within": 0.02,
    "direct_records": "false",
}


def test_stream_path_gives_the_batch_reference_and_reemits_duplicates(stack, model, tiny_bundle, tmp_path):
    create_topics(stack.bootstrap, TOPICS)
    history = model.bundle.history_bars
    data = {s: series(s, history + 60, seed=500 + i) for i, s in enumerate(["SP0", "SP1"])}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    expected = sum(len(b) - history + 1 for b in data.values())
    worker = start_worker(stack, tmp_path, name="stream-path-worker", bundle=str(tiny_bundle), **SETTINGS)
    events = Collector(stack.bootstrap, "regime-events-stream")
    try:
        produce(stack.bootstrap, "bars-stream", msgs)
        vals = events.wait_for(lambda v: len(v) >= expected, 90, "one event per complete window")
        produce(stack.bootstrap, "bars-stream", msgs[-5:])  # duplicates: re-emitted, same bytes
        events.wait_for(lambda v: len(v) >= expected + 5, 90, "the duplicates' events re-emitted")
    finally:
        worker.stop()
    log = worker.log.read_text()
    assert "through Faust's agent stream" in log
    assert "consumer transport faust.transport.drivers.aiokafka.Transport" in log  # Faust's own class
    for s, b in data.items():
        assert_matches_reference(model, b, by_symbol(vals[:expected], s))
    by_id = events.copies_by_event_id()
    events.close()
    assert len(by_id) == expected
    assert all(len(copies) == 1 for copies in by_id.values()), "a re-emitted event is byte-identical"
