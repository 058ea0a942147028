"""Drift alarms on real bars: false alarms where nothing was injected, detection delay where a shift was.

    python benchmarks/bench_drift_alarms.py [--bundle exported_models] [--data eurusd] [--starts 8]

Runs the bundle over the bars exactly as the worker would (RegimeModel.run_series), then its calibrated CUSUM
detectors (regimetry/drift_alarms.py, thresholds from the manifest) per stream:

- false alarms per 1,000 events on the bundle's training span and on its held-out span (the held-out span is
  real later data: an alarm there may be a real change, so it is an upper bound on the false-alarm rate);
- detection delay of injected shifts: from a bar of the held-out span on, every bar's high-low range (and the
  open's distance from the close) is scaled by a factor, closes unchanged (a volatility regime the training
  never saw); delay = bars from the injection to the first alarm of any detector, over ``--starts`` starting
  points, median and worst (no alarm within 500 bars counts as a miss).
"""

from __future__ import annotations

import argparse

import numpy as np

from regimetry.bundle import resolve_bundle_dir
from regimetry.data import resolve_data
from regimetry.drift_alarms import detectors_from_manifest, run_detectors, streams_of
from regimetry.inference import RegimeModel


def alarms_of(model: RegimeModel, values: np.ndarray) -> tuple[list[dict], int]:
    r = model.run_series(values)
    streams = streams_of(r.proba, r.regime, r.ood, r.next_regime)
    return run_detectors(detectors_from_manifest(model.bundle.manifest), streams), r.offset


def widened(values: np.ndarray, start: int, factor: float) -> np.ndarray:
    v = values.copy()
    c = v[start:, 3]
    v[start:, 1] = c * np.exp(factor * np.log(v[start:, 1] / c))
    v[start:, 2] = c * np.exp(factor * np.log(v[start:, 2] / c))
    v[start:, 0] = c * np.exp(factor * np.log(v[start:, 0] / c))
    v[start:, 0] = np.clip(v[start:, 0], v[start:, 2], v[start:, 1])
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default="exported_models")
    ap.add_argument("--data", default="eurusd")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--factors", default="2,3,5")
    args = ap.parse_args()
    model = RegimeModel(resolve_bundle_dir(args.bundle))
    m = model.bundle.manifest
    if not detectors_from_manifest(m):
        raise SystemExit(f"{m['model_version']} has no calibrated drift alarms (trained before them)")
    series = resolve_data(args.data)
    train_end = int(np.searchsorted(series.times, m["data"]["train_end"], side="right"))
    alarms, offset = alarms_of(model, series.values)
    bar = np.asarray([a["index"] for a in alarms], dtype=np.int64) + offset
    n_train_ev, n_held_ev = train_end - offset, len(series) - train_end
    in_train, in_held = (bar < train_end).sum(), (bar >= train_end).sum()
    print(f"{m['model_version']} on {args.data}: {len(series)} bars, training span ends at bar {train_end}")
    print(f"  target: >= {m['drift_alarms']['target_arl_events']:.0f} events between false alarms")
    print(
        f"  training span: {in_train} alarms in {n_train_ev} events ({1000 * in_train / max(n_train_ev, 1):.2f}/1000)"
    )
    print(f"  held-out span: {in_held} alarms in {n_held_ev} events ({1000 * in_held / max(n_held_ev, 1):.2f}/1000)")
    by = {}
    for a in alarms:
        by[a["detector"]] = by.get(a["detector"], 0) + 1
    print(f"  by detector: {by or 'none'}")
    starts = np.linspace(train_end + 50, len(series) - 520, args.starts).astype(int)
    for factor in (float(f) for f in args.factors.split(",")):
        delays = []
        for s in starts:
            got, off = alarms_of(model, widened(series.values, int(s), factor))
            after = [a["index"] + off - s for a in got if a["index"] + off >= s]
            delays.append(min(after) if after and min(after) <= 500 else None)
        found = [d for d in delays if d is not None]
        med = f"{np.median(found):.0f}" if found else "-"
        worst = f"{max(found)}" if found else "-"
        print(
            f"  range x{factor:g} from {len(starts)} held-out bars: detected {len(found)}/{len(starts)}, "
            f"delay median {med} bars, worst {worst}"
        )


if __name__ == "__main__":
    main()
