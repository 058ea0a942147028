"""Regime benchmark: the project's served regimes beside a forward-filtered Gaussian HMM, the `jumpmodels`
statistical jump model (online) and a trailing-volatility yardstick, on planted and real bars, held-out only.

    python benchmarks/bench_regimes.py                 # everything (~27 min on 2 cores)
    python benchmarks/bench_regimes.py --quick         # smoke run (~2.5-4 min): 2 encoder epochs, shorter series
    python benchmarks/bench_regimes.py --only planted --scenarios default,vol_only
    python benchmarks/bench_regimes.py --only real --series eurusd --out /tmp/bench.json
    python benchmarks/bench_regimes.py --set clustering.huber_delta=2 --out benchmarks/results/bench_regimes_huber.json

Planted: seeded scenarios of regimetry/synthetic.py (the default generator and the SCENARIOS presets), the true
number of states for every method; scored on the held-out bars (the project's last 20 % of windows) with the
causal label each method gives at each bar: ARI and balanced accuracy after Hungarian matching, found/true
switch count, median detection delay.

Real: EURUSD hourly, GOOG daily, BTCUSD monthly (too few bars: reported as skipped) from the `backtesting`
wheel, and the S&P 500 index daily (1999-2018) from the `arch` wheel, the daily index bars of the kind the issue
was measured on; the project's n_clusters for every method, chronological split: held-out eta^2 of next-bar |return|,
next-bar volatility ratio max/min, mean dwell train/held-out, refit agreement (fitted on bars 0-80 % vs
10-90 %, compared on the bars both label).

Output: rich tables, the Done-when checks of issue 11 as PASS/FAIL lines, JSON (--out) and a PNG beside it.
This is a measurement script, not a test; it is seeded and deterministic.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import copy
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from regimetry.console import progress_bars  # noqa: E402
from regimetry.data import BarSeries, load_sample  # noqa: E402
from regimetry.features import FeatureSpec, history_needed  # noqa: E402
from regimetry.synthetic import SCENARIOS, scenario  # noqa: E402
from trainer import baselines  # noqa: E402
from trainer import regime_scores as rs  # noqa: E402

METHODS = ("project", "hmm_filtered", "jump_online", "yardstick")
SHORT = {"project": "proj", "hmm_filtered": "HMM", "jump_online": "JM", "yardstick": "vol"}
DESCRIPTION = {
    "project": "the project's served regime of each window (trainer.pipeline.train, TrainResult.regimes), "
    "labelling the window's last bar",
    "hmm_filtered": "GaussianHMM (hmmlearn, full covariance, diag fallback, n_iter 100, best of 5 seeded EM "
    "starts by training log-likelihood) fitted on the training bars, forward-filtered (causal); "
    "features: log return, log log(high/low), log1p(volume) where hmm_uses_volume",
    "jump_online": "jumpmodels JumpModel on ewm downside deviation (log), Sortino-like ratio and mean return at "
    "halflives 5/20/60, fitted on the training bars, predict_online; penalty by time-series CV",
    "yardstick": "trailing std of log returns over window_size bars, cut at training quantiles that reproduce "
    "the project's training regime shares",
}
HMM_VOLUME_RULE = (
    "log1p(volume) is an HMM feature on planted scenarios whose regimes differ in mean volume "
    "(default, short_dwell, long_dwell), not on those with one volume level (vol_only, "
    "student_t) nor on real series (their volume level drifts over the sample: calendar eras, "
    "not regimes)"
)
HOLDOUT = 0.2
REFIT_HOLDOUT = 0.05  # a refit is fitted on (nearly) all of its 80 % span; train() needs a held-out part
REFIT_SPANS = ((0.0, 0.8), (0.1, 0.9))
MIN_HELD_OUT_WINDOWS = 100  # fewer held-out windows than this: the series is skipped as 'too few bars'
QUICK_OVERRIDES = {"encoder": {"epochs": 2}, "forecaster": {"epochs": 1}}
QUICK_PLANTED_BARS = {"long_dwell": 3000}  # other scenarios: 2000 bars in --quick
QUICK_REAL_BARS = 2500  # --quick keeps the last 2500 bars of each real series
PLANTED_LIMITS = {"switch_ratio": (0.67, 1.5)}
REAL_LIMITS = {"dwell_ratio": (0.7, 1.4), "refit_agreement": 0.90}

Progress_ = Callable[[str], None]


def set_overrides(pairs: list[str]) -> dict:
    """``--set`` pairs (``clustering.volume_weight=1``; values parsed as YAML) -> a nested dict for _merge."""
    import yaml

    out: dict = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"--set takes KEY=VALUE (e.g. clustering.volume_weight=1), got {p!r}")
        key, val = p.split("=", 1)
        *parents, leaf = key.strip().split(".")
        nested: dict = {leaf: yaml.safe_load(val)}
        for q in reversed(parents):
            nested = {q: nested}
        out = _merge(out, nested)
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# -- the project's method: the ONE adapter to revisit when the regime layer changes ---------------------------


def project_labels(
    series: BarSeries,
    cfg_overrides: dict,
    seed: int,
    progress: Progress_ | None = None,
    info: dict | None = None,
    warm=None,
    keep: dict | None = None,
    output_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Train the project on ``series`` and return (bar_index (N,), labels (N,), n_train_windows).

    labels[i] is the served regime of window i, whose last bar is series bar bar_index[i] (the bar it labels,
    causally); windows [0, n_train_windows) are the training windows, the rest are held out. cfg_overrides is a
    nested dict for trainer.config.from_dict (holdout, clustering.n_clusters, encoder.epochs, ...). ``info``, if
    given, receives what the training summary says about the regimes (for the JSON only; never scored).
    ``warm`` warm-starts the training from a previous model (trainer/warm_start.py: what `regimetry refresh`
    does); ``keep``, if given, receives this model's own warm start under "warm". ``output_dir``, if given,
    exports the bundle there (so it can be run on later bars) and ``keep`` receives its path under "bundle".

    This is the only place that knows TrainResult: when the regime layer changes, look here and nowhere else.
    """
    from trainer.config import from_dict
    from trainer.pipeline import train

    base = {"name": "bench", "data": "bench", "seed": seed, "set_current": False}
    if output_dir is not None:
        base["output_dir"] = output_dir
    cfg = from_dict(_merge(base, cfg_overrides))

    def on_stage(stage: str, step: int, total: int, msg: str = "") -> None:
        if progress:
            progress(f"project: {stage} {step}/{total} {msg}"[:90])

    result = train(cfg, progress=on_stage, series=series, planted=None, write_bundle=output_dir is not None, warm=warm)
    if keep is not None:
        keep["warm"] = result.warm
        keep["bundle"] = result.bundle_dir
    end_time = np.asarray(result.end_time)
    bar_index = np.searchsorted(series.times, end_time)
    if not np.array_equal(series.times[bar_index], end_time):
        raise RuntimeError("TrainResult.end_time does not name bars of the series")
    labels = np.asarray(result.regimes, dtype=np.int64)
    if info is not None:
        clus = result.summary.get("clustering", {})
        info.update({k: clus[k] for k in ("penalty", "mean_duration") if k in clus})
        nr = result.summary.get("next_regime") or {}
        if nr:  # the forecaster against persistence, Markov and flat-next on this training's held-out split
            info["forecast_verdict"] = nr.get("verdict")
            info["change_step_f1"] = {c: d.get("f1") for c, d in (nr.get("change_detection") or {}).items()}
    return bar_index.astype(np.int64), labels, int(result.summary["data"]["n_train"])


