"""Redis outage (issue 6, item 2): Redis stops mid-stream and comes back (with its append-only file, as in
production). The worker retries with capped back-off, counts the errors, acknowledges nothing it has not
stored and sent, and resumes with no loss: one distinct event per bar with a window, identical copies,
every bar stored once.
"""

from __future__ import annotations

import pytest

from fixtures_stack import series
from regimetry.feed import Collector, PacedFeed, interleave, series_messages
from regimetry.stack import create_topics, metric_value, metrics_text, start_redis, start_worker, wait_until

pytestmark = pytest.mark.slow

TOPICS = {"bars-outage": 2, "regime-events-outage": 2, "bars-dlq-outage": 1}
SETTINGS = {"bars_topic": "bars-outage", "events_topic": "regime-events-outage", "dlq_topic": "bars-dlq-outage",
            "group_id": "regimetry-outage", "batch_size": 16, "batch_within": 0.02, "redis_retry_max_seconds": 1}


def redis_errors(worker) -> float:
    return metric_value(metrics_text(worker.port), "regimetry_redis_errors_total") or 0.0


def test_redis_stop_and_restart_loses_nothing(stack, model, tiny_bundle, tmp_path):
    import redis

    create_topics(stack.bootstrap, TOPICS)
    folder = tmp_path / "redis-aof"
    store = start_redis(folder, appendonly=True)
    history = model.bundle.history_bars
    data = {s: series(s, history + 150, seed=800 + i) for i, s in enumerate(["T37", "T38", "T39"])}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    n_expected = sum(len(b) - history + 1 for b in data.values())
    worker = start_worker(stack, tmp_path, name="outage-worker", bundle=str(tiny_bundle),
                          redis_url=f"redis://127.0.0.1:{store.port}/0", **SETTINGS)
    events = Collector(stack.bootstrap, "regime-events-outage")
    feed = PacedFeed(stack.bootstrap, "bars-outage", msgs).start()
    try:
        events.wait_for(lambda v: len(v) >= n_expected // 4, 120, "a quarter of the events before the outage")
        store.stop()
        # down long enough for several back-off rounds (0.1, 0.2, 0.4 s ...), not just one failed call
        wait_until(lambda: redis_errors(worker) >= 4, 60, "the worker retrying while Redis is gone")
        during = len(events.values())
        store = start_redis(folder, port=store.port, appendonly=True)
        events.wait_for_bars(n_expected, 180, "every event after Redis came back")
        feed.join(120)
        errors = redis_errors(worker)
    finally:
        feed.stop()
        worker.stop()

    copies = events.copies_by_event_id()
    events.close()
    assert errors >= 4 and during < n_expected
    assert len(copies) == n_expected and all(len(c) == 1 for c in copies.values())
    client = redis.Redis(port=store.port)
    try:
        for s, b in data.items():
            stored = client.zrange(f"regimetry:{{{s}}}:bars", 0, -1, withscores=True)
            assert [int(score) for _, score in stored] == b.times.tolist()
    finally:
        client.close()
        store.stop()
    print(f"redis outage: bars {len(msgs)}, events {len(events.records)} ({n_expected} distinct), "
          f"redis errors counted {errors:.0f}, losses 0")
