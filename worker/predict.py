"""`regimetry predict`: the regime events the worker would emit for a file of bars, without Kafka or Redis.

For every bar with a full window: the current regime and its probabilities, the predicted next regime and
its probabilities, the dwell (bars_in_regime), the OOD score, the model version and the event id. The
numbers come from RegimeModel.run_series (the batch reference the worker is tested against) and every event
from worker/events.py::build_event, with the bundle, OOD threshold and profiles opened by
worker/serving.py::load_serving as the worker opens them; so ids, field layout and floats are the worker's.

Large files are processed in chunks of windows. run_series is a batch pass, but every number of a bar is a
finite function of the bars before it (features: history_bars bars; the jump decoder: the costs of its last
`memory` windows; the forecaster: the last (L - 1) * stride + 1 embeddings), so each chunk is run with
(memory - 1) + (L - 1) * stride windows of context before its first new window (history_bars - 1 more bars
for that first context window) and only the new rows are kept; the dwell continues from the previous chunk's
last regime and dwell (regimetry.regimes.dwell). ONNX Runtime's encoder output for a window differed in the
last bits when a block held a single window (RegimeModel.embed now encodes a lone window as two copies); to
keep the blocks themselves identical anyway, chunks are cut where a one-pass run cuts its encoder blocks: the
chunk size is rounded up to a multiple of RegimeModel.ENCODER_BLOCK and the context start rounded down to one,
and the encoder sees the very blocks of a one-pass run. The forecaster's rows do not depend on their batch
(measured, batch sizes 1 to 512) and the numpy steps are row by row.
Chunked output equals one-pass output byte for byte (tests/test_predict.py).

Nothing here imports TensorFlow, scikit-learn or the trainer. Reading a CSV/parquet file of bars needs pandas
(and parquet output pyarrow): the `dev` or `train` extra; the worker-only image lacks them, and the command
then says so.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

DEFAULT_CHUNK = 8192  # windows per chunk (a multiple of RegimeModel.ENCODER_BLOCK)
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


# -- the events ----------------------------------------------------------------------------------------------
def context_windows(model) -> int:
    """Windows of context each chunk needs before its first new window: the decoder's memory - 1 plus the
    forecaster's span (L - 1) * stride. In bars: history_bars - 1 more."""
    b = model.bundle
    return int(model.decoder.memory) - 1 + (b.input_length - 1) * b.stride