def warm_refit_agreement(series: BarSeries, overrides: dict, seed: int, progress: Progress_) -> dict:
    """The project's refit as `regimetry refresh` does it: the 10-90 % model warm-started from the 0-80 % one
    (its scaler, encoder weights, geometry, centres, penalty and ids; encoder fine-tuned), compared on the bars
    both label. The baselines have no warm start; their refits (and the project's cold one) are in refit."""
    spans = [(int(round(lo * len(series))), int(round(hi * len(series)))) for lo, hi in REFIT_SPANS]
    ov = _merge(overrides, {"holdout": REFIT_HOLDOUT})
    keep: dict = {}
    (a0, a1), (b0, b1) = spans
    ia, la, _ = project_labels(series.slice(a0, a1), ov, seed, progress, keep=keep)
    ib, lb, _ = project_labels(series.slice(b0, b1), ov, seed, progress, warm=keep["warm"])
    agree, same, n = common_agreement(ia + a0, la, ib + b0, lb)
    return {"agreement": agree, "same_ids_without_matching": same, "n_bars": n}


def common_agreement(
    bars_a: np.ndarray, labels_a: np.ndarray, bars_b: np.ndarray, labels_b: np.ndarray
) -> tuple[float, float, int]:
    """Two fits' labels (each (N,) at absolute bars (N,)) on the bars both label: (Hungarian-matched agreement,
    what a refresh publishes on; the share with the same id without matching; the number of such bars)."""
    common, pa, pb = np.intersect1d(bars_a, bars_b, return_indices=True)
    if not len(common):
        return float("nan"), float("nan"), 0
    la, lb = labels_a[pa], labels_b[pb]
    return rs.refit_agreement(la, lb), float(np.mean(la == lb)), int(len(common))


