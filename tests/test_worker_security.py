"""Security settings (issue 6, item 7): Redis with a password on the embedded stack.

The password reaches the Redis client (events flow), a wrong one is refused at start with exit code 4, and
the secret appears neither in the worker's log nor in its metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import series

from devstack.kafka_kit import Collector, produce, series_messages
from devstack.stack import create_topics, metrics_text, start_redis, start_worker

pytestmark = pytest.mark.slow
SECRET = "s3cret-Pa55"
TOPICS = {"bars-auth": 1, "regime-events-auth": 1, "bars-dlq-auth": 1}


@pytest.fixture()
def auth_redis(tmp_path):
    proc = start_redis(tmp_path / "redis-auth", password=SECRET)
    yield proc
    proc.stop()


def test_redis_password_is_used_and_never_shown(stack, tiny_bundle, model, auth_redis, tmp_path, fresh_symbols):
    create_topics(stack.bootstrap, TOPICS)
    url = f"redis://127.0.0.1:{auth_redis.port}/0"
    settings = {
        "bundle": str(tiny_bundle),
        "redis_url": url,
        "bars_topic": "bars-auth",
        "events_topic": "regime-events-auth",
        "dlq_topic": "bars-dlq-auth",
        "group_id": "regimetry-auth",
    }

    # a wrong password is said to be one, at the first attempt (not retried for the start-up timeout)
    env = {**os.environ, **stack.env(**settings, redis_password="n0t-the-Pa55", startup_timeout=60, metrics_port=0)}
    r = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr[-2000:]
    assert f"Redis {url} authentication failed" in r.stderr and "n0t-the-Pa55" not in r.stderr + r.stdout
    assert "not reachable yet" not in r.stderr, "an authentication failure must not be retried"

    worker = start_worker(stack, tmp_path, name="auth-worker", redis_password=SECRET, **settings)
    try:
        (symbol,) = fresh_symbols(1)
        b = series(symbol, model.bundle.history_bars + 5, seed=61)
        produce(stack.bootstrap, "bars-auth", series_messages(symbol, b.times, b.values))
        col = Collector(stack.bootstrap, "regime-events-auth")
        col.wait_for(lambda v: len(v) >= 6, 90, "events through a password-protected Redis")
        col.close()
        text = metrics_text(worker.port)
    finally:
        worker.stop()
    assert SECRET not in text
    assert SECRET not in worker.log.read_text()
