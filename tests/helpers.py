"""Plain helpers shared by several test modules (no fixtures: those are in fixtures_bundle and fixtures_stack).

One-topic helpers used by one or two modules stay next to them: research_helpers (test_search, test_refresh),
deploy_helpers (test_deploy). No test module imports from another test_*.py module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

# Deadline (seconds) of a wait for the session worker's events, dead letters or metrics.
TIMEOUT = 90


# -- synthetic input and schemas ---------------------------------------------------------------------------
def series(symbol: str, n_bars: int, seed: int, **kwargs):
    """Seeded synthetic bars for one symbol (regimetry.synthetic), optionally with other regimes. The bars
    depend on the seed only; the symbol is their label."""
    from regimetry.synthetic import generate_bars

    return generate_bars(n_bars=n_bars, seed=seed, symbol=symbol, **kwargs).bars


def schema_validator(name: str):
    """A compiled validator for one of the core's schemas (regimetry/schemas/*.json)."""
    from jsonschema import Draft202012Validator

    from regimetry.bundle import load_schema

    return Draft202012Validator(load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


# -- worker events against the batch reference -------------------------------------------------------------
def by_symbol(values: list[dict], symbol: str) -> list[dict]:
    """The events (or any documents with symbol and bar_time) of one symbol, in bar order."""
    return sorted((v for v in values if v["symbol"] == symbol), key=lambda v: v["bar_time"])


def assert_matches_reference(model, bars, got: list[dict]) -> None:
    """Events of one symbol equal the batch reference, bar for bar: regimes and dwell exactly, probabilities
    (the decoder's) and OOD scores to float noise (ONNX Runtime's embeddings vary in the last bits with the
    batch they are computed in)."""
    from worker.events import event_id

    ref = model.run_series(bars.values)
    times = bars.times[ref.offset :]
    assert [e["bar_time"] for e in got] == times.tolist(), "exactly one event per bar with a complete window"
    np.testing.assert_array_equal([e["regime"]["id"] for e in got], ref.regime)
    np.testing.assert_allclose([e["regime"]["probabilities"] for e in got], ref.proba, atol=1e-5)
    np.testing.assert_allclose([e["regime"]["confidence"] for e in got], ref.proba.max(1), atol=1e-5)
    np.testing.assert_array_equal([e["bars_in_regime"] for e in got], ref.dwell)
    np.testing.assert_allclose([e["ood_score"] for e in got], ref.ood, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal([e["predicted"]["regime"] if e["predicted"] else -1 for e in got], ref.next_regime)
    has_fc = ref.next_regime >= 0
    np.testing.assert_allclose(
        [e["predicted"]["probabilities"] for e, f in zip(got, has_fc) if f], ref.next_proba[has_fc], atol=1e-5
    )
    version = model.bundle.version
    for prev, e in zip([None] + got[:-1], got):
        assert e["event_id"] == event_id(e["symbol"], e["bar_time"], version)
        assert e["model_version"] == version
        changed = prev is not None and prev["regime"]["id"] != e["regime"]["id"]
        assert e["regime_changed"] == changed
        assert e["previous_regime"] == (prev["regime"]["id"] if changed else None)


# -- the trainer -------------------------------------------------------------------------------------------
def tiny_again(tmp_path):
    """Train the tiny profile a second time into tmp_path (same seed as the session fixture)."""
    from fixtures_bundle import tiny_config

    from trainer.pipeline import train

    return train(tiny_config(tmp_path))


# -- a process without the heavy parts ---------------------------------------------------------------------
# Prepended to a `python -c` script: TensorFlow, Keras, tf2onnx, scikit-learn (and joblib, which it brings) and
# the trainer package become unimportable, with the error an absent package raises, as on the worker image
# (`EXTRAS=worker,dev`).
BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    BLOCKED = ("tensorflow", "keras", "tf2onnx", "tf_keras", "sklearn", "joblib", "trainer")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BLOCKED:  # as if not installed
                raise ModuleNotFoundError(f"No module named {top!r} (blocked in this test)", name=top)
    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` (dedented) in a fresh interpreter behind BLOCKER; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def gone(pid: int) -> bool:
    """No process with this pid is left (what a test checks after stopping something it started)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
