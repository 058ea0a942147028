"""Embedded-stack fixtures: one Tansu broker + one Redis per test session, one worker process reused by
every end-to-end test (each test owns its own symbols, so they do not see each other's bars).

Start-ups are the expensive part (~1 s for the stack, ~7 s for a worker), hence session scope. Every wait
is a condition with a deadline (devstack.stack.wait_until / Collector.wait_for), never a bare sleep.
"""

from __future__ import annotations

import pytest

# Symbols the session worker accepts (REGIMETRY_ALLOWED_SYMBOLS); anything else is `unknown_symbol`.
TEST_SYMBOLS = (
    tuple(f"T{i:02d}" for i in range(40))
    + ("EQ.A", "EQ.B", "EQ:C", "DUP", "BAD", "CALM", "WILD")
    + tuple(f"PART{i}" for i in range(8))
)
WORKER_SETTINGS = {
    "batch_size": 32,
    "batch_within": 0.05,
    "drift_horizon": 200,
    "dedupe_window": 512,
    "allowed_symbols": TEST_SYMBOLS,
    "ort_threads": 1,
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Running broker + Redis with topics bars (4 partitions), regime-events (4), bars-dlq (1)."""
    from devstack.stack import start_stack

    st = start_stack(tmp_path_factory.mktemp("stack"))
    yield st
    st.stop()


@pytest.fixture(scope="session")
def worker(stack, tiny_bundle, tmp_path_factory):
    """One `python -m worker` process on the stack, serving the tiny bundle; yields its Process (.port is
    the metrics port)."""
    from devstack.stack import start_worker

    proc = start_worker(stack, tmp_path_factory.mktemp("worker"), bundle=str(tiny_bundle), **WORKER_SETTINGS)
    yield proc
    code = proc.stop()
    assert code == 0, f"worker exited with {code} on SIGTERM; see {proc.log}"


@pytest.fixture(scope="session")
def model(tiny_bundle):
    """The batch reference (RegimeModel.run_series) on the same bundle the worker serves."""
    from regimetry.inference import RegimeModel

    return RegimeModel(tiny_bundle)


@pytest.fixture()
def events(stack):
    """A fresh reader of regime-events from the earliest offset."""
    from devstack.kafka_kit import Collector

    col = Collector(stack.bootstrap, "regime-events")
    yield col
    col.close()


@pytest.fixture()
def dead_letters(stack):
    from devstack.kafka_kit import Collector

    col = Collector(stack.bootstrap, "bars-dlq")
    yield col
    col.close()


@pytest.fixture(scope="session")
def redis_client(stack):
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


def schema_validator(name: str):
    """A compiled validator for one of schemas/*.json."""
    from jsonschema import Draft202012Validator

    from regimetry.bundle import load_schema

    return Draft202012Validator(load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def series(symbol: str, n_bars: int, seed: int, **kwargs):
    """Seeded synthetic bars for one symbol (regimetry.synthetic), optionally with other regimes."""
    from regimetry.synthetic import generate_bars

    return generate_bars(n_bars=n_bars, seed=seed, symbol=symbol, **kwargs).bars
