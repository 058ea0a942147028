"""`regimetry evaluate`: re-score an exported bundle on any bars with ONNX Runtime only, the way the worker runs it.

Reading the bars (no default source: the bundle's own training data only when asked for by name), cutting them
to --start/--end with the warm-up every scored window needs, and saying plainly where the scored windows
overlap the bundle's training period (in-sample). The scores themselves are regimetry/scoring.py's.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np

from regimetry import diagnostics, scoring

BUNDLE_DATA = "bundle"  # `regimetry evaluate --data bundle`: the bars named in the bundle's manifest
DATA_REQUIRED = (
    "--data is required (there is no default): 'eurusd' (the hourly EURUSD sample), 'synthetic' "
    "(seeded planted regimes), a path to a CSV/parquet file of bars, or 'bundle' for the bars the "
    "bundle was trained on (as named in its manifest; in-sample unless --start is after its "
    "training end)"
)

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH = re.compile(r"^[+-]?\d+(\.\d*)?$")


def parse_when(value: str | int | float | None, end: bool = False) -> int | None:
    """--start/--end -> epoch seconds (UTC). Accepts epoch seconds or ISO 8601 ('2017-10-01',
    '2017-10-01T09:00', '2017-10-01T09:00:00Z', '...+02:00'); times without an offset are UTC. A bare date
    as ``end`` means the end of that day (23:59:59), so --start 2017-10-01 --end 2017-12-31 is the quarter."""
    from regimetry.data import BarDataError

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return int(value)
    s = str(value).strip()
    if _EPOCH.match(s):
        return int(float(s))
    try:
        d = dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise BarDataError(
            f"{'--end' if end else '--start'} {value!r}: not an ISO date/time "
            "(e.g. 2017-10-01 or 2017-10-01T09:00Z) nor epoch seconds"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    if end and _DATE_ONLY.match(s):
        d += dt.timedelta(days=1, seconds=-1)
    return int(d.timestamp())


def load_scoring_bars(data: str | None, manifest: dict):
    """(bars, planted labels or None, source actually read, whether it is the bundle's own data)."""
    from regimetry.data import BarDataError, BarSeries, resolve_data

    if data is None or not str(data).strip():
        raise BarDataError(DATA_REQUIRED)
    own = str(data).strip().lower() == BUNDLE_DATA
    trained = manifest.get("data") or {}
    source = str(trained.get("source") or "") if own else str(data)
    if own and not source:
        raise BarDataError("--data bundle: this bundle's manifest names no data source; pass --data explicitly")
    try:
        if source.lower().startswith("synthetic"):
            from regimetry.synthetic import generate_bars

            syn = generate_bars()
            series, planted = syn.bars, syn.labels
        else:
            series, planted = resolve_data(source), None
    except BarDataError as exc:
        if own:
            raise BarDataError(
                f"--data bundle: the bundle was trained on {source!r}, which cannot be read here: {exc}"
            ) from None
        raise
    if own and trained.get("symbol"):
        series = BarSeries(series.times, series.values, trained["symbol"])
    return series, planted, source, own


def _iso(t) -> str | None:
    from regimetry.data import iso_utc

    return None if t is None else iso_utc(int(t))


def training_period(manifest: dict) -> dict:
    """The bundle's training data as recorded in manifest["data"], with ISO times."""
    d = manifest.get("data") or {}
    return {
        "source": d.get("source"),
        "symbol": d.get("symbol"),
        "n_bars": d.get("n_bars"),
        "start": _iso(d.get("start")),
        "end": _iso(d.get("end")),
        "train_end": _iso(d.get("train_end")),
        "start_epoch": d.get("start"),
        "end_epoch": d.get("end"),
        "train_end_epoch": d.get("train_end"),
    }


def training_overlap(window_end: np.ndarray, symbol: str, manifest: dict) -> dict:
    """Scored windows whose last bar falls inside the bundle's training period [start, train_end]: on the
    same symbol those are windows the bundle was trained on, so their scores are in-sample."""
    d = manifest.get("data") or {}
    t0, t1 = d.get("start"), d.get("train_end")
    out: dict[str, object] = {"training_windows": 0, "share": 0.0, "same_symbol": None, "warning": None}
    if t0 is None or t1 is None or len(window_end) == 0:
        return out
    inside = (window_end >= int(t0)) & (window_end <= int(t1))
    n = int(inside.sum())
    same = d.get("symbol") is None or str(d.get("symbol")).upper() == str(symbol).upper()
    out.update(training_windows=n, share=float(n / len(window_end)), same_symbol=bool(same))
    if n:
        span = f"{_iso(window_end[inside].min())} .. {_iso(window_end[inside].max())}"
        if same:
            out["warning"] = (
                f"{n} of {len(window_end)} scored windows ({n / len(window_end):.0%}, ending "
                f"{span}) lie inside the bundle's training period ({_iso(t0)} .. {_iso(t1)}, "
                f"{d.get('symbol')}): those steps are IN-SAMPLE, not a test; score "
                f"--start after {_iso(t1)} for out-of-sample figures"
            )
        else:
            out["warning"] = (
                f"{n} of {len(window_end)} scored windows (ending {span}) fall in the bundle's "
                f"training period ({_iso(t0)} .. {_iso(t1)}) but on symbol {symbol}, not "
                f"{d.get('symbol')}: probably not the training bars, though the same period"
            )
    return out


def score_bundle(
    bundle: str | Path, data: str | None, start: str | int | None = None, end: str | int | None = None
) -> dict:
    """Re-score an exported bundle on any bars with ONNX Runtime only: what the worker would have emitted.

    ``data``: 'eurusd', 'synthetic', a CSV/parquet path, or 'bundle' (the source named in the manifest); no
    default. ``start``/``end`` (ISO or epoch, see parse_when) keep the windows whose last bar lies in
    [start, end]; the bars before start that those windows and the forecaster's input need are read as
    warm-up, nothing after end is read, so every scored step's next window ends in [start, end] too.
    """
    from regimetry.data import BarDataError
    from regimetry.flat_next import flat_next_windows, next_window_regimes
    from regimetry.inference import RegimeModel

    model = RegimeModel(bundle)
    b = model.bundle
    m = b.manifest
    k, s, h = b.n_clusters, b.stride, b.history_bars
    series, planted, source, own = load_scoring_bars(data, m)
    t_start, t_end = parse_when(start), parse_when(end, end=True)
    if t_start is not None and t_end is not None and t_start > t_end:
        raise BarDataError(f"--start {_iso(t_start)} is after --end {_iso(t_end)}")
    times = series.times
    stop = len(series) if t_end is None else int(np.searchsorted(times, t_end, side="right"))
    first = 0 if t_start is None else int(np.searchsorted(times, t_start, side="left"))
    # bars before the first scored window's end bar: its feature history, the decoder's memory of earlier costs
    # and the forecaster's earlier embeddings, so the first scored bar gets exactly what the worker emitted
    warmup = h - 1 + model.decoder.memory - 1 + (b.input_length - 1) * s
    lo = max(0, first - warmup)
    sub = series.slice(lo, stop)
    span_msg = f"{source}: bars {_iso(times[0])} .. {_iso(times[-1])}" if len(series) else f"{source}: no bars"
    if len(sub) < h + s:
        raise BarDataError(
            f"too few bars to score in the requested range ({len(sub)} read, need at least "
            f"{h + s}: {h} for a window plus {s} for the next step); {span_msg}"
        )
    r = model.run_series(sub.values)
    n = len(r.regime)
    end_bar = r.offset + np.arange(n)  # index into sub of each window's last bar
    window_end = sub.times[end_bar]
    rows = np.flatnonzero(window_end >= t_start) if t_start is not None else np.arange(n)
    if len(rows) == 0:
        raise BarDataError(f"no window ends in the requested range; {span_msg}")
    steps = rows[(r.next_regime[rows] >= 0) & (rows + s < n)]
    if len(steps) == 0:
        raise BarDataError(f"no step with both a forecast and a next window in the requested range; {span_msg}")

    # flat-next: each step's window extended by `stride` flat bars, embedded, and decoded one step ahead from
    # the decoder's values at that step, like any window
    flat_w = flat_next_windows(sub.values, end_bar[steps], b.spec, b.scaler, b.window_size, n_flat=s)
    assert r.values is not None, "run_series always returns the decoder values"
    flat_next = next_window_regimes(model.space, model.decoder, r.values[steps], flat_w, model.embed(flat_w))

    reg = r.regime[rows]
    # the training profiles count durations in steps of `stride` bars: measure the scored ones the same way
    scored_dur = diagnostics.mean_durations(reg[::s], k)
    profiles = m.get("regime_profiles") or []
    out = {
        "model_version": m["model_version"],
        "data": {
            "source": source,
            "requested": str(data),
            "bundle_own_data": own,
            "symbol": series.symbol,
            "n_bars": len(series),
            "n_bars_read": len(sub),
            "n_warmup_bars": int(end_bar[rows[0]]),
            "start": _iso(t_start),
            "end": _iso(t_end),
            "first_window_end": _iso(window_end[rows[0]]),
            "last_window_end": _iso(window_end[rows[-1]]),
            "n_events": int(len(rows)),
            "n_steps": int(len(steps)),
        },
        "bundle_training": training_period(m),
        "training_overlap": training_overlap(window_end[rows], series.symbol, m),
        "regime_shares": diagnostics.shares(reg, k).tolist(),
        "regimes": {
            "unit": f"mean_duration in windows (steps of {s} bar{'s' if s > 1 else ''})",
            "scored": {"shares": diagnostics.shares(reg, k).tolist(), "mean_duration": scored_dur.tolist()},
            "training": {
                "shares": list(m["baseline"]["cluster_distribution"]),
                "mean_duration": [p.get("mean_duration") for p in profiles],
            },
        },
        "next_regime": scoring.next_regime_report(
            r.regime[steps],
            r.regime[steps + s],
            r.next_regime[steps],
            np.asarray(m["baseline"]["transition_matrix"]),
            k,
            flat_next=flat_next,
        ),
        "drift": scoring.drift_scores(reg, r.proba[rows].max(1), r.ood[rows], m["baseline"], k),
        "clustering": {
            **diagnostics.balance(reg, k),
            "stickiness": diagnostics.stickiness(diagnostics.transition_matrix(reg, k)),
            "mean_duration": diagnostics.mean_duration(reg),
        },
    }
    if planted is not None:
        out["planted_regimes"] = {
            "ari_regimetry": scoring.adjusted_rand_index(planted[lo + end_bar[rows]], reg),
            "ari_hmm": None,
        }
    return out
