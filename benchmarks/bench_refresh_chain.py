"""What a chain of periodic refreshes serves on the bars that come after each one, against not refreshing.

    python benchmarks/bench_refresh_chain.py                       # EURUSD, GOOG, S&P 500: 4 refreshes, 10 % each
    python benchmarks/bench_refresh_chain.py --sliding \
        --out benchmarks/results/bench_refresh_chain_sliding.json
    python benchmarks/bench_refresh_chain.py --series goog --strengths 1,0

Why: `regimetry refresh` warm-starts a refit from the bundle in force and shrinks its regime centres toward the
previous ones (``clustering.anchor_strength``, 1 by default; trainer/jump_fit.py::shrink). That strength was
chosen on training bars for how well a refit keeps the regimes' ids (benchmarks/bench_warm_refit.py), not for
what the refreshed regimes say about the coming bars; an anchored chain follows its bars more slowly. This
script measures that cost, or its absence, as a user running the refresh every period would meet it.

Per series, rolling origin (benchmarks/bench_regime_spans.py's folds): the first model is trained on every
window before the first test span and exported. Every later fit reads every window before its span (expanding)
or, with ``--sliding``, only as many as the first model did (the refresher's REFRESH_WINDOW: old bars drop
out). At each later origin, on the series cut at the
end of that origin's test span (nothing later exists for any fit):

- ``stale``: the first model's bundle run over the bars (regimetry/inference.py, the worker's arithmetic): no
  refresh at all;
- ``warm s=...``: the previous refit of the same chain warm-started on the windows before the span, one chain
  per anchor strength (what `regimetry refresh` does each period; the chain goes on from each refit whether or
  not its agreement reaches the 0.9 a refresh publishes at, which is reported);
- ``scratch``: a from-scratch training on the same windows (what `regimetry train` does);
- ``yardstick``: the trailing-volatility one-liner cut into the from-scratch model's training shares.

Scores on each test span only: eta^2 of the next bar's |log return| given the regime, the mean dwell, and for
the chains the agreement with their previous model on the bars both label (Hungarian-matched, as the refresh
checks it) and without matching. Per series: each method's mean over the spans and the paired differences
(mean +- standard error). A measurement script, not a test; seeded and deterministic. Every test span is
held-out for the model scored on it; nothing here chooses anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_regime_spans import fold_bounds  # noqa: E402
from bench_regimes import (  # noqa: E402  (bench_regimes puts the repository root on sys.path)
    _clean,
    _num,
    add_series_argument,
    chosen_series,
    common_agreement,
    consoles,
    environment,
    project_labels,
    real_series,
    yardstick,
)
from bench_warm_refit import chosen_strengths  # noqa: E402
from rich.table import Table  # noqa: E402

from regimetry.console import progress_bars  # noqa: E402
from regimetry.features import FeatureSpec, history_needed  # noqa: E402
from trainer import baselines  # noqa: E402
from trainer import regime_scores as rs  # noqa: E402

WINDOW = 30  # the profile's window_size (bench_regimes' default)
N_STATES = 4  # the profile's n_clusters


def _warm(s: float) -> str:
    return f"warm s={s:g}"


def span_scores(labels: np.ndarray, bars: np.ndarray, log_ret: np.ndarray) -> dict:
    """(n,) labels of the test span's windows ending at bars (n,) -> eta^2 of the next bar's |return|, dwell."""
    return {
        "eta2": rs.next_abs_return_eta2(labels, rs.next_returns(log_ret, bars)),
        "dwell": rs.mean_dwell(labels),
        "n_states_used": int(len(np.unique(labels))),
    }


def chain(
    name: str, spans: int, span: float, strengths: list[float], seed: int, sliding: bool, tmp: Path, progress
) -> dict:
    """The first model, then one origin after another: stale, each warm chain, scratch and the yardstick.
    With ``sliding`` every fit after the first reads only as many windows before its span as the first did
    (the refresher's REFRESH_WINDOW: old bars drop out); otherwise every window before its span."""
    from regimetry.inference import RegimeModel

    series = real_series(name)
    h = history_needed(FeatureSpec(), WINDOW)
    bounds = fold_bounds(len(series) - h + 1, spans, span)
    fit_windows = bounds[0][0]
    log_ret = baselines.log_returns(series.values)

    def fit(a: int, b: int, extra: dict | None = None, **kw) -> tuple[np.ndarray, np.ndarray, int]:
        """project_labels on the bars of windows [start, b), the span [a, b) held out; bar indices absolute."""
        start = max(0, a - fit_windows) if sliding else 0
        ov = {"holdout": (b - a) / (b - start), "window_size": WINDOW, "clustering": {"n_clusters": N_STATES}}
        if extra:
            ov["clustering"].update(extra)
        ib, lb, n_train = project_labels(series.slice(start, b + h - 1), ov, seed, progress, **kw)
        return ib + start, lb, n_train

    keep: dict = {}
    progress(f"{name}: first model")
    ib, lb, n0 = fit(*bounds[0], keep=keep, output_dir=str(tmp / name))
    first = RegimeModel(keep["bundle"])
    in_force = {s: (keep["warm"], (ib, lb)) for s in strengths}
    folds = [{"span": f"{bounds[0][0]}-{bounds[0][1]}", "first_model": span_scores(lb[n0:], ib[n0:], log_ret)}]
    for a, b in bounds[1:]:
        fold: dict = {"span": f"{a}-{b}", "methods": {}, "agreement": {}}
        progress(f"{name} {a}-{b}: from scratch")
        ib, lb, n_train = fit(a, b)
        held = ib[n_train:]
        fold["test_bars"] = [int(held[0]), int(held[-1])]
        fold["fit_bars"] = [int(ib[0]), int(ib[n_train - 1])]
        fold["methods"]["scratch"] = span_scores(lb[n_train:], held, log_ret)
        cut = series.slice(0, b + h - 1)
        ys = yardstick(cut.values, ib, lb, n_train, N_STATES, WINDOW)
        fold["methods"]["yardstick"] = span_scores(ys.labels[held], held, log_ret)
        stale = first.run_series(cut.values)
        fold["methods"]["stale"] = span_scores(stale.regime[held - stale.offset], held, log_ret)
        for s in strengths:
            progress(f"{name} {a}-{b}: warm refit, anchor {s:g}")
            warm, prev = in_force[s]
            k: dict = {}
            iw, lw, nw = fit(a, b, {"anchor_strength": s}, warm=warm, keep=k)
            if not np.array_equal(iw[nw:], held):
                raise RuntimeError("the warm refit's test span is not the from-scratch one's")
            fold["methods"][_warm(s)] = span_scores(lw[nw:], held, log_ret)
            agree, same, n_common = common_agreement(*prev, iw, lw)
            fold["agreement"][_warm(s)] = {"agreement": agree, "same_ids": same, "n_common": n_common}
            in_force[s] = (k["warm"], (iw, lw))
        folds.append(fold)
    return {"symbol": series.symbol, "n_bars": len(series), "fit_windows": fit_windows, "folds": folds}


def summarise(entry: dict, methods: list[str]) -> dict:
    """Each method's mean eta^2 and dwell over the scored spans, and the first warm chain's paired eta^2
    difference to every other method (mean, standard error, spans won)."""
    folds = entry["folds"][1:]
    eta = {m: np.array([_num(f["methods"][m]["eta2"]) for f in folds]) for m in methods}
    out: dict = {
        "mean_eta2": {m: float(np.nanmean(v)) for m, v in eta.items()},
        "mean_dwell": {m: float(np.nanmean([_num(f["methods"][m]["dwell"]) for f in folds])) for m in methods},
    }
    ref = next(m for m in methods if m.startswith("warm"))
    diffs = {}
    for m in methods:
        if m == ref:
            continue
        d = eta[ref] - eta[m]
        d = d[np.isfinite(d)]
        diffs[m] = {
            "mean": float(d.mean()) if len(d) else float("nan"),
            "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
            "spans_won": int((d > 0).sum()),
            "spans": int(len(d)),
        }
    out["reference"] = ref
    out["reference_minus"] = diffs
    return out


def plot(result: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(result), 2, figsize=(12, 3.4 * len(result)), squeeze=False)
    for (name, e), (ax1, ax2) in zip(result.items(), axes):
        folds = e["folds"][1:]
        x = np.arange(len(folds))
        for m in methods:
            ax1.plot(x, [_num(f["methods"][m]["eta2"]) for f in folds], "o-", label=m)
        for m in (k for k in methods if k.startswith("warm")):
            ax2.plot(x, [_num(f["agreement"][m]["agreement"]) for f in folds], "o-", label=m)
        for ax in (ax1, ax2):
            ax.set_xticks(x, [f["span"] for f in folds], fontsize=8)
            ax.set_xlabel("test span (windows)")
        ax1.set_ylabel("eta^2 of next-bar |return|")
        ax1.set_title(f"{name}: what each period's model says about the next bar's risk")
        ax2.axhline(0.9, color="k", lw=0.8, ls="--")
        ax2.set_ylabel("agreement with the model in force")
        ax2.set_title(f"{name}: each refresh against its predecessor (publishes at >= 0.9)")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_series_argument(ap)
    ap.add_argument("--spans", type=int, default=5, help="test spans; the first only trains the first model")
    ap.add_argument("--span", type=float, default=0.1, help="each test span's share of the windows")
    ap.add_argument("--strengths", default="1,0", help="anchor strengths of the warm chains (the first is compared)")
    ap.add_argument("--seed", type=int, default=42, help="seed of every model fit")
    ap.add_argument(
        "--sliding",
        action="store_true",
        help="every fit reads only as many windows before its span as the first model did (the refresher's "
        "REFRESH_WINDOW) instead of all of them",
    )
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_refresh_chain.json"
    )
    args = ap.parse_args(argv)
    names = chosen_series(ap, args.series)
    strengths = chosen_strengths(ap, args.strengths)
    if args.spans < 2 or not 0 < args.span * args.spans < 1:
        ap.error("--spans must be >= 2 and --spans x --span below 1")
    methods = [_warm(s) for s in strengths] + ["scratch", "stale", "yardstick"]
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    console, err = consoles()
    env = environment(err)
    started = time.perf_counter()
    result: dict = {}
    bars = progress_bars("refresh chains", err)
    with bars, tempfile.TemporaryDirectory(prefix="refresh_chain_") as tmp:
        task = bars.add_task("starting", total=len(names))
        for name in names:
            result[name] = chain(
                name,
                args.spans,
                args.span,
                strengths,
                args.seed,
                args.sliding,
                Path(tmp),
                lambda m: bars.update(task, description=m[:80]),
            )
            result[name]["summary"] = summarise(result[name], methods)
            bars.advance(task)
    for name, e in result.items():
        fits = f"last {e['fit_windows']} windows" if args.sliding else "expanding"
        t = Table(title=f"{name}: next-bar eta^2 / mean dwell on each test span (seed {args.seed}; fits: {fits})")
        t.add_column("span")
        for m in methods:
            t.add_column(m, justify="right")
        for m in methods[: len(strengths)]:
            t.add_column(f"{m} agreement", justify="right")
        for f in e["folds"][1:]:
            row = [f["span"]] + [f"{f['methods'][m]['eta2']:.4f} / {f['methods'][m]['dwell']:.0f}" for m in methods]
            row += [f"{f['agreement'][m]['agreement']:.3f}" for m in methods[: len(strengths)]]
            t.add_row(*row)
        sm = e["summary"]
        t.add_row("mean", *[f"{sm['mean_eta2'][m]:.4f} / {sm['mean_dwell'][m]:.0f}" for m in methods])
        console.print(t)
        console.print(
            f"  {sm['reference']} minus: "
            + "; ".join(
                f"{m} {d['mean']:+.4f} +- {d['se']:.4f} ({d['spans_won']}/{d['spans']} won)"
                for m, d in sm["reference_minus"].items()
            )
        )
    elapsed = time.perf_counter() - started
    console.print(f"({elapsed:.0f} s)")
    doc = {
        "benchmark": "bench_refresh_chain",
        "seed": args.seed,
        "environment": env,
        "elapsed_seconds": elapsed,
        "spans": args.spans,
        "span": args.span,
        "strengths": strengths,
        "sliding": args.sliding,
        "methods": methods,
        "series": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(doc), indent=1) + "\n")
    plot(result, methods, args.out.with_suffix(".png"))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