def chunks(n_windows: int, chunk_size: int, context: int, block: int = 1) -> Iterator[tuple[int, int, int]]:
    """(first new window, end, first context window) of each chunk: the chunk size is rounded up and the
    context start down to a multiple of `block`."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    size = -(-chunk_size // block) * block
    for a in range(0, n_windows, size):
        yield a, min(n_windows, a + size), max(0, (a - context) // block * block)


def n_windows(model, series) -> int:
    """Bars of `series` with a full window (BarDataError if none)."""
    from regimetry.data import BarDataError

    h = model.bundle.history_bars
    if len(series) < h:
        raise BarDataError(f"too few bars for one window: {len(series)} read, the bundle needs {h}")
    return len(series) - h + 1


def predict_events(
    serving,
    series,
    symbol: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[list[dict]]:
    """The worker's events for every bar of `series` (a regimetry.data.BarSeries) with a full window, one list
    per chunk, in bar order. `serving` is a worker.serving.Serving; `progress(done, total)` is called after
    each chunk with counts of windows."""
    from regimetry.regimes import dwell
    from worker.events import build_event

    model = serving.model
    h = model.bundle.history_bars
    sym = symbol or series.symbol
    n = n_windows(model, series)
    times = series.times[h - 1 :].tolist()
    previous, previous_dwell = None, 0
    for a, e, lo in chunks(n, chunk_size, context_windows(model), model.ENCODER_BLOCK):
        r = model.run_series(series.values[lo : e + h - 1])
        keep = slice(a - lo, None)
        regime = r.regime[keep].tolist()
        dw = dwell(r.regime[keep], previous, previous_dwell).tolist()
        proba = r.proba[keep].tolist()
        next_regime = r.next_regime[keep].tolist()
        next_proba = r.next_proba[keep].tolist()
        ood = r.ood[keep].tolist()
        docs = []
        for i in range(e - a):
            t = times[a + i]
            has_fc = next_regime[i] >= 0
            docs.append(
                build_event(
                    sym,
                    t,
                    serving.version,
                    regime[i],
                    proba[i],
                    previous,
                    dw[i],
                    next_regime[i] if has_fc else None,
                    next_proba[i] if has_fc else None,
                    ood[i],
                    serving.ood_threshold,
                    serving.profiles,
                    emitted_at=float(t),
                )
            )
            previous = regime[i]
        previous_dwell = dw[-1]
        if progress is not None:
            progress(e, n)
        yield docs


# -- flat rows and writers --------------------------------------------------------------------------------------
def columns(k: int) -> list[str]:
    return (
        ["symbol", "bar_time", "bar_time_utc", "model_version", "event_id", "regime", "confidence"]
        + [f"p_{i}" for i in range(k)]
        + ["regime_changed", "previous_regime", "bars_in_regime", "predicted_regime", "predicted_confidence"]
        + [f"q_{i}" for i in range(k)]
        + ["ood_score", "ood"]
    )


def flat_row(doc: dict, k: int) -> list:
    """One event as a row in columns(k) order (None where there is no forecast / no previous regime)."""
    from regimetry.data import iso_utc

    pred = doc["predicted"]
    return [
        doc["symbol"],
        doc["bar_time"],
        iso_utc(doc["bar_time"]),
        doc["model_version"],
        doc["event_id"],
        doc["regime"]["id"],
        doc["regime"]["confidence"],
        *doc["regime"]["probabilities"],
        doc["regime_changed"],
        doc["previous_regime"],
        doc["bars_in_regime"],
        pred["regime"] if pred else None,
        pred["confidence"] if pred else None,
        *(pred["probabilities"] if pred else [None] * k),
        doc["ood_score"],
        doc["ood"],
    ]


class _Writer:
    """Writes to `<out>.part` and renames it to `out` on success, so a failed run leaves no half report."""

    def __init__(self, path: Path, k: int):
        self.path, self.k = path, k
        self.tmp = path.with_name(path.name + ".part")

    def write(self, docs: list[dict]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def close(self, ok: bool = True) -> None:
        self._close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class CsvWriter(_Writer):
    def __init__(self, path: Path, k: int):
        super().__init__(path, k)
        self.f = open(self.tmp, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(columns(k))

    def write(self, docs: list[dict]) -> None:
        self.w.writerows(flat_row(d, self.k) for d in docs)

    def _close(self) -> None:
        self.f.close()


class JsonlWriter(_Writer):
    """One event per line, encoded by worker/events.py::encode: the bytes the worker sends."""

    def __init__(self, path: Path, k: int):
        super().__init__(path, k)
        self.f = open(self.tmp, "wb")

    def write(self, docs: list[dict]) -> None:
        from worker.events import encode

        self.f.write(b"".join(encode(d) + b"\n" for d in docs))

    def _close(self) -> None:
        self.f.close()


class JsonWriter(JsonlWriter):
    """A JSON array of the events, one per line, written as they come."""

    def __init__(self, path: Path, k: int):
        super().__init__(path, k)
        self.f.write(b"[")
        self.first = True

    def write(self, docs: list[dict]) -> None:
        from worker.events import encode

        for d in docs:
            self.f.write((b"\n" if self.first else b",\n") + encode(d))
            self.first = False

    def _close(self) -> None:
        self.f.write(b"\n]\n")
        self.f.close()


class ParquetWriter(_Writer):
    """One row group per chunk (pyarrow)."""

    def __init__(self, path: Path, k: int):
        super().__init__(path, k)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("parquet output needs pyarrow (pip install pyarrow); or write .csv/.jsonl") from None
        self.pa = pa
        f64, i64 = pa.float64(), pa.int64()
        types = {
            "symbol": pa.string(),
            "bar_time": i64,
            "bar_time_utc": pa.string(),
            "model_version": pa.string(),
            "event_id": pa.string(),
            "regime": i64,
            "confidence": f64,
            "regime_changed": pa.bool_(),
            "previous_regime": i64,
            "bars_in_regime": i64,
            "predicted_regime": i64,
            "predicted_confidence": f64,
            "ood_score": f64,
            "ood": pa.bool_(),
        }
        self.schema = pa.schema([(c, types.get(c, f64)) for c in columns(k)])
        self.w = pq.ParquetWriter(str(self.tmp), self.schema)

    def write(self, docs: list[dict]) -> None:
        if not docs:
            return
        cols = list(zip(*(flat_row(d, self.k) for d in docs)))
        self.w.write_table(
            self.pa.Table.from_arrays(
                [self.pa.array(c, type=f.type) for c, f in zip(cols, self.schema)], schema=self.schema
            ),
            row_group_size=len(docs),
        )

    def _close(self) -> None:
        self.w.close()


WRITERS = {"csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out {path}: unknown extension {path.suffix!r}; use one of {', '.join(FORMATS)}")
    return fmt


# -- the summary without --out ---------------------------------------------------------------------------------
class Summary:
    """Regime shares, transitions and mean dwell of the predicted bars, and the last few events: counted as
    the chunks go by, so nothing but the last rows is kept."""

    def __init__(self, k: int, tail: int = 5):
        self.k = k
        self.rows = [0] * k
        self.spells = [0] * k  # runs of one regime (cut at the ends of the data)
        self.transitions = 0
        self.ood = 0
        self.last: deque = deque(maxlen=max(tail, 0))
        self.first_time: int | None = None
        self.last_time: int | None = None
        self._prev: int | None = None

    def add(self, docs: list[dict]) -> None:
        for d in docs:
            r = d["regime"]["id"]
            self.rows[r] += 1
            if r != self._prev:
                self.spells[r] += 1
            self.transitions += d["regime_changed"]
            self.ood += d["ood"]
            self._prev = r
            if self.first_time is None:
                self.first_time = d["bar_time"]
            self.last_time = d["bar_time"]
        self.last.extend(docs[-self.last.maxlen :] if self.last.maxlen else [])

    def print(self, console, manifest: dict, symbol: str) -> None:
        from rich.table import Table

        from regimetry.data import iso_utc

        n = sum(self.rows)
        trained = {int(p["id"]): p for p in manifest.get("regime_profiles") or []}
        console.print(
            f"[bold]{symbol}[/]: {n} bars with a full window, {iso_utc(self.first_time or 0)} .. "
            f"{iso_utc(self.last_time or 0)}; model {manifest['model_version']}; {self.transitions} transitions, "
            f"{self.ood} OOD bars ({self.ood / n:.1%})"
        )
        t = Table(title="regimes")
        for c in ("regime", "bars", "share", "share (training)", "spells", "mean dwell (bars)"):
            t.add_column(c, justify="right")
        for i in range(self.k):
            share = trained.get(i, {}).get("share")
            t.add_row(
                str(i),
                str(self.rows[i]),
                f"{self.rows[i] / n:.3f}",
                "-" if share is None else f"{float(share):.3f}",
                str(self.spells[i]),
                f"{self.rows[i] / self.spells[i]:.1f}" if self.spells[i] else "-",
            )
        total_spells = sum(self.spells)
        t.add_row("all", str(n), "1.000", "", str(total_spells), f"{n / total_spells:.1f}")
        console.print(t)
        if not self.last:
            return
        t = Table(title=f"last {len(self.last)} bars")
        for c in ("bar time (UTC)", "regime", "conf.", "dwell", "next", "next conf.", "ood score", "ood", "event id"):
            t.add_column(c, justify="right", no_wrap=c in ("bar time (UTC)", "event id"))
        for d in self.last:
            p = d["predicted"]
            t.add_row(
                iso_utc(d["bar_time"]),
                str(d["regime"]["id"]) + (" *" if d["regime_changed"] else ""),
                f"{d['regime']['confidence']:.3f}",
                str(d["bars_in_regime"]),
                "-" if p is None else str(p["regime"]),
                "-" if p is None else f"{p['confidence']:.3f}",
                f"{d['ood_score']:.3f}",
                "yes" if d["ood"] else "no",
                d["event_id"],
            )
        console.print(t)
        console.print("* = regime changed at this bar; dwell = bars_in_regime; next = predicted regime")


# -- the command -----------------------------------------------------------------------------------------------
def predict_cmd(
    bundle: Path | None = typer.Option(
        None,
        help="Bundle folder or models root with CURRENT (default: REGIMETRY_BUNDLE or exported_models, as the worker).",
    ),
    data: str | None = typer.Option(
        None,
        help="Required: 'eurusd', 'synthetic', a CSV/parquet path, or 'bundle' = the bars the bundle was trained on.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write every bar's event here: .csv, .parquet "
        "(flat columns), .jsonl or .json (the worker's event documents). Without "
        "it: a summary and the last bars.",
    ),
    symbol: str | None = typer.Option(None, help="Symbol of the events (default: the data's)."),
    chunk_size: int = typer.Option(
        DEFAULT_CHUNK,
        min=1,
        help="Windows per chunk, rounded up to a multiple of 64 (bounds memory; the output does not depend on it).",
    ),
    ood_quantile: str | None = typer.Option(
        None,
        help="Training quantile of the OOD threshold (default: REGIMETRY_OOD_QUANTILE or the worker's default, q99).",
    ),
    tail: int = typer.Option(5, min=0, help="Bars shown at the end of the summary (without --out)."),
) -> None:
    """The regime events the worker would emit for these bars, computed offline (ONNX Runtime only)."""
    from regimetry.bundle import BundleError, resolve_bundle_dir
    from regimetry.console import console, fail, stage_progress
    from regimetry.data import BarDataError
    from regimetry.evaluation import DATA_REQUIRED, load_scoring_bars
    from worker.serving import load_serving
    from worker.settings import SettingsError, load_settings

    if data is None or not data.strip():
        fail(DATA_REQUIRED)
    writer = None
    try:
        fmt = output_format(out) if out is not None else None
        overrides = {"bundle": str(bundle)} if bundle is not None else {}
        if ood_quantile:
            overrides["ood_quantile"] = ood_quantile
        settings = load_settings(None, **overrides)
        serving = load_serving(resolve_bundle_dir(settings.bundle), settings)
        series, _, source, _ = load_scoring_bars(data, serving.model.bundle.manifest)
        n_windows(serving.model, series)
        k = serving.n_clusters
        summary = Summary(k, tail)
        sym = symbol or series.symbol
        if out is not None and fmt is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            writer = WRITERS[fmt](out, k)
        console.print(
            f"[bold]regimetry predict[/] model {serving.version} on {source} ({sym}, {len(series)} bars)"
            f", OOD above {serving.ood_threshold:.4g} ({settings.ood_quantile})"
        )
        with stage_progress() as progress:

            def step(done: int, total: int) -> None:
                progress("predict", done, total, "windows")

            for docs in predict_events(serving, series, sym, chunk_size, step):
                summary.add(docs)
                if writer is not None:
                    writer.write(docs)
        if writer is not None:
            writer.close()
            writer = None
    except ImportError as exc:  # a worker-only install: no pandas to read bar files, no pyarrow for parquet
        fail(
            f"{exc.name or exc}: not installed; reading bar files (and writing parquet) needs pandas and pyarrow: "
            f"pip install 'regimetry-stream[worker,dev]'"
        )
    except (BundleError, BarDataError, SettingsError, ValueError, OSError) as exc:
        if writer is not None:
            writer.close(ok=False)
        fail(str(exc))
    if out is not None:
        console.print(f"{sum(summary.rows)} events written to {out} ({fmt})")
    else:
        summary.print(console, serving.model.bundle.manifest, sym)
