"""Broker restart (issue 6, item 3) on the embedded broker.

Tansu with memory storage forgets everything when it restarts: topics, messages and the group's committed
offsets. So this tests what can be tested there: the worker outlives the outage (logging connection errors,
not crashing), rejoins the group on the restarted broker, and once the topics exist again (a deployment's
topic-init job recreates them) the bars produced afterwards all get their events, continuing the windows kept
in Redis, equal to the batch reference. It runs its own broker and Redis, since it restarts the broker.
"""

from __future__ import annotations

import time

import pytest

from fixtures_stack import series
from regimetry.feed import Collector, interleave, produce, series_messages
from regimetry.stack import create_topics, metric_value, metrics_text, start_stack, start_tansu, start_worker, wait_until
from test_worker_e2e import assert_matches_reference

pytestmark = pytest.mark.slow

TOPICS = {"bars": 2, "regime-events": 2, "bars-dlq": 1}


def test_worker_survives_a_broker_restart_and_continues(model, tiny_bundle, tmp_path):
    history = model.bundle.history_bars
    data = {s: series(s, history + 60, seed=950 + i) for i, s in enumerate(["T05", "T06"])}
    split = history + 20  # bars before the restart; the rest is produced to the restarted broker
    with start_stack(tmp_path, TOPICS) as stack:
        worker = start_worker(stack, tmp_path, bundle=str(tiny_bundle), batch_size=16, batch_within=0.02)
        produce(stack.bootstrap, "bars", interleave(*[series_messages(s, b.times[:split], b.values[:split])
                                                      for s, b in data.items()]))
        before = Collector(stack.bootstrap, "regime-events")
        old = before.wait_for_bars(len(data) * (split - history + 1), 60, "events before the restart")
        before.close()

        port = stack.kafka.port
        stack.kafka.stop()
        wait_until(lambda: "Unable connect to node" in worker.log.read_text(errors="replace"), 30,
                   "the worker noticing the broker is gone")
        t_down = time.monotonic()
        stack.kafka = start_tansu(tmp_path, port=port)
        create_topics(stack.bootstrap, TOPICS)  # memory storage: the topics are gone, as a topic-init job would
        produce(stack.bootstrap, "bars", interleave(*[series_messages(s, b.times[split:], b.values[split:])
                                                      for s, b in data.items()]))
        after = Collector(stack.bootstrap, "regime-events")
        n_after = sum(len(b) - split for b in data.values())
        got = after.wait_for_bars(n_after, 90, "events for every bar sent after the restart")
        reconnect = time.monotonic() - t_down
        after.close()
        assert worker.alive() and metric_value(metrics_text(worker.port), "regimetry_worker_ready") == 1.0
        assert worker.stop() == 0
    for s, b in data.items():
        # the windows survived in Redis: the first event after the restart continues the series seamlessly
        mine = sorted((e for e in old + got if e["symbol"] == s), key=lambda e: e["bar_time"])
        assert_matches_reference(model, b, list({e["bar_time"]: e for e in mine}.values()))
    print(f"broker restart: bars after restart {n_after}, events {len(got)}, broker down to events {reconnect:.1f} s")
