"""The symbol pool of the shared session worker (fixtures_stack.fresh_symbols): every name handed out once,
every name accepted by the session worker, a clear error when it runs out."""

import pytest
from fixtures_stack import NAMED, POOL, TEST_SYMBOLS, WORKER_SETTINGS, SymbolPool


def test_pool_hands_out_each_name_once_and_says_when_it_is_empty():
    pool = SymbolPool(["A", "B", "C"])
    assert pool.take(2) == ["A", "B"]
    with pytest.raises(RuntimeError, match=r"symbol pool exhausted: asked for 2, 1 of 3 left \(A\.\.C\)"):
        pool.take(2)
    assert pool.take(1) == ["C"]
    with pytest.raises(RuntimeError, match="asked for 1, 0 of 3 left"):
        pool.take(1)
    with pytest.raises(ValueError, match="at least one"):
        SymbolPool(["A"]).take(0)


def test_every_pool_and_named_symbol_is_accepted_by_the_session_worker():
    assert POOL == tuple(f"T{i:02d}" for i in range(128))
    assert len(set(TEST_SYMBOLS)) == len(TEST_SYMBOLS) == len(POOL) + len(NAMED)
    assert WORKER_SETTINGS["allowed_symbols"] == TEST_SYMBOLS


def test_fresh_symbols_never_repeat_within_the_session(fresh_symbols):
    a, b = fresh_symbols(1), fresh_symbols(2)
    assert len(set(a + b)) == 3 and set(a + b) <= set(POOL)
