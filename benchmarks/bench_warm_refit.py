"""How far a warm-started refit keeps the regimes of the model in force, by anchor strength, on training bars only.

    python benchmarks/bench_warm_refit.py                          # EURUSD, GOOG, S&P 500; strengths 0 0.5 1 2
    python benchmarks/bench_warm_refit.py --series sp500 --strengths 0,1

Why: `regimetry refresh` warm-starts a refit from the bundle in force and publishes it only if the regimes keep
their ids (agreement >= 0.9). Its regime centres are shrunk toward the previous ones with
``clustering.anchor_strength`` times the previous model's windows as the prior's weight (trainer/jump_fit.py::
shrink); this script is what that strength was judged on (docs/research.md, session 26).

Per series: the previous model is trained on bars 0-70 %, the refit warm-started from it on bars 8-80 % with its
last 12.5 % held out (bars ~71-80 %), once per strength. Everything lies inside bench_regimes.py's training 80 %,
so no bar it holds out is seen. Scores: agreement with the previous model on the bars both label
(Hungarian-matched, as bench_regimes.py's refit agreement) and without matching (the ids a subscriber sees), and
the refit's held-out eta^2 of the next bar's |log return| (a short tail: a sanity check, not a ranking). A
measurement script, not a test; seeded and deterministic.
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
    _clean,
    add_series_argument,
    chosen_series,
    common_agreement,
    consoles,
    environment,
    project_labels,
    real_series,
)
from rich.table import Table  # noqa: E402

from regimetry.console import progress_bars  # noqa: E402
from trainer import baselines  # noqa: E402
from trainer import regime_scores as rs  # noqa: E402

PREVIOUS = (0.0, 0.70)  # the model in force
REFIT = (0.08, 0.80)  # the refit's bars; its last REFIT_HOLDOUT of windows are its held-out tail
PREVIOUS_HOLDOUT, REFIT_HOLDOUT = 0.05, 0.125


def measure(name: str, strengths: list[float], seed: int, progress) -> dict:
    """The previous model once, then one warm refit per strength, scored as the module docstring says."""
    series = real_series(name)
    n = len(series)
    (a0, a1), (b0, b1) = [(int(round(lo * n)), int(round(hi * n))) for lo, hi in (PREVIOUS, REFIT)]
    keep: dict = {}
    ia, la, _ = project_labels(series.slice(a0, a1), {"holdout": PREVIOUS_HOLDOUT}, seed, progress, keep=keep)
    log_ret = baselines.log_returns(series.values)
    rows = []
    for s in strengths:
        ov = {"holdout": REFIT_HOLDOUT, "clustering": {"anchor_strength": s}}
        ib, lb, n_train = project_labels(series.slice(b0, b1), ov, seed, progress, warm=keep["warm"])
        agree, same, n_common = common_agreement(ia + a0, la, ib + b0, lb)
        tail_bars = ib[n_train:] + b0
        ok = tail_bars + 1 < b1  # the next bar must be one of the refit's own bars
        nxt = np.abs(log_ret[tail_bars[ok] + 1])
        rows.append(
            {
                "anchor_strength": s,
                "agreement": agree,
                "same_ids": same,
                "n_common": n_common,
                "tail_eta2": rs.eta_squared(lb[n_train:][ok], nxt),
                "n_tail": int(ok.sum()),
            }
        )
    return {"symbol": series.symbol, "n_bars": n, "previous_bars": [a0, a1], "refit_bars": [b0, b1], "rows": rows}


def chosen_strengths(ap: argparse.ArgumentParser, text: str) -> list[float]:
    """``--strengths 0,0.5,1`` -> anchor strengths (each >= 0, at least one), or the parser's error."""
    try:
        strengths = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--strengths must be numbers, got {text!r}")
    if not strengths or min(strengths) < 0:
        ap.error("--strengths needs at least one strength, each >= 0")
    return strengths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_series_argument(ap)
    ap.add_argument("--strengths", default="0,0.5,1,2", help="anchor strengths, comma-separated (>= 0)")
    ap.add_argument("--seed", type=int, default=42, help="seed of every model fit")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_warm_refit.json")
    args = ap.parse_args(argv)
    names = chosen_series(ap, args.series)
    strengths = chosen_strengths(ap, args.strengths)
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    console, err = consoles()
    env = environment(err)
    started = time.perf_counter()
    result: dict = {}
    bars = progress_bars("warm refits", err)
    with bars:
        task = bars.add_task("starting", total=len(names))
        for name in names:
            result[name] = measure(name, strengths, args.seed, lambda m: bars.update(task, description=m[:80]))
            bars.advance(task)
    table = Table(title=f"warm refit vs the model in force (seed {args.seed}; training bars only)")
    for col in ("series", "strength", "agreement", "same ids", "tail eta^2", "bars"):
        table.add_column(col, justify="left" if col == "series" else "right")
    for name, r in result.items():
        for row in r["rows"]:
            table.add_row(
                name,
                f"{row['anchor_strength']:g}",
                f"{row['agreement']:.3f}",
                f"{row['same_ids']:.3f}",
                f"{row['tail_eta2']:.4f}",
                f"{row['n_common']} / {row['n_tail']}",
            )
    console.print(table)
    elapsed = time.perf_counter() - started
    console.print(f"({elapsed:.0f} s)")
    doc = {
        "benchmark": "bench_warm_refit",
        "seed": args.seed,
        "environment": env,
        "elapsed_seconds": elapsed,
        "spans": {"previous": PREVIOUS, "refit": REFIT, "refit_holdout": REFIT_HOLDOUT},
        "series": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(doc), indent=1) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