# -- running every method on one series ------------------------------------------------------------------------


@dataclass
class Run:
    """Every method's causal labels on one series, on the project's windows and split."""

    n_bars: int
    bar_index: np.ndarray  # (N,) bar of each project window
    n_train: int  # windows [0, n_train) are training windows
    labels: dict[str, np.ndarray]  # method -> (T,) label of every bar, -1 where it has none
    info: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def train_bars(self) -> np.ndarray:
        return self.bar_index[: self.n_train]

    @property
    def held_bars(self) -> np.ndarray:
        return self.bar_index[self.n_train :]


def run_methods(
    series: BarSeries, n_states: int, overrides: dict, seed: int, holdout: float, hmm_volume: bool, progress: Progress_
) -> Run:
    values = series.values
    window = int(overrides.get("window_size", 30))
    t0 = time.perf_counter()
    proj_info: dict = {}
    bar_index, proj, n_train = project_labels(
        series,
        _merge(overrides, {"holdout": holdout, "clustering": {"n_clusters": n_states}}),
        seed,
        progress,
        proj_info,
    )
    seconds = {"project": time.perf_counter() - t0}
    full = np.full(len(series), baselines.UNLABELLED, dtype=np.int64)
    full[bar_index] = proj
    labels = {"project": full}
    fit_end = int(bar_index[n_train - 1]) + 1  # training bars: everything the project's training windows saw
    info: dict = {"fit_end_bar": fit_end, "window_size": window, "project": proj_info}

    progress("HMM (forward filter)")
    t0 = time.perf_counter()
    hmm = baselines.hmm_filtered(values, fit_end, n_states, seed, use_volume=hmm_volume)
    labels["hmm_filtered"], info["hmm_filtered"] = hmm.labels, hmm.info
    seconds["hmm_filtered"] = time.perf_counter() - t0

    progress("jump model (penalty CV, online)")
    t0 = time.perf_counter()
    jm = baselines.jump_model_online(values, fit_end, n_states, seed)
    labels["jump_online"], info["jump_online"] = jm.labels, jm.info
    seconds["jump_online"] = time.perf_counter() - t0

    ys = yardstick(values, bar_index, proj, n_train, n_states, window)
    labels["yardstick"], info["yardstick"] = ys.labels, ys.info
    return Run(len(series), bar_index, n_train, labels, info, seconds)


def yardstick(
    values: np.ndarray, bar_index: np.ndarray, proj: np.ndarray, n_train: int, n_states: int, window: int
) -> baselines.BaselineLabels:
    """The trailing-volatility yardstick cut into the project's training shares (windows [0, n_train) of
    bar_index (N,) with labels proj (N,)), calmest first: the project's regimes are ordered here by their own
    mean trailing volatility, so no assumption about how its ids are numbered."""
    sd = baselines.trailing_sd(values, window)
    tr_lab, tr_sd = proj[:n_train], sd[bar_index[:n_train]]
    present = [g for g in range(n_states) if np.any(tr_lab == g)]
    order = sorted(present, key=lambda g: float(np.nanmean(tr_sd[tr_lab == g]))) + [
        g for g in range(n_states) if g not in present
    ]
    shares = [float(np.mean(tr_lab == g)) for g in order]
    fit_end = int(bar_index[n_train - 1]) + 1
    return baselines.trailing_vol(values, fit_end, window, shares, fit_start=int(bar_index[0]))


