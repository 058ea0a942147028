"""Scale-out (issue 3 item 8, issue 6 item 5): two worker processes in one consumer group share the bars
partitions; one is stopped mid-stream, its partitions move to the other, and the output is complete and
consistent (one distinct event per bar with a window, identical copies, equal to the batch reference).
"""

from __future__ import annotations

import json

import pytest

from fixtures_stack import series
from regimetry.feed import Collector, PacedFeed, interleave, series_messages
from regimetry.stack import create_topics, metric_value, metrics_text, start_worker, wait_until
from test_worker_e2e import assert_matches_reference

pytestmark = pytest.mark.slow

TOPICS = {"bars-scale": 4, "regime-events-scale": 4, "bars-dlq-scale": 1}
SETTINGS = {"bars_topic": "bars-scale", "events_topic": "regime-events-scale", "dlq_topic": "bars-dlq-scale",
            "group_id": "regimetry-scale", "key_prefix": "scale", "batch_size": 16, "batch_within": 0.02}


def consumed(worker) -> float:
    return metric_value(metrics_text(worker.port), "regimetry_bars_consumed_total") or 0.0


def test_two_workers_share_partitions_and_survive_one_stopping(stack, model, tiny_bundle, tmp_path):
    create_topics(stack.bootstrap, TOPICS)
    history = model.bundle.history_bars
    symbols = [f"T{i}" for i in range(12, 20)]  # 8 symbols: spread over the 4 partitions
    data = {s: series(s, history + 120, seed=700 + i) for i, s in enumerate(symbols)}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    n_expected = sum(len(b) - history + 1 for b in data.values())
    settings = {**SETTINGS, "bundle": str(tiny_bundle)}
    a = start_worker(stack, tmp_path, name="scale-a", **settings)
    b = start_worker(stack, tmp_path, name="scale-b", **settings)
    events = Collector(stack.bootstrap, "regime-events-scale")
    feed = PacedFeed(stack.bootstrap, "bars-scale", msgs).start()
    try:
        # both members got work once the group settled, then one leaves mid-stream
        wait_until(lambda: consumed(a) > 0 and consumed(b) > 0, 120, "both workers consuming")
        events.wait_for(lambda v: len(v) >= n_expected // 3, 120, "a third of the events")
        assert a.stop() == 0
        feed.join(120)
        events.wait_for_bars(n_expected, 180, "every event after the rebalance")
    finally:
        feed.stop()
        b.stop()
        a.stop()

    copies = events.copies_by_event_id()
    events.close()
    assert len(copies) == n_expected and all(len(c) == 1 for c in copies.values())
    values = {json.loads(next(iter(c)))["event_id"]: json.loads(next(iter(c))) for c in copies.values()}
    for s, bars in data.items():
        mine = sorted((e for e in values.values() if e["symbol"] == s), key=lambda e: e["bar_time"])
        assert_matches_reference(model, bars, mine)
    print(f"scale-out: bars {len(msgs)}, events {len(events.records)} ({n_expected} distinct), "
          f"duplicates {len(events.records) - n_expected}, losses 0")
