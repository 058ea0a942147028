"""The regime benchmark's real-series comparison over several held-out spans instead of one.

    python benchmarks/bench_regime_spans.py                        # EURUSD, GOOG, S&P 500: 5 spans of 10 %
    python benchmarks/bench_regime_spans.py --series goog --spans 4 --span 0.125
    python benchmarks/bench_regime_spans.py --set clustering.penalty_rule=self_consistent \\
        --out benchmarks/results/bench_regime_spans_self_consistent.json

Why: benchmarks/bench_regimes.py scores each real series on one held-out span, its last 20 %. Its eta^2 of
the next bar's |log return| is decided there by the few volatility events that span happens to hold (a
hundred-odd bars of regime on GOOG daily), so one split cannot tell a better regime layer from a lucky one,
and a change tuned until that one figure flips is tuned on held-out bars.

Here every method is refitted at each of ``--spans`` origins (rolling origin, expanding window): fold i
trains on every window before its test span and is scored on that span only, the series cut at the span's end
so nothing later is ever seen. The methods, splits and scores are bench_regimes.py's own (``run_methods`` and
``score_real``: the project's served regimes, the forward-filtered HMM, the jump model online with its penalty
chosen by time-series CV on the fold's training bars, the trailing-volatility yardstick cut into the project's
training shares). Per series it prints each fold and, for the project against the yardstick and the jump
model, the mean eta^2 difference with its paired standard error over the folds, the folds won, and the folds
on which the Done-when form of the check holds (eta^2 at least the other's at a held-out dwell no shorter).

The later folds overlap bench_regimes.py's held-out span (its last 20 % = the last two 10 % spans here, each
fitted on more bars). A measurement script, not a test; seeded and deterministic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_regimes import (  # noqa: E402  (bench_regimes puts the repository root on sys.path)
    METHODS,
    SHORT,
    _clean,
    _num,
    add_series_argument,
    add_set_argument,
    chosen_series,
    consoles,
    environment,
    real_series,
    run_methods,
    score_real,
    set_overrides,
)
from rich.table import Table  # noqa: E402

from regimetry.console import progress_bars  # noqa: E402
from regimetry.features import FeatureSpec, history_needed  # noqa: E402
from trainer import baselines  # noqa: E402

COMPARED = ("yardstick", "jump_online")  # what the project's eta^2 is held against (issue 11's real checks)
MIN_TEST_WINDOWS = 100  # a fold with fewer held-out windows is not scored


def fold_bounds(n_windows: int, spans: int, span: float) -> list[tuple[int, int]]:
    """The test spans as window ranges [a, b), the last one ending at the last window, each ``span`` of all
    windows long, in time order. Fold i trains on windows [0, a_i)."""
    w = int(round(span * n_windows))
    if w < 1 or spans * w >= n_windows:
        raise ValueError(f"{spans} spans of {span:.0%} leave no training windows of {n_windows}")
    return [(n_windows - (spans - i) * w, n_windows - (spans - 1 - i) * w) for i in range(spans)]


def run_fold(series, a: int, b: int, window: int, n_states: int, overrides: dict, seed: int, progress) -> dict:
    """Every method fitted on the windows before ``a`` and scored on windows [a, b) of ``series``: the series
    is cut at window b's last bar (nothing after the span exists for the fit) and the span is its held-out
    tail."""
    h = history_needed(FeatureSpec(), window)
    cut = series.slice(0, b + h - 1)
    run = run_methods(cut, n_states, overrides, seed, (b - a) / b, False, progress)
    scores = score_real(run, baselines.log_returns(cut.values))
    return {
        "train_windows": run.n_train,
        "test_windows": int(len(run.held_bars)),
        "first_test_bar": int(cut.times[run.held_bars[0]]),
        "last_test_bar": int(cut.times[run.held_bars[-1]]),
        "methods": scores,
        "project_penalty": run.info.get("project", {}).get("penalty"),
    }


def summarise(folds: list[dict]) -> dict:
    """Per compared method: the project's eta^2 minus the other's on each fold, its mean and paired standard
    error, the folds the project wins, and the folds on which the Done-when form holds."""
    out: dict = {}
    proj = [f["methods"]["project"] for f in folds]
    for other in COMPARED:
        oth = [f["methods"][other] for f in folds]
        d = np.array([_num(p.get("eta2")) - _num(o.get("eta2")) for p, o in zip(proj, oth)])
        ok = np.isfinite(d)
        checks = [
            bool(
                _num(p.get("eta2")) >= _num(o.get("eta2"))
                and _num(p.get("dwell_held_out")) >= _num(o.get("dwell_held_out"))
            )
            for p, o in zip(proj, oth)
        ]
        out[other] = {
            "eta2_difference": d.tolist(),
            "mean_difference": float(d[ok].mean()) if ok.any() else float("nan"),
            "paired_se": float(d[ok].std(ddof=1) / np.sqrt(ok.sum())) if ok.sum() > 1 else float("nan"),
            "folds_won": int((d[ok] > 0).sum()),
            "folds_check_holds": int(sum(checks)),
            "folds": int(ok.sum()),
        }
    ratios = [_num(p.get("dwell_ratio")) for p in proj]
    out["project_dwell_ratio_in_limits"] = int(sum(0.7 <= r <= 1.4 for r in ratios if np.isfinite(r)))
    return out


def fold_table(name: str, entry: dict) -> Table:
    t = Table(title=f"{name}: held-out eta^2 of next-bar |return| / mean held-out dwell (bars), by test span")
    t.add_column("span")
    t.add_column("train/test", justify="right")
    for m in METHODS:
        t.add_column(f"{SHORT[m]} eta2", justify="right")
        t.add_column(f"{SHORT[m]} dwell", justify="right")
    for f in entry["folds"]:
        row = [f["span"], f"{f['train_windows']}/{f['test_windows']}"]
        for m in METHODS:
            s = f["methods"][m]
            row += ["fail", "fail"] if "error" in s else [f"{s['eta2']:.4f}", f"{s['dwell_held_out']:.0f}"]
        t.add_row(*row)
    return t


def summary_table(result: dict) -> Table:
    t = Table(
        title="project - other: eta^2 difference over the spans (mean +- paired SE), spans won, spans on "
        "which 'eta^2 >= other's at a dwell no shorter' holds"
    )
    t.add_column("series")
    for other in COMPARED:
        t.add_column(f"vs {other}: mean +- SE", justify="right")
        t.add_column("won", justify="right")
        t.add_column("check holds", justify="right")
    t.add_column("proj dwell ratio in [0.7, 1.4]", justify="right")
    for name, e in result.items():
        s = e["summary"]
        row = [name]
        for other in COMPARED:
            c = s[other]
            row += [
                f"{c['mean_difference']:+.4f} +- {c['paired_se']:.4f}",
                f"{c['folds_won']}/{c['folds']}",
                f"{c['folds_check_holds']}/{c['folds']}",
            ]
        row.append(f"{s['project_dwell_ratio_in_limits']}/{len(e['folds'])}")
        t.add_row(*row)
    return t


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(METHODS, ("tab:red", "tab:blue", "tab:green", "tab:gray")))
    fig, axes = plt.subplots(len(result), 2, figsize=(12, 3.6 * len(result)), squeeze=False)
    for (name, e), (ax1, ax2) in zip(result.items(), axes):
        spans = [f["span"] for f in e["folds"]]
        x = np.arange(len(spans))
        for m in METHODS:
            eta = [_num(f["methods"][m].get("eta2")) for f in e["folds"]]
            dw = [_num(f["methods"][m].get("dwell_held_out")) for f in e["folds"]]
            ax1.plot(x, eta, "o-", color=colours[m], label=m)
            ax2.plot(x, dw, "o-", color=colours[m], label=m)
        for ax in (ax1, ax2):
            ax.set_xticks(x, spans, fontsize=8)
            ax.set_xlabel("test span (share of the windows)")
        ax1.set_ylabel("eta^2 of next-bar |return|")
        ax1.set_title(f"{name}: information about the next bar's risk, per test span")
        ax2.set_yscale("log")
        ax2.set_ylabel("mean held-out dwell (bars, log)")
        ax2.set_title(f"{name}: persistence, per test span")
        ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_series_argument(ap)
    ap.add_argument("--spans", type=int, default=5, help="number of test spans (folds)")
    ap.add_argument("--span", type=float, default=0.1, help="length of each test span, as a share of the windows")
    ap.add_argument("--seed", type=int, default=42, help="seed of every model fit (project, HMM, jump model)")
    add_set_argument(ap)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/bench_regime_spans.json; a --set variant needs its own)",
    )
    args = ap.parse_args(argv)
    if args.set_ and args.out is None:
        ap.error("--set needs --out: a variant never writes over the defaults' bench_regime_spans.json")
    out = args.out or Path(__file__).resolve().parent / "results" / "bench_regime_spans.json"
    series_names = chosen_series(ap, args.series)
    from trainer.config import from_dict

    try:
        overrides = set_overrides(args.set_)
        cfg = from_dict(overrides)
    except ValueError as e:
        ap.error(str(e))
    window, n_states = cfg.window_size, cfg.clustering.n_clusters
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # "Model is not converging" chatter of EM restarts
    console, err = consoles()
    env = environment(err)
    started = time.perf_counter()
    result: dict = {}
    progress = progress_bars("spans", err)
    with progress:
        task = progress.add_task("starting", total=args.spans * len(series_names))
        for name in series_names:
            series = real_series(name)
            n_windows = len(series) - history_needed(FeatureSpec(), window) + 1
            try:
                bounds = fold_bounds(n_windows, args.spans, args.span)
            except ValueError as e:
                ap.error(f"{name}: {e}")
            if bounds[0][1] - bounds[0][0] < MIN_TEST_WINDOWS:
                ap.error(
                    f"{name}: spans of {bounds[0][1] - bounds[0][0]} windows (< {MIN_TEST_WINDOWS}); use fewer spans"
                )
            folds = []
            for a, b in bounds:
                label = f"{a / n_windows:.0%}-{b / n_windows:.0%}"

                def say(msg: str, where: str = f"{name} {label}") -> None:
                    progress.update(task, description=f"{where}: {msg}"[:90])

                fold = run_fold(series, a, b, window, n_states, overrides, args.seed, say)
                fold["span"] = label
                folds.append(fold)
                progress.advance(task)
            result[name] = {
                "symbol": series.symbol,
                "n_bars": len(series),
                "n_windows": n_windows,
                "folds": folds,
                "summary": summarise(folds),
            }
    elapsed = time.perf_counter() - started
    for name, e in result.items():
        console.print(fold_table(name, e))
    console.print(summary_table(result))
    console.print(f"({elapsed:.0f} s; seed {args.seed}; overrides {overrides or 'none'})")
    doc = {
        "benchmark": "bench_regime_spans",
        "issue": 11,
        "seed": args.seed,
        "environment": env,
        "spans": args.spans,
        "span": args.span,
        "cfg_overrides": overrides,
        "elapsed_seconds": elapsed,
        "scoring": "fold i: every method fitted on the windows before its test span (the series cut at the span's "
        "end), scored on the span as bench_regimes.py scores its held-out bars",
        "series": result,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(doc), indent=2))
    png = out.with_suffix(".png")
    plot(result, png)
    console.print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
