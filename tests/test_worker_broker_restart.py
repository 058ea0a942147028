"""Broker restart (issue 6, item 3) on the embedded broker.

Tansu with memory storage forgets everything when it restarts: topics, messages and the group's committed
offsets. So this tests what can be tested there: the worker outlives the outage (logging connection errors,
not crashing), rejoins the group on the restarted broker, and once the topics exist again (a deployment's
topic-init job recreates them) the bars produced afterwards all get their events, continuing the windows kept
in Redis, equal to the batch reference; a worker started afterwards continues from the offsets committed on
the restarted broker. It runs its own broker and Redis, since it restarts the broker.
"""

from __future__ import annotations

import time

import pytest
from helpers import assert_matches_reference, series

from devstack.kafka_kit import Collector, interleave, produce, series_messages
from devstack.stack import (
    create_topics,
    metric_value,
    metrics_text,
    start_stack,
    start_tansu,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.slow

TOPICS = {"bars": 2, "regime-events": 2, "regime-drift": 2, "regime-transitions": 2, "bars-dlq": 1}


def test_worker_survives_a_broker_restart_and_continues(model, tiny_bundle, tmp_path, fresh_symbols):
    history = model.bundle.history_bars
    data = {s: series(s, history + 60, seed=950 + i) for i, s in enumerate(fresh_symbols(2))}
    split = history + 20  # bars before the restart
    late = history + 50  # bars from here on go to a worker started after the first one stopped
    with start_stack(tmp_path, TOPICS) as stack:
        worker = start_worker(stack, tmp_path, bundle=str(tiny_bundle), batch_size=16, batch_within=0.02)
        produce(
            stack.bootstrap,
            "bars",
            interleave(*[series_messages(s, b.times[:split], b.values[:split]) for s, b in data.items()]),
        )
        before = Collector(stack.bootstrap, "regime-events")
        old = before.wait_for_bars(len(data) * (split - history + 1), 60, "events before the restart")
        before.close()

        port = stack.kafka.port
        stack.kafka.stop()
        wait_until(
            lambda: "Unable connect to node" in worker.log.read_text(errors="replace"),
            30,
            "the worker noticing the broker is gone",
        )
        t_down = time.monotonic()
        stack.kafka = start_tansu(tmp_path, port=port)
        create_topics(stack.bootstrap, TOPICS)  # memory storage: the topics are gone, as a topic-init job would
        produce(
            stack.bootstrap,
            "bars",
            interleave(*[series_messages(s, b.times[split:late], b.values[split:late]) for s, b in data.items()]),
        )
        after = Collector(stack.bootstrap, "regime-events")
        after.wait_for_bars(len(data) * (late - split), 90, "events for every bar sent after the restart")
        reconnect = time.monotonic() - t_down
        assert worker.alive() and metric_value(metrics_text(worker.port), "regimetry_worker_ready") == 1.0
        log = worker.log.read_text(errors="replace")
        # aiokafka repeats its connection errors every ~100 ms; the worker lets one through per 5 s
        repeats = log.count("Unable connect to node")
        assert repeats <= 2 + 2 * reconnect / 5, f"{repeats} connection error lines in {reconnect:.0f} s"
        assert "repeated Kafka client warnings/errors held back]" in log
        assert worker.stop() == 0
        # a worker started afterwards resumes from the offsets committed on the restarted broker
        worker = start_worker(
            stack, tmp_path, name="worker-2", bundle=str(tiny_bundle), batch_size=16, batch_within=0.02
        )
        produce(
            stack.bootstrap,
            "bars",
            interleave(*[series_messages(s, b.times[late:], b.values[late:]) for s, b in data.items()]),
        )
        n_after = sum(len(b) - split for b in data.values())
        got = after.wait_for_bars(n_after, 90, "events from the worker started after the broker restart")
        after.close()
        assert worker.stop() == 0
    for s, b in data.items():
        # the windows survived in Redis: the first event after the restart continues the series seamlessly
        mine = sorted((e for e in old + got if e["symbol"] == s), key=lambda e: e["bar_time"])
        assert_matches_reference(model, b, list({e["bar_time"]: e for e in mine}.values()))
    print(
        f"broker restart: bars after restart {n_after}, events {len(got)} ({len(got) - n_after} duplicates), "
        f"broker down to events {reconnect:.1f} s, "
        f"connection error lines {repeats}"
    )
