"""A pooled model (one model trained on a universe of symbols) against single-symbol models, symbol by symbol.

    python benchmarks/bench_universe.py [--symbols eurusd,goog,btcusd] [--set encoder.epochs=4 ...]
                                        [--out benchmarks/results/bench_universe.json]

For each symbol of the `backtesting` wheel's samples (EURUSD hourly, GOOG daily, BTCUSD monthly) it trains,
with the default profile (or the --set overrides) and the same seed:

- one pooled model on all the symbols (``--data eurusd,goog,btcusd``: features and windows per symbol, scaler,
  encoder and clustering fitted on every symbol's training windows, each symbol split chronologically);
- one single-symbol model per symbol (exactly ``--data <symbol>``); a symbol too short for a model of its own
  (fewer than 50 windows) is reported as skipped, with the reason.

and scores both on the same held-out bars of each symbol (the later share of its windows: the pooled split is
per symbol, so these are the same windows): eta^2 of the next bar's |log return| by regime
(trainer.regime_scores.next_abs_return_eta2), mean dwell of the held-out regimes, and the forecaster's next
regime against persistence on the held-out steps (regimetry.scoring change-step F1 and accuracy, from the
training summary's next-regime report). Prints a table and writes the figures as JSON.

``--synthetic`` runs the same comparison on a universe whose symbols share one bar interval: two series of the
planted-regime generator (regimetry/synthetic.py, hourly, seeds 7 and 8, written as CSVs), adding the held-out
adjusted Rand index of each model's regimes against the planted ones (trainer.regime_scores.ari).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regimetry.data import bar_interval, load_universe  # noqa: E402


def _cfg(data: str, overrides: dict):
    from trainer.config import load_config

    extra = {"mixed_intervals": True} if "," in data else {}  # measured on purpose (the trainer refuses by default)
    return load_config(
        None, {**overrides, **extra, "data": data, "output_dir": "/tmp/bench_universe", "set_current": False}
    )


def planted_ari(result, series, planted: np.ndarray | None) -> float | None:
    """ARI of a model's held-out regimes of ``series`` against the planted labels of their bars."""
    from trainer.regime_scores import ari

    if planted is None:
        return None
    n_train = int(result.summary["data"]["n_train"])
    mine = np.flatnonzero(result.window_symbol == series.symbol)
    mine = mine[mine >= n_train]
    bar = np.searchsorted(series.times, result.end_time[mine])
    return ari(result.regimes[mine], planted[bar])


def synthetic_universe(folder: Path) -> tuple[str, dict]:
    """Two planted-regime series as CSVs in folder: (--data, {symbol: planted labels})."""
    from regimetry.synthetic import generate_bars, write_csv

    folder.mkdir(parents=True, exist_ok=True)
    paths, planted = [], {}
    for name, seed in (("syn_a", 7), ("syn_b", 8)):
        syn = generate_bars(seed=seed)
        write_csv(syn.bars, str(folder / f"{name}.csv"))
        paths.append(str(folder / f"{name}.csv"))
        planted[name.upper()] = syn.labels
    return ",".join(paths), planted


def single_scores(result, series) -> dict:
    """The held-out figures of a one-symbol model, by the same functions as the universe's per-symbol ones."""
    from regimetry.diagnostics import mean_duration
    from trainer.regime_scores import next_abs_return_eta2, next_returns

    s = result.summary
    n_train = int(s["data"]["n_train"])
    bar = np.searchsorted(series.times, result.end_time[n_train:])
    log_ret = np.concatenate([[0.0], np.diff(np.log(series.values[:, 3]))])
    eta2 = next_abs_return_eta2(result.regimes[n_train:], next_returns(log_ret, bar))
    nr = s["next_regime"]
    return {
        "n_held_out_windows": int(len(bar)),
        "n_held_out_steps": int(nr["change_detection"]["forecaster"]["n"]),
        "held_out_next_abs_return_eta2": None if np.isnan(eta2) else float(eta2),
        "held_out_mean_dwell": mean_duration(result.regimes[n_train:]),
        "held_out_shares": pooled_shares(result.regimes[n_train:], len(s["regime_shares"]["held_out"])),
        "train_shares": pooled_shares(result.regimes[:n_train], len(s["regime_shares"]["train"])),
        "actual_changes": int(nr["change_detection"]["forecaster"]["actual_changes"]),
        "change_f1": {c: nr["change_detection"][c]["f1"] for c in nr["candidates"]},
        "accuracy": {c: nr["all_steps"][c]["accuracy"] for c in nr["candidates"]},
    }


def pooled_shares(labels: np.ndarray, k: int) -> list[float]:
    from regimetry.diagnostics import shares

    return [round(float(x), 3) for x in shares(labels, k)]


