"""Crash recovery (issue 6, item 1): SIGKILL the worker three times mid-stream and restart it.

At-least-once delivery plus the Redis state must give: every bar that completes a window has an event,
every copy of an event is byte-identical (same id, same content, same emitted_at: a redelivery re-emits the
stored event), and Redis holds every bar exactly once. This worker runs on its own topics, consumer group
and Redis key prefix, so the session worker used by the other tests is not disturbed.
"""

from __future__ import annotations

import pytest
from helpers import series

from devstack.kafka_kit import Collector, PacedFeed, interleave, series_messages
from devstack.stack import create_topics, start_worker

pytestmark = pytest.mark.slow

TOPICS = {"bars-crash": 4, "regime-events-crash": 4, "bars-dlq-crash": 1}
SETTINGS = {
    "bars_topic": "bars-crash",
    "events_topic": "regime-events-crash",
    "dlq_topic": "bars-dlq-crash",
    "group_id": "regimetry-crash",
    "key_prefix": "crash",
    "batch_size": 16,
    "batch_within": 0.02,
    "commit_interval": 2.0,
}


def test_sigkill_three_times_loses_nothing(stack, model, tiny_bundle, redis_client, tmp_path, fresh_symbols):
    create_topics(stack.bootstrap, TOPICS)
    history = model.bundle.history_bars
    symbols = fresh_symbols(4)
    data = {s: series(s, history + 150, seed=300 + i) for i, s in enumerate(symbols)}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    n_expected = sum(len(b) - history + 1 for b in data.values())

    settings = {**SETTINGS, "bundle": str(tiny_bundle)}
    worker = start_worker(stack, tmp_path, name="crash-worker-0", **settings)
    events = Collector(stack.bootstrap, "regime-events-crash")
    feed = PacedFeed(stack.bootstrap, "bars-crash", msgs, chunk=20).start()
    crashes = 0
    try:
        for k, threshold in enumerate((n_expected // 8, n_expected // 3, n_expected // 2)):
            events.wait_for(lambda v, n=threshold: len(v) >= n, 120, f"{threshold} events before crash {k + 1}")
            worker.kill()
            crashes += 1
            worker = start_worker(stack, tmp_path, name=f"crash-worker-{k + 1}", **settings)
        feed.join(120)
        events.wait_for_bars(n_expected, 180, "an event for every complete window")
    finally:
        feed.stop()
        worker.stop()

    by_id = events.copies_by_event_id()
    events.close()
    assert crashes == 3
    assert len(by_id) == n_expected, "one distinct event id per bar with a complete window"
    assert all(len(copies) == 1 for copies in by_id.values()), "every copy of an event is identical"
    for s, b in data.items():
        stored = redis_client.zrange(f"crash:{{{s}}}:bars", 0, -1, withscores=True)
        assert [int(score) for _, score in stored] == b.times.tolist(), f"{s}: each bar stored exactly once"
    duplicates = len(events.records) - n_expected
    print(
        f"crash recovery: bars {len(msgs)}, events {len(events.records)} ({n_expected} distinct), "
        f"duplicates {duplicates}, losses 0, crashes {crashes}"
    )
