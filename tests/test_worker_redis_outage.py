"""Redis outage (issue 6, item 2): Redis stops mid-stream and comes back (with its append-only file, as in
production). The worker retries with capped back-off, counts the errors, acknowledges nothing it has not
stored and sent, and resumes with no loss: one distinct event per bar with a window, identical copies,
every bar stored once.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from helpers import assert_matches_reference, series

from devstack.kafka_kit import Collector, PacedFeed, interleave, series_messages
from devstack.stack import create_topics, metric_value, metrics_text, start_redis, start_worker, wait_until

pytestmark = pytest.mark.slow

TOPICS = {"bars-outage": 2, "regime-events-outage": 2, "bars-dlq-outage": 1}
SETTINGS = {
    "bars_topic": "bars-outage",
    "events_topic": "regime-events-outage",
    "dlq_topic": "bars-dlq-outage",
    "group_id": "regimetry-outage",
    "batch_size": 16,
    "batch_within": 0.02,
    "redis_retry_max_seconds": 1,
}


def redis_errors(worker) -> float:
    return metric_value(metrics_text(worker.port), "regimetry_redis_errors_total") or 0.0


def test_redis_stop_and_restart_loses_nothing(stack, model, tiny_bundle, tmp_path, fresh_symbols):
    import redis

    create_topics(stack.bootstrap, TOPICS)
    folder = tmp_path / "redis-aof"
    store = start_redis(folder, appendonly=True)
    history = model.bundle.history_bars
    data = {s: series(s, history + 150, seed=800 + i) for i, s in enumerate(fresh_symbols(3))}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    n_expected = sum(len(b) - history + 1 for b in data.values())
    worker = start_worker(
        stack,
        tmp_path,
        name="outage-worker",
        bundle=str(tiny_bundle),
        redis_url=f"redis://127.0.0.1:{store.port}/0",
        **SETTINGS,
    )
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
    print(
        f"redis outage: bars {len(msgs)}, events {len(events.records)} ({n_expected} distinct), "
        f"redis errors counted {errors:.0f}, losses 0"
    )


def test_redis_back_empty_refills_windows_without_partial_events(stack, model, tiny_bundle, tmp_path, fresh_symbols):
    """Redis (no persistence) stops mid-stream and a fresh, empty one starts on the same port. The consumed
    offsets are committed, so the windows refill from the new bars: after the wipe each symbol's events
    equal the batch reference run on the bars the new Redis received (so no event before history_bars
    bars, forecasts once the forecaster has its input again); the loss is counted per symbol, the bars
    without a window are counted, and the worker keeps running."""
    import redis

    topics = {"bars-wipe": 2, "regime-events-wipe": 2, "bars-dlq-wipe": 1}
    create_topics(stack.bootstrap, topics)
    store = start_redis(tmp_path / "redis-wipe")
    history = model.bundle.history_bars
    # long enough that, after the ~40 bars per symbol the wipe waits for plus the history the refill needs,
    # a good number of events remain to compare (bars_in_regime included)
    data = {s: series(s, history + 250, seed=850 + i) for i, s in enumerate(fresh_symbols(3))}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    settings = {
        **SETTINGS,
        "bars_topic": "bars-wipe",
        "events_topic": "regime-events-wipe",
        "dlq_topic": "bars-dlq-wipe",
        "group_id": "regimetry-wipe",
    }
    worker = start_worker(
        stack,
        tmp_path,
        name="wipe-worker",
        bundle=str(tiny_bundle),
        redis_url=f"redis://127.0.0.1:{store.port}/0",
        **settings,
    )
    events = Collector(stack.bootstrap, "regime-events-wipe")
    feed = PacedFeed(stack.bootstrap, "bars-wipe", msgs, chunk=6, pause=0.05).start()  # still flowing at the wipe
    try:
        events.wait_for(lambda v: len(v) >= len(data) * 40, 120, "events before the wipe")
        store.stop()
        # once the worker has failed on Redis, the batch before has been delivered: later records are new
        wait_until(lambda: redis_errors(worker) >= 2, 60, "the worker retrying while Redis is gone")
        t_wipe = time.time()
        store = start_redis(tmp_path / "redis-wipe", port=store.port)
        feed.join(120)
        client = redis.Redis(port=store.port)
        # every bar is stored again from the first one after the wipe on (keep_bars >= this series)
        refilled = {s: client.zrange(f"regimetry:{{{s}}}:bars", 0, 0, withscores=True) for s in data}
        first = {s: int(np.searchsorted(b.times, int(refilled[s][0][1]))) for s, b in data.items()}
        n_after = sum(max(len(b) - first[s] - history + 1, 0) for s, b in data.items())
        events.wait_for(
            lambda v: sum(r.timestamp / 1000 > t_wipe for r in events.records) >= n_after,
            120,
            "every event after the wipe",
        )
        assert worker.alive()
        text = metrics_text(worker.port)
        lost = metric_value(text, "regimetry_redis_state_lost_total")
        warming = metric_value(text, "regimetry_bars_without_window_total")
    finally:
        feed.stop()
        code = worker.stop()
    after = list(
        {
            e["event_id"]: e for e in (json.loads(r.value) for r in events.records if r.timestamp / 1000 > t_wipe)
        }.values()
    )
    events.close()
    client.close()
    store.stop()
    assert code == 0 and lost == len(data)
    assert warming == len(data) * 2 * (history - 1), "history_bars - 1 bars without a window, at start and after"
    for s, b in data.items():
        assert 0 < first[s] < len(b) - history, f"{s}: the wipe landed mid-stream"
        mine = sorted((e for e in after if e["symbol"] == s), key=lambda e: e["bar_time"])
        assert_matches_reference(model, b.slice(first[s]), mine)
    print(
        f"redis back empty: bars {len(msgs)}, events {len(after)} after the wipe, bars refilled before events "
        f"{warming - len(data) * (history - 1):.0f}, symbols with lost state {lost:.0f}"
    )