def pooled_scores(per: dict) -> dict:
    nr = per.get("next_regime") or {}
    return {
        "n_held_out_windows": per["n_held_out_windows"],
        "n_held_out_steps": per["n_held_out_steps"],
        "held_out_next_abs_return_eta2": per["held_out_next_abs_return_eta2"],
        "held_out_mean_dwell": per["held_out_mean_dwell"],
        "held_out_shares": [round(x, 3) for x in per["held_out_shares"]],
        "train_shares": [round(x, 3) for x in per["train_shares"]],
        "actual_changes": nr.get("actual_changes"),
        "change_f1": nr.get("change_f1"),
        "accuracy": nr.get("accuracy"),
    }


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _row(name: str, interval: str, model: str, r: dict) -> str:
    cf, acc = r.get("change_f1") or {}, r.get("accuracy") or {}
    return (
        f"{name:8} {interval:>9} {model:7} {r['n_held_out_windows']:>12} "
        f"{_f(r['held_out_next_abs_return_eta2']):>10} {r['held_out_mean_dwell']:>7.1f} "
        f"{r.get('actual_changes')!s:>7} {_f(cf.get('forecaster')):>8} {_f(cf.get('flat_next')):>10} "
        f"{_f(acc.get('forecaster')):>7} {_f(acc.get('persistence')):>8}  {r['held_out_shares']} "
        f"(train {r['train_shares']})"
        + (f" planted ARI {_f(r['planted_ari'])}" if r.get("planted_ari") is not None else "")
    )


def main() -> None:
    from trainer.cli import _overrides
    from trainer.pipeline import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", default="eurusd,goog,btcusd", help="sample names or paths, comma list")
    ap.add_argument("--set", dest="set_", action="append", default=[], help="config override KEY=VALUE")
    ap.add_argument("--synthetic", action="store_true", help="two planted-regime series of one interval instead")
    ap.add_argument("--out", default=None, help="default benchmarks/results/bench_universe[_synthetic].json")
    args = ap.parse_args()
    args.out = args.out or f"benchmarks/results/bench_universe{'_synthetic' if args.synthetic else ''}.json"
    overrides = _overrides(args.set_)
    planted: dict = {}
    if args.synthetic:
        args.symbols, planted = synthetic_universe(Path("/tmp/bench_universe_synthetic"))
    universe = load_universe(args.symbols)
    names = [s.symbol for s in universe]
    out: dict = {"symbols": {}, "overrides": overrides, "pooled": None}
    for s in universe:
        out["symbols"][s.symbol] = {
            "n_bars": len(s),
            "bar_interval_seconds": bar_interval(s),
            "single": None,
            "pooled": None,
        }

    t0 = time.time()
    pooled = train(_cfg(args.symbols, overrides), write_bundle=False)
    uni = pooled.summary["universe"]
    out["pooled"] = {
        "seconds": round(time.time() - t0, 1),
        "penalty": pooled.summary["clustering"]["penalty"],
        "pooled_held_out": pooled_scores(uni["pooled"]),
        "mixed_intervals": uni["mixed_intervals"],
    }
    for s in universe:
        out["symbols"][s.symbol]["pooled"] = pooled_scores(uni["per_symbol"][s.symbol])
        out["symbols"][s.symbol]["pooled"]["planted_ari"] = planted_ari(pooled, s, planted.get(s.symbol))
    print(f"pooled model on {','.join(names)}: {out['pooled']['seconds']}s", flush=True)

    for s, src in zip(universe, args.symbols.split(",")):
        t0 = time.time()
        try:
            single = train(_cfg(src, overrides), write_bundle=False)
        except ValueError as exc:
            out["symbols"][s.symbol]["single_skipped"] = str(exc)
            print(f"{s.symbol} alone: skipped ({exc})", flush=True)
            continue
        out["symbols"][s.symbol]["single"] = single_scores(single, s)
        out["symbols"][s.symbol]["single"]["seconds"] = round(time.time() - t0, 1)
        out["symbols"][s.symbol]["single"]["penalty"] = single.summary["clustering"]["penalty"]
        out["symbols"][s.symbol]["single"]["planted_ari"] = planted_ari(single, s, planted.get(s.symbol))
        print(f"{s.symbol} alone: {out['symbols'][s.symbol]['single']['seconds']}s", flush=True)

    head = (
        f"{'symbol':8} {'interval':>9} {'model':7} {'held-out win':>12} {'eta2 |r+1|':>10} {'dwell':>7} "
        f"{'changes':>7} {'chgF1 fc':>8} {'chgF1 flat':>10} {'acc fc':>7} {'acc pers':>8}  shares held out (train)"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name, d in out["symbols"].items():
        for model in ("single", "pooled"):
            if d[model] is None:
                print(f"{name:8} {d['bar_interval_seconds']:>9} {model:7} skipped: {d.get('single_skipped', '')[:70]}")
            else:
                print(_row(name, str(d["bar_interval_seconds"]), model, d[model]))
    interval = "mixed" if uni["mixed_intervals"] else str(bar_interval(universe[0]))
    print(_row("ALL", interval, "pooled", out["pooled"]["pooled_held_out"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
