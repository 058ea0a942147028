"""Embedded-stack fixtures: one Tansu broker + one Redis per test session, one worker process reused by
every end-to-end test (each test owns its own symbols, so they do not see each other's bars).

Start-ups are the expensive part (~1 s for the stack, ~7 s for a worker), hence session scope. Every wait
is a condition with a deadline (devstack.stack.wait_until / Collector.wait_for), never a bare sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

# Symbols handed out by the `fresh_symbols` fixture: a test asks for as many as it needs and gets names no
# other test of the session has had, so tests sharing the topic `bars` and the session worker (or the session
# Redis) never see each other's bars, whatever order they run in. Extend the range if the pool runs out.
POOL = tuple(f"T{i:02d}" for i in range(128))
# Symbols kept explicit, each used by one test that is about the name or a property of it, not drawn from POOL:
#   EQ.A, EQ.B, EQ:C  punctuation in a symbol (Redis keys, event ids, the allow-list): EQ.A is served next to
#                     pool symbols in test_worker_e2e; EQ.B and EQ:C are accepted, for a test of such names
#   DUP, BAD          test_worker_e2e's duplicate/redelivery and bad-input tests; BAD is spelled inside the literal
#                     payloads of its dead-letter table (test_worker_e2e.BAD)
#   CALM, WILD        test_worker_metrics' in-distribution and shifted phases; WILD is looked up by name in
#                     regimetry_current_regime
#   PART0-PART7       test_worker_e2e's partitioner test: these eight names hash (murmur2) to more than one of the
#                     4 partitions, which that test asserts; other names might not
NAMED = ("EQ.A", "EQ.B", "EQ:C", "DUP", "BAD", "CALM", "WILD") + tuple(f"PART{i}" for i in range(8))
# Symbols the session worker accepts (REGIMETRY_ALLOWED_SYMBOLS); anything else is `unknown_symbol`.
TEST_SYMBOLS = POOL + NAMED
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
    """Running broker + Redis with topics bars (4 partitions), regime-events (4), regime-drift (4),
    regime-transitions (4), bars-dlq (1)."""
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


class SymbolPool:
    """Hands out names from `names`, each at most once."""

    def __init__(self, names: Iterable[str]):
        self._names = tuple(names)
        self._next = 0

    def take(self, n: int) -> list[str]:
        """n names never handed out before by this pool; RuntimeError if fewer than n are left."""
        if n < 1:
            raise ValueError(f"take({n}): ask for at least one symbol")
        left = len(self._names) - self._next
        if n > left:
            raise RuntimeError(
                f"symbol pool exhausted: asked for {n}, {left} of {len(self._names)} left "
                f"({self._names[0]}..{self._names[-1]}); extend POOL in tests/fixtures_stack.py"
            )
        out = list(self._names[self._next : self._next + n])
        self._next += n
        return out


@pytest.fixture(scope="session")
def fresh_symbols() -> Callable[[int], list[str]]:
    """take(n) -> n symbols of POOL no other test of this session has been given (all accepted by the session
    worker). Use it for every symbol that only needs to be a test's own; spell a name out (see NAMED) only when
    the test is about the name itself or a property of it."""
    return SymbolPool(POOL).take
