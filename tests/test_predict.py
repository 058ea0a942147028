"""`regimetry predict` (worker/predict.py, issue 16 item 1): the worker's events for a file of bars, offline.

The reference is the worker itself: its BatchProcessor runs in-process against the session Redis on the same
bars (as in tests/test_worker_reload.py), and every event must equal predict's byte for byte once the
worker's emitted_at is set to the bar time (what predict writes there); in a one-bar-per-batch trickle, where
ONNX Runtime embeds each window alone, everything but the floats' last bits.
"""

from __future__ import annotations

import asyncio
import csv
import json
import textwrap
import time

import pytest
from helpers import run_blocked, schema_validator, series

from devstack.kafka_kit import series_messages
from worker.events import encode

SYMBOL = "PRED"
ONE_PASS = 10**9


def _app():
    from regimetry import cli

    if not any(c.name == "predict" for c in cli.app.registered_commands):
        cli._register()
    return cli.app


def _invoke(*args: str):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_app(), ["predict", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _serving(bundle):
    from worker.serving import load_serving
    from worker.settings import load_settings

    return load_serving(bundle, load_settings({}))


def _predict(serving, bars, chunk_size: int) -> list[dict]:
    from worker.predict import predict_events

    return [d for docs in predict_events(serving, bars, chunk_size=chunk_size) for d in docs]


@pytest.fixture(scope="module")
def bars(tiny_bundle):
    """Bars of one symbol: a few hundred windows, well beyond the decoder's memory and the chunk sizes."""
    from regimetry.inference import RegimeModel

    model = RegimeModel(tiny_bundle)
    return series(SYMBOL, model.bundle.history_bars + model.decoder.memory + 300, seed=61)


@pytest.fixture(scope="module")
def bars_file(bars, tmp_path_factory):
    """The same bars as parquet (lossless floats, unlike a CSV round trip through pandas)."""
    import pandas as pd

    path = tmp_path_factory.mktemp("bars") / "pred_bars.parquet"
    pd.DataFrame(
        {
            "time": pd.to_datetime(bars.times, unit="s", utc=True),
            **{c: bars.values[:, j] for j, c in enumerate(("open", "high", "low", "close", "volume"))},
        }
    ).to_parquet(path)
    return path


def _worker_events(stack, bundle, prefix: str, bars, sizes) -> list[bytes]:
    """The encoded events the worker's BatchProcessor sends for `bars`, fed in micro-batches of `sizes`
    (cycled), against the session Redis under its own key prefix."""
    from worker.app import Runtime
    from worker.pipeline import Record
    from worker.settings import load_settings

    rt = Runtime(
        load_settings({}, bundle=str(bundle), redis_url=stack.redis_url, key_prefix=prefix, state_cache_verify=True)
    )
    msgs = series_messages(SYMBOL, bars.times, bars.values)

    async def run() -> list[bytes]:
        await rt.connect()
        got, i, n = [], 0, 0
        while i < len(msgs):
            part = msgs[i : i + sizes[n % len(sizes)]]
            records = [Record(k, v, "bars", 0, i + j, time.time()) for j, (k, v) in enumerate(part)]
            got += [v for _, v in (await rt.processor.process(records)).events]
            i, n = i + len(part), n + 1
        return got

    return asyncio.run(run())


def _at_bar_time(value: bytes) -> dict:
    doc = json.loads(value)
    return {**doc, "emitted_at": float(doc["bar_time"])}


def _assert_close(a, b, path="event"):
    """Equal, and of the same types; floats to 1e-9 relative / 1e-12 absolute (float64 noise of the features
    of a one-window history)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    else:
        assert a == b and type(a) is type(b), path


@pytest.mark.slow
def test_predict_equals_the_workers_events(stack, tiny_bundle, bars, bars_file, tmp_path):
    out = tmp_path / "events.jsonl"
    _invoke(
        "--bundle",
        str(tiny_bundle),
        "--data",
        str(bars_file),
        "--symbol",
        SYMBOL,
        "--out",
        str(out),
        "--chunk-size",
        "100",
    )
    predicted = out.read_bytes().splitlines()
    n = len(bars) - _serving(tiny_bundle).history + 1
    assert len(predicted) == n

    # micro-batches of several sizes: byte for byte
    live = _worker_events(stack, tiny_bundle, "predict-batches", bars, [5, 32, 200, 3, 17, 64])
    assert len(live) == n
    assert [encode(_at_bar_time(v)) for v in live] == predicted, "every field, emitted_at aside, byte for byte"

    # a live trickle, one bar per micro-batch: ids, regimes, dwell, flags and layout exactly; the floats to
    # float64 noise (RegimeModel.embed runs a lone window as two copies, which removed ONNX Runtime's batch-1
    # difference of ~6e-8; what remains comes from the features of a one-window history, ~1e-16 raw)
    trickle = _worker_events(stack, tiny_bundle, "predict-trickle", bars, [1])
    assert len(trickle) == n
    for v, p in zip(trickle, predicted):
        _assert_close(_at_bar_time(v), json.loads(p))


@pytest.mark.slow
def test_chunked_equals_one_pass_and_the_batch_reference(tiny_bundle, bars):
    serving = _serving(tiny_bundle)
    one = _predict(serving, bars, ONE_PASS)
    ref = serving.model.run_series(bars.values)
    assert [d["bar_time"] for d in one] == bars.times[ref.offset :].tolist()
    assert [d["regime"]["id"] for d in one] == ref.regime.tolist()
    assert [d["regime"]["probabilities"] for d in one] == ref.proba.tolist()
    assert [d["bars_in_regime"] for d in one] == ref.dwell.tolist()
    assert [d["ood_score"] for d in one] == ref.ood.tolist()
    assert [d["predicted"]["regime"] if d["predicted"] else -1 for d in one] == ref.next_regime.tolist()
    has_fc = ref.next_regime >= 0
    assert [d["predicted"]["probabilities"] for d in one if d["predicted"]] == ref.next_proba[has_fc].tolist()
    assert 0 < has_fc.sum() < len(one) and 0 < sum(d["regime_changed"] for d in one)
    expected = [encode(d) for d in one]
    for chunk in (1, 64, 100, serving.model.decoder.memory + 1, 192):  # rounded up to multiples of 64
        assert [encode(d) for d in _predict(serving, bars, chunk)] == expected, f"chunk size {chunk}"


@pytest.mark.slow
def test_files_are_written_and_read_back(tiny_bundle, bars, bars_file, tmp_path):
    import pyarrow.parquet as pq

    from worker.predict import columns

    serving = _serving(tiny_bundle)
    k, n = serving.n_clusters, len(bars) - serving.history + 1
    cols = columns(k)
    assert cols[:7] == ["symbol", "bar_time", "bar_time_utc", "model_version", "event_id", "regime", "confidence"]
    assert cols[-2:] == ["ood_score", "ood"] and f"p_{k - 1}" in cols and f"q_{k - 1}" in cols
    paths = {ext: tmp_path / f"out.{ext}" for ext in ("csv", "jsonl", "json", "parquet")}
    for path in paths.values():
        _invoke(
            "--bundle",
            str(tiny_bundle),
            "--data",
            str(bars_file),
            "--symbol",
            SYMBOL,
            "-o",
            str(path),
            "--chunk-size",
            "128",
        )
    assert not list(tmp_path.glob("*.part"))

    lines = paths["jsonl"].read_bytes().splitlines()
    docs = [json.loads(v) for v in lines]
    assert len(docs) == n
    assert [encode(d) for d in json.loads(paths["json"].read_bytes())] == lines
    validate = schema_validator("regime_event.schema.json")
    for d in docs:
        validate.validate(d)
        assert d["emitted_at"] == float(d["bar_time"])
    assert [d["event_id"] for d in docs] == [d["event_id"] for d in _predict(serving, bars, ONE_PASS)]

    with open(paths["csv"], newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == cols
        rows = [dict(zip(cols, r)) for r in reader]
    assert len(rows) == n
    for r, d in zip(rows, docs):
        assert r["event_id"] == d["event_id"] and int(r["bar_time"]) == d["bar_time"]
        assert int(r["regime"]) == d["regime"]["id"] and float(r["confidence"]) == d["regime"]["confidence"]
        assert [float(r[f"p_{i}"]) for i in range(k)] == d["regime"]["probabilities"]
        assert int(r["bars_in_regime"]) == d["bars_in_regime"] and float(r["ood_score"]) == d["ood_score"]
        assert r["regime_changed"] == str(d["regime_changed"]) and r["ood"] == str(d["ood"])
        assert r["previous_regime"] == ("" if d["previous_regime"] is None else str(d["previous_regime"]))
        pred = d["predicted"]
        assert r["predicted_regime"] == ("" if pred is None else str(pred["regime"]))
        assert [r[f"q_{i}"] for i in range(k)] == (
            [""] * k if pred is None else [repr(q) for q in pred["probabilities"]]
        )

    pf = pq.ParquetFile(paths["parquet"])
    assert pf.metadata.num_rows == n and pf.schema_arrow.names == cols
    assert pf.metadata.num_row_groups == -(-n // 128), "one row group per chunk"
    table = pf.read().to_pydict()
    assert table["event_id"] == [d["event_id"] for d in docs]
    assert table["bars_in_regime"] == [d["bars_in_regime"] for d in docs]
    assert table["q_0"] == [d["predicted"]["probabilities"][0] if d["predicted"] else None for d in docs]
    assert table["previous_regime"] == [d["previous_regime"] for d in docs]


@pytest.mark.slow
def test_summary_without_out(tiny_bundle, bars_file):
    from click.testing import Result

    result: Result = _invoke("--bundle", str(tiny_bundle), "--data", str(bars_file), "--tail", "3")
    text = result.output + (getattr(result, "stderr", "") or "")
    assert "transitions" in text and "mean dwell" in text and "last 3 bars" in text


# the worker-side commands alone, as a TensorFlow-free install has them (the blocker also blocks `trainer`, so
# regimetry.cli, which registers the trainer's commands too, is not the entry point here)
WORKER_CLI = """
    import typer, worker.cli
    app = typer.Typer()
    worker.cli.register(app)
    def cli(*args):
        try:
            app(list(args))
        except SystemExit as e:
            assert e.code in (0, None), e.code
"""


def _blocked(code: str):
    """Run code after WORKER_CLI in a process where TensorFlow, Keras, the trainer and scikit-learn are blocked."""
    return run_blocked(textwrap.dedent(WORKER_CLI) + textwrap.dedent(code))


def test_help_and_imports_without_tensorflow():
    assert "--chunk-size" in _invoke("--help").output
    r = _blocked("""
        import worker.predict
        cli("predict", "--help")
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "trainer", "sklearn"))
        assert not bad, bad
        print("ok")
    """)
    assert r.returncode == 0 and "--chunk-size" in r.stdout and "ok" in r.stdout, r.stderr


@pytest.mark.slow
def test_predict_runs_without_tensorflow(tiny_bundle, bars_file, tmp_path):
    out = tmp_path / "events.jsonl"
    r = _blocked(f"""
        cli("predict", "--bundle", {str(tiny_bundle)!r}, "--data", {str(bars_file)!r}, "--out", {str(out)!r})
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "trainer", "sklearn"))
        assert not bad, bad
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert len(out.read_bytes().splitlines()) > 0