def _at(run: Run, method: str, bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = run.labels[method][bars]
    ok = lab >= 0
    return lab[ok], bars[ok]


# -- planted --------------------------------------------------------------------------------------------------


def planted_scenarios(names: list[str], quick: bool, data_seed: int | None):
    for name in names:
        extra = {}
        if quick:
            extra["n_bars"] = QUICK_PLANTED_BARS.get(name, 2000)
        yield name, scenario(name, seed=data_seed, **extra)


def score_planted(run: Run, truth: np.ndarray) -> dict:
    out = {}
    for m in METHODS:
        f, bars = _at(run, m, run.held_bars)
        if not len(f):
            out[m] = {"error": run.info.get(m, {}).get("error", "no labels on the held-out bars")}
            continue
        y = truth[bars]
        delays = rs.detection_delays(f, y)
        out[m] = {
            "ari": rs.ari(f, y),
            "balanced_accuracy": rs.balanced_accuracy(f, y),
            "switches": rs.switch_count(f),
            "true_switches": rs.switch_count(y),
            "switch_ratio": rs.switch_ratio(f, y),
            "median_delay": delays["median_delay"],
            "share_detected": delays["share_detected"],
            "n_scored_bars": int(len(f)),
        }
    return out


def planted_section(args, overrides: dict, tick, progress: Progress_) -> dict:
    out = {}
    for name, syn in planted_scenarios(args.scenarios, args.quick, args.data_seed):
        k = len(syn.regimes)
        hmm_volume = len({r.volume for r in syn.regimes}) > 1
        progress(f"planted/{name}: {len(syn.labels)} bars, {k} states")
        run = run_methods(syn.bars, k, overrides, args.seed, HOLDOUT, hmm_volume, progress)
        out[name] = {
            "n_bars": len(syn.labels),
            "n_states": k,
            "data_seed": SCENARIOS[name].get("seed", 7) if args.data_seed is None else args.data_seed,
            "generator": {k2: (v if k2 != "regimes" else [r.__dict__ for r in v]) for k2, v in SCENARIOS[name].items()},
            "n_train_windows": run.n_train,
            "n_held_out_bars": int(len(run.held_bars)),
            "hmm_uses_volume": hmm_volume,
            "methods": score_planted(run, syn.labels),
            "method_info": {m: run.info.get(m) for m in METHODS},
            "seconds": run.seconds,
        }
        tick()
    return out


# -- real -----------------------------------------------------------------------------------------------------


REAL_SERIES = ("eurusd", "goog", "sp500", "btcusd")
TOO_SHORT = ("btcusd",)  # monthly: too few bars for a split, reported as skipped


def real_series(name: str) -> BarSeries:
    """A wheel sample (regimetry/data.py::WHEEL_SAMPLES), read in place with the project's loader: EURUSD
    hourly, GOOG daily and BTCUSD monthly from `backtesting`, the S&P 500 index daily from `arch`."""
    return load_sample(name)


def too_few_bars(n_bars: int, window: int, holdout: float) -> str | None:
    """Why a series cannot be benchmarked (None if it can): fewer than MIN_HELD_OUT_WINDOWS held-out windows."""
    spec = FeatureSpec()

    def held(w: int) -> int:
        n = max(0, n_bars - history_needed(spec, w) + 1)
        return n - int(round(n * (1 - holdout)))

    if held(window) >= MIN_HELD_OUT_WINDOWS:
        return None
    return (
        f"too few bars: {n_bars} bars give {max(0, n_bars - history_needed(spec, window) + 1)} windows of "
        f"{window} (after the {spec.lookback}-bar feature look-back), {held(window)} held out; even window 2 "
        f"leaves {held(2)} held-out windows (< {MIN_HELD_OUT_WINDOWS}) and the refit spans fewer still"
    )


def score_real(run: Run, log_ret: np.ndarray) -> dict:
    out = {}
    for m in METHODS:
        f, bars = _at(run, m, run.held_bars)
        ftr, _ = _at(run, m, run.train_bars)
        if not len(f):
            out[m] = {"error": run.info.get(m, {}).get("error", "no labels on the held-out bars")}
            continue
        nxt = rs.next_returns(log_ret, bars)
        d_tr, d_ho = rs.mean_dwell(ftr), rs.mean_dwell(f)
        out[m] = {
            "eta2": rs.next_abs_return_eta2(f, nxt),
            "vol_ratio": rs.vol_ratio(f, nxt),
            "dwell_train": d_tr,
            "dwell_held_out": d_ho,
            "dwell_ratio": d_ho / d_tr if d_tr else float("nan"),
            "n_states_used_held_out": int(len(np.unique(f))),
            "n_scored_bars": int(len(f)),
        }
    return out


def refit_agreements(a: Run, a_start: int, b: Run, b_start: int) -> dict:
    """Per method: the two fits' labels on the bars both label (absolute bar t = start + slice index)."""
    out = {}
    lo, hi = max(a_start, b_start), min(a_start + a.n_bars, b_start + b.n_bars)
    for m in METHODS:
        la = a.labels[m][lo - a_start : hi - a_start]
        lb = b.labels[m][lo - b_start : hi - b_start]
        ok = (la >= 0) & (lb >= 0)
        out[m] = {
            "agreement": rs.refit_agreement(la[ok], lb[ok]) if ok.any() else float("nan"),
            "n_bars": int(ok.sum()),
            "first_bar": int(lo + np.argmax(ok)) if ok.any() else None,
        }
    return out


def real_section(args, overrides: dict, n_clusters: int, tick, progress: Progress_) -> dict:
    out = {}
    window = int(overrides.get("window_size", 30))
    for name in args.series:
        series = real_series(name)
        n_full = len(series)
        if args.quick and len(series) > QUICK_REAL_BARS:
            series = series.slice(len(series) - QUICK_REAL_BARS)
        entry: dict = {
            "symbol": series.symbol,
            "n_bars": len(series),
            "n_bars_available": n_full,
            "first_bar": int(series.times[0]),
            "last_bar": int(series.times[-1]),
            "n_states": n_clusters,
            "hmm_uses_volume": False,
        }
        reason = too_few_bars(len(series), window, HOLDOUT)
        if reason:
            entry["skipped"] = reason
            out[name] = entry
            tick(4)
            continue
        progress(f"real/{name}: {len(series)} bars")
        log_ret = baselines.log_returns(series.values)
        run = run_methods(series, n_clusters, overrides, args.seed, HOLDOUT, False, progress)
        entry.update(
            {
                "n_train_windows": run.n_train,
                "n_held_out_bars": int(len(run.held_bars)),
                "methods": score_real(run, log_ret),
                "method_info": {m: run.info.get(m) for m in METHODS},
                "seconds": run.seconds,
            }
        )
        tick()
        fits = []
        for lo, hi in REFIT_SPANS:
            start, stop = int(round(lo * len(series))), int(round(hi * len(series)))
            progress(f"real/{name}: refit on bars {lo:.0%}-{hi:.0%}")
            fits.append(
                (
                    run_methods(
                        series.slice(start, stop), n_clusters, overrides, args.seed, REFIT_HOLDOUT, False, progress
                    ),
                    start,
                )
            )
            tick()
        (ra, sa), (rb, sb) = fits
        agree = refit_agreements(ra, sa, rb, sb)
        for m in METHODS:
            if "error" not in entry["methods"][m]:
                entry["methods"][m]["refit_agreement"] = agree[m]["agreement"]
        entry["refit"] = {"spans": [list(s) for s in REFIT_SPANS], "holdout": REFIT_HOLDOUT, "per_method": agree}
        if "error" not in entry["methods"]["project"]:
            progress(f"real/{name}: warm-started refit")
            w = warm_refit_agreement(series, overrides, args.seed, progress)
            entry["refit"]["project_warm"] = w
            entry["methods"]["project"]["refit_agreement_cold"] = entry["methods"]["project"].get("refit_agreement")
            entry["methods"]["project"]["refit_agreement"] = w["agreement"]
            tick()
        out[name] = entry
    return out


# -- checks, tables, plot -------------------------------------------------------------------------------------


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def done_when_checks(planted: dict, real: dict) -> list[dict]:
    """Issue 11's Done-when checks: status PASS, FAIL, or N/A (a number is missing) / SKIP (series skipped)."""
    checks = []

    def add(section, subject, name, ok, detail):
        status = "N/A" if ok is None else ("PASS" if ok else "FAIL")
        checks.append({"section": section, "subject": subject, "check": name, "status": status, "detail": detail})

    for sc, e in planted.items():
        m = e["methods"]
        p = _num(m["project"].get("ari"))
        for other in ("hmm_filtered", "jump_online"):
            o = _num(m[other].get("ari"))
            ok = None if np.isnan(p) or np.isnan(o) else p >= o
            add("planted", sc, f"ARI project >= {other}", ok, f"{p:.3f} vs {o:.3f}")
        sr = _num(m["project"].get("switch_ratio"))
        lo, hi = PLANTED_LIMITS["switch_ratio"]
        add("planted", sc, f"switch ratio in [{lo}, {hi}]", None if np.isnan(sr) else lo <= sr <= hi, f"{sr:.2f}")
    for name, e in real.items():
        if "skipped" in e:
            checks.append(
                {"section": "real", "subject": name, "check": "all", "status": "SKIP", "detail": e["skipped"]}
            )
            continue
        m = e["methods"]
        p_eta, p_dw = _num(m["project"].get("eta2")), _num(m["project"].get("dwell_held_out"))
        for other in ("yardstick", "jump_online"):
            o_eta, o_dw = _num(m[other].get("eta2")), _num(m[other].get("dwell_held_out"))
            if np.isnan(p_eta) or np.isnan(o_eta):
                ok = None
            else:
                ok = bool(p_eta >= o_eta and p_dw >= o_dw)
            add(
                "real",
                name,
                f"eta2 project >= {other} at a held-out dwell no shorter",
                ok,
                f"eta2 {p_eta:.4f} vs {o_eta:.4f}, dwell {p_dw:.1f} vs {o_dw:.1f} bars"
                + (" (project dwell shorter)" if p_dw < o_dw else ""),
            )
        dr = _num(m["project"].get("dwell_ratio"))
        lo, hi = REAL_LIMITS["dwell_ratio"]
        add(
            "real",
            name,
            f"held-out/training dwell in [{lo}, {hi}]",
            None if np.isnan(dr) else lo <= dr <= hi,
            f"{dr:.2f}",
        )
        ra = _num(m["project"].get("refit_agreement"))
        cold = _num(m["project"].get("refit_agreement_cold"))
        add(
            "real",
            name,
            f"refit agreement >= {REAL_LIMITS['refit_agreement']} (warm-started refit, as refresh does)",
            None if np.isnan(ra) else ra >= REAL_LIMITS["refit_agreement"],
            f"{ra:.3f}; from scratch {cold:.3f}",
        )
    return checks


def _f(x, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def paired_tables(
    titles: tuple[str, str], head: tuple[str, str], columns: tuple[tuple[str, str], tuple[str, str]]
) -> tuple[Table, Table]:
    """Two tables with the same two leading columns and two columns per method each."""
    tables = (Table(title=titles[0]), Table(title=titles[1]))
    for t, cols in zip(tables, columns):
        t.add_column(head[0])
        t.add_column(head[1], justify="right")
        for m in METHODS:
            for c in cols:
                t.add_column(f"{SHORT[m]} {c}", justify="right")
    return tables


def planted_tables(planted: dict) -> list[Table]:
    t1, t2 = paired_tables(
        (
            "planted, held-out bars: ARI / balanced accuracy (Hungarian-matched)",
            "planted, held-out bars: found/true switches (ratio), median detection delay in bars "
            "(share of true switches detected)",
        ),
        ("scenario", "bars/k/sw"),
        (("ARI", "bAcc"), ("switches", "delay")),
    )
    for sc, e in planted.items():
        ms = e["methods"]
        n_sw = ms["project"].get("true_switches", "-")
        head = [sc, f"{e['n_held_out_bars']}/{e['n_states']}/{n_sw}"]
        r1, r2 = list(head), list(head)
        for m in METHODS:
            s = ms[m]
            if "error" in s:
                r1 += ["fail", "fail"]
                r2 += ["fail", "fail"]
                continue
            r1 += [_f(s["ari"], ".3f"), _f(s["balanced_accuracy"], ".3f")]
            r2 += [
                f"{s['switches']} ({_f(s['switch_ratio'], '.2f')})",
                f"{_f(s['median_delay'], '.0f')} ({_f(s['share_detected'], '.0%')})",
            ]
        t1.add_row(*r1)
        t2.add_row(*r2)
    return [t1, t2]


def real_tables(real: dict) -> list[Table]:
    t1, t2 = paired_tables(
        (
            "real, held-out bars: eta^2 of next-bar |return| by label / next-bar vol ratio max/min",
            "real: mean dwell in bars train -> held-out (ratio) / refit agreement (0-80 % vs 10-90 %)",
        ),
        ("series", "bars/held/k"),
        (("eta2", "volx"), ("dwell", "refit")),
    )
    for name, e in real.items():
        if "skipped" in e:
            for t in (t1, t2):  # the reason is printed in full with the checks
                t.add_row(
                    name,
                    f"{e['n_bars']}/-/{e['n_states']}",
                    "skipped:",
                    "too few",
                    "bars",
                    *[""] * (2 * len(METHODS) - 3),
                )
            continue
        head = [name, f"{e['n_bars']}/{e['n_held_out_bars']}/{e['n_states']}"]
        r1, r2 = list(head), list(head)
        for m in METHODS:
            s = e["methods"][m]
            if "error" in s:
                r1 += ["fail", "fail"]
                r2 += ["fail", "fail"]
                continue
            r1 += [_f(s["eta2"], ".4f"), _f(s["vol_ratio"], ".2f")]
            r2 += [
                f"{_f(s['dwell_train'], '.1f')}->{_f(s['dwell_held_out'], '.1f')} ({_f(s['dwell_ratio'], '.2f')})",
                _f(s.get("refit_agreement"), ".3f"),
            ]
        t1.add_row(*r1)
        t2.add_row(*r2)
    return [t1, t2]


def plot(planted: dict, real: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = dict(zip(METHODS, ("tab:red", "tab:blue", "tab:green", "tab:gray")))
    names = list(planted)
    width = 0.8 / len(METHODS)
    for i, m in enumerate(METHODS):
        vals = [_num(planted[n]["methods"][m].get("ari")) for n in names]
        ax1.bar(
            np.arange(len(names)) + (i - (len(METHODS) - 1) / 2) * width,
            np.nan_to_num(vals),
            width,
            label=m,
            color=colours[m],
        )
    ax1.set_xticks(np.arange(len(names)), names, rotation=20)
    ax1.set_ylabel("ARI, held-out bars")
    ax1.set_title("planted regimes recovered (causal labels)")
    ax1.axhline(0, color="k", lw=0.5)
    if names:
        ax1.legend(fontsize=8)
    markers = "osD^v"
    for j, (name, e) in enumerate((n, e) for n, e in real.items() if "skipped" not in e):
        for m in METHODS:
            s = e["methods"][m]
            if "error" in s:
                continue
            ax2.scatter(
                s["dwell_held_out"],
                s["eta2"],
                color=colours[m],
                marker=markers[j % len(markers)],
                s=50,
                label=f"{name}: {m}",
            )
    ax2.set_xscale("log")
    ax2.set_xlabel("mean held-out dwell (bars, log)")
    ax2.set_ylabel("eta^2 of next-bar |return|, held-out")
    ax2.set_title("real series: separation vs persistence")
    if ax2.collections:
        ax2.legend(fontsize=7, ncol=2)
    skipped = [n for n, e in real.items() if "skipped" in e]
    if skipped:
        ax2.annotate(
            f"skipped (too few bars): {', '.join(skipped)}", (0.01, 0.01), xycoords="axes fraction", fontsize=7
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clean(x):
    """JSON-able: numpy scalars/arrays to Python, nan/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def add_set_argument(ap: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable), read by set_overrides."""
    ap.add_argument(
        "--set",
        dest="set_",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one training option of the project's method (repeatable; dotted keys, YAML values, e.g. "
        "clustering.volume_weight=1); merged into cfg_overrides, recorded in the JSON. Give a variant its own "
        "--out: the default one is the yardstick's",
    )


USABLE_SERIES = tuple(s for s in REAL_SERIES if s not in TOO_SHORT)


def add_series_argument(ap: argparse.ArgumentParser) -> None:
    """``--series a,b`` of the real series that have enough bars (the scripts built on this one), read by
    chosen_series."""
    ap.add_argument("--series", default=",".join(USABLE_SERIES), help=f"real series, from {','.join(USABLE_SERIES)}")


def chosen_series(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """The names of ``--series`` (lower case), or the parser's error naming the known ones."""
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    for s in names:
        if s not in USABLE_SERIES:
            ap.error(f"unknown series {s!r}; known: {', '.join(USABLE_SERIES)} ({', '.join(TOO_SHORT)}: too few bars)")
    return names


def environment(console: Console) -> dict:
    """The library versions a result was made with (recorded in its JSON). The committed results were made with
    constraints.txt's pins; a run on other versions trains other models, so its figures differ from the
    committed ones for that reason alone, and the console says so before any figure is printed."""
    from trainer.environment import library_versions, pinned_versions, unpinned

    found = library_versions()
    off = unpinned(found, pinned_versions())
    if off:
        console.print(
            "[yellow]not the pinned stack[/] (scripts/setup.sh installs constraints.txt): "
            + ", ".join(f"{k} {v} (pinned {p})" for k, (v, p) in off.items())
            + "; figures will differ from the committed results for that reason alone",
            highlight=False,
        )
    return {"libraries": found, "differs_from_constraints": {k: v for k, (v, _) in off.items()}}


def consoles() -> tuple[Console, Console]:
    """The tables' console (stdout) and the progress bar's (stderr), 170 columns wide when not a terminal, so a
    table written to a log keeps its rows whole."""
    out, err = Console(), Console(stderr=True)
    for c in (out, err):
        if not c.is_terminal:
            c.width = 170
    return out, err


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 encoder / 1 forecaster epochs, shorter series")
    ap.add_argument("--only", choices=("planted", "real"), help="run one section only")
    ap.add_argument("--seed", type=int, default=42, help="seed of every model fit (project, HMM, jump model)")
    ap.add_argument("--data-seed", type=int, default=None, help="planted data seed (default: each preset's own)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"planted scenarios, from {','.join(SCENARIOS)}")
    ap.add_argument("--series", default=",".join(REAL_SERIES), help=f"real series, from {','.join(REAL_SERIES)}")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/bench_regimes.json, with --quick "
        "bench_regimes_quick.json so a smoke run never overwrites the yardstick)",
    )
    ap.add_argument("--plot", type=Path, default=None, help="PNG path (default: --out with .png)")
    add_set_argument(ap)
    args = ap.parse_args(argv)
    if args.set_ and args.out is None:
        ap.error(
            "--set needs --out (e.g. benchmarks/results/bench_regimes_huber.json): a variant never writes "
            "over the yardstick's bench_regimes.json"
        )
    if args.out is None:
        args.out = (
            ROOT / "benchmarks" / "results" / ("bench_regimes_quick.json" if args.quick else "bench_regimes.json")
        )
    args.scenarios = [s for s in args.scenarios.split(",") if s] if args.only != "real" else []
    args.series = [s.lower() for s in args.series.split(",") if s] if args.only != "planted" else []
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for s in args.series:
        if s not in REAL_SERIES:
            ap.error(f"unknown series {s!r}; known: {', '.join(REAL_SERIES)}")

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # "Model is not converging" chatter of EM restarts
    out_console, err_console = consoles()
    env = environment(err_console)
    from trainer.config import from_dict

    overrides = copy.deepcopy(QUICK_OVERRIDES) if args.quick else {}
    try:
        overrides = _merge(overrides, set_overrides(args.set_))
        from_dict(overrides)  # unknown keys and invalid values fail here, not after minutes of baselines
    except ValueError as e:
        ap.error(str(e))
    n_clusters = from_dict(overrides).clustering.n_clusters
    started = time.perf_counter()
    total = len(args.scenarios) + 4 * len(args.series)
    bars = progress_bars("regimes", err_console)
    with bars:
        task = bars.add_task("starting", total=total)

        def progress(msg: str) -> None:
            bars.update(task, description=msg)

        def tick(n: int = 1) -> None:
            bars.advance(task, n)

        planted = planted_section(args, overrides, tick, progress) if args.scenarios else {}
        real = real_section(args, overrides, n_clusters, tick, progress) if args.series else {}
        bars.update(task, description="done")

    warm = "project refit = warm-started from the 0-80 % model (trainer/warm_start.py); from-scratch refit in JSON"
    checks = done_when_checks(planted, real)
    elapsed = time.perf_counter() - started
    for t in (planted_tables(planted) if planted else []) + (real_tables(real) if real else []):
        out_console.print(t)
    out_console.print("[bold]Done-when checks (issue 11)[/]")
    style = {"PASS": "green", "FAIL": "red", "N/A": "yellow", "SKIP": "yellow"}
    for c in checks:
        out_console.print(
            f"[{style[c['status']]}]{c['status']:<4}[/] {c['section']}/{c['subject']}: {c['check']} ({c['detail']})",
            highlight=False,
        )
    counts = {s: sum(c["status"] == s for c in checks) for s in ("PASS", "FAIL", "N/A", "SKIP")}
    out_console.print(
        "  ".join(f"{k} {v}" for k, v in counts.items())
        + f"   ({elapsed:.0f} s"
        + (", --quick: smoke numbers only" if args.quick else "")
        + ")"
    )
    if warm:
        out_console.print(warm)

    doc = {
        "benchmark": "bench_regimes",
        "issue": 11,
        "quick": args.quick,
        "seed": args.seed,
        "data_seed": args.data_seed,
        "environment": env,
        "elapsed_seconds": elapsed,
        "cfg_overrides": overrides,
        "holdout": HOLDOUT,
        "n_clusters_real": n_clusters,
        "methods": DESCRIPTION,
        "hmm_volume_rule": HMM_VOLUME_RULE,
        "jump_penalty_rule": baselines.JUMP_PENALTY_RULE,
        "jump_penalty_grid": list(baselines.JUMP_PENALTIES),
        "scoring": {
            "planted": "held-out bars (the project's last 20 % of windows), each method's causal label at "
            "each bar, Hungarian matching of found to planted labels",
            "real": "held-out bars; eta2 and vol ratio of r_{t+1} by the label at t; dwell = mean run "
            "length (runs cut at the ends count); refit: fits on bars "
            f"{REFIT_SPANS}, each with a {REFIT_HOLDOUT:.0%} held-out tail inside its span, "
            "compared on the bars both label, Hungarian-matched",
        },
        "limits": {"planted": PLANTED_LIMITS, "real": REAL_LIMITS},
        "planted": planted,
        "real": real,
        "checks": checks,
        "check_counts": counts,
        "warm_refit": warm,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(doc), indent=2))
    png = args.plot or args.out.with_suffix(".png")
    plot(planted, real, png)
    out_console.print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
