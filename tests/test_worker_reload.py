"""Hot reload (issue 6, item 6): the CURRENT pointer moves to another bundle while the worker runs.

Runs the worker's Runtime and BatchProcessor in-process against the session Redis (no Kafka needed for
this: the switch happens between micro-batches, which is all the agent adds). Bundles: the tiny test bundle,
then the committed default bundle (another window, history and embedding size).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import series

from devstack.kafka_kit import series_messages
from regimetry.bundle import resolve_bundle_dir
from regimetry.inference import RegimeModel
from worker.pipeline import Record
from worker.settings import load_settings

pytestmark = pytest.mark.slow
DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "exported_models"


def records(msgs: list, start: int = 0) -> list[Record]:
    return [Record(k, v, "bars", 0, start + i, time.time()) for i, (k, v) in enumerate(msgs)]


def test_switch_at_batch_boundary_and_refuse_a_bad_bundle(stack, tiny_bundle, tmp_path, fresh_symbols):
    from worker.app import Runtime

    second = resolve_bundle_dir(DEFAULT_MODELS)
    root = tmp_path / "models"
    root.mkdir()
    for b in (tiny_bundle, second):
        shutil.copytree(b, root / b.name)
    (root / "CURRENT").write_text(tiny_bundle.name)
    rt = Runtime(
        load_settings({}, bundle=str(root), redis_url=stack.redis_url, key_prefix="reload", state_cache_verify=True)
    )
    new_model = RegimeModel(root / second.name)
    (symbol,) = fresh_symbols(1)
    bars = series(symbol, new_model.bundle.history_bars + 60, seed=44)
    msgs = series_messages(symbol, bars.times, bars.values)
    cut = len(msgs) - 30

    async def run() -> tuple[list[dict], list[dict], float]:
        await rt.connect()
        before = [json.loads(v) for _, v in (await rt.processor.process(records(msgs[:cut]))).events]
        # a tampered bundle is refused and the current one keeps serving
        bad = root / "bad"
        shutil.copytree(tiny_bundle, bad)
        with open(bad / "encoder.onnx", "ab") as f:
            f.write(b"\0")
        (root / "CURRENT").write_text("bad")
        await rt.check_for_new_bundle()
        rt.apply_pending()
        assert rt.serving.version == RegimeModel(tiny_bundle).bundle.version
        failures = rt.metrics.reload_failures._value.get()
        # the real switch
        (root / "CURRENT").write_text(second.name)
        await rt.check_for_new_bundle()
        rt.apply_pending()
        after = [json.loads(v) for _, v in (await rt.processor.process(records(msgs[cut:], cut))).events]
        return before, after, failures

    before, after, failures = asyncio.run(run())
    rebuilds = sum(rt.metrics.state_rebuilds.labels(result=r)._value.get() for r in ("exact", "short", "dwell_bound"))
    assert failures == 1
    assert {e["model_version"] for e in before} == {RegimeModel(tiny_bundle).bundle.version}
    assert {e["model_version"] for e in after} == {new_model.bundle.version}
    assert [e["bar_time"] for e in after] == bars.times[cut:].tolist()

    # after the switch every event equals the new model's batch reference: the first batch of the new model
    # rebuilt the symbol's costs, embeddings, last regime and dwell from its stored bars (here the whole
    # series, fewer than history + memory - 1 bars: a "short" rebuild, which then is the series' reference),
    # so regimes, probabilities, dwell and forecasts continue from the first bar after the switch
    ref = new_model.run_series(bars.values)
    rows = np.arange(cut, len(bars)) - ref.offset
    np.testing.assert_array_equal([e["regime"]["id"] for e in after], ref.regime[rows])
    np.testing.assert_allclose([e["regime"]["probabilities"] for e in after], ref.proba[rows], atol=1e-5)
    np.testing.assert_array_equal([e["bars_in_regime"] for e in after], ref.dwell[rows])
    np.testing.assert_allclose([e["ood_score"] for e in after], ref.ood[rows], atol=1e-5, rtol=1e-5)
    assert [e["predicted"]["regime"] for e in after] == ref.next_regime[rows].tolist()
    np.testing.assert_allclose([e["predicted"]["probabilities"] for e in after], ref.next_proba[rows], atol=1e-5)
    previous = [ref.regime[rows[0] - 1]] + [e["regime"]["id"] for e in after[:-1]]
    assert [e["regime_changed"] for e in after] == [p != e["regime"]["id"] for p, e in zip(previous, after)]
    assert rebuilds == 1, "one symbol rebuilt, once"
