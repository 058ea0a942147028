"""The switch penalty of the jump model: the three rules of ``clustering.penalty_rule``, training windows only.

- ``self_consistent`` (the default): the penalty the fit's own causal dwell implies for a hard HMM, iterated to a
  fixed point.
- ``persistent``: that penalty raised as far as time-series cross-validation on the training windows cannot tell
  the difference (one-standard-error rule on next-bar |log return| eta squared).
- ``validation_eta2``: the earlier rule, the largest candidate within 5 % of the best validation eta squared of
  the coming bars' volatility.

``validate_penalty`` is also what the search's training-only figures are computed with (trainer/clustering.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from regimetry.regimes import JumpDecoder, point_costs
from trainer.config import ClusterConfig
from trainer.jump_fit import (
    decode,
    dwell,
    fit_mask,
    order_by,
    refine,
    spectral_labels,
    sub_segments,
    unbounded_labels,
)


def validate_penalty(
    g: np.ndarray,
    start: np.ndarray,
    fit: np.ndarray,
    lam: float,
    next_risk: np.ndarray,
    cfg: ClusterConfig,
    seg: np.ndarray | None = None,
) -> tuple[dict, np.ndarray]:
    """Fit (jump refinement from ``start``) on the windows of mask ``fit`` (the first part of each segment)
    with penalty ``lam``, decode every window causally; the validation windows' eta squared of ``next_risk``
    and the mean dwell in and out of the fit."""
    from trainer.regime_scores import eta_squared

    cent, _ = refine(g[fit], start, cfg.n_clusters, lam, seg=sub_segments(seg, fit), huber_delta=cfg.huber_delta)
    lab = decode(JumpDecoder(float(lam), cfg.memory), point_costs(g, cent, cfg.huber_delta), seg).argmin(1)
    val = lab[~fit]
    ok = np.isfinite(next_risk[~fit])
    eta2 = eta_squared(val[ok], next_risk[~fit][ok]) if ok.sum() > 1 else float("nan")
    row = {
        "penalty": float(lam),
        "eta2": 0.0 if np.isnan(eta2) else float(eta2),
        "dwell_fit": dwell(lab[fit], sub_segments(seg, fit)),
        "dwell_validation": dwell(val, sub_segments(seg, ~fit)),
    }
    return row, val


def choose_penalty(
    g: np.ndarray,
    next_risk: np.ndarray,
    order_key: np.ndarray,
    cfg: ClusterConfig,
    seed: int,
    seg: np.ndarray | None = None,
) -> tuple[float, dict]:
    """The switch penalty of ``penalty_rule: validation_eta2``, chosen on training windows only.

    Fit (spectral start + jump refinement) on the first ``1 - cfg.validation`` share of the training windows,
    decode the rest causally with each candidate penalty, and score the share of the variance of the coming
    risk (``next_risk``, e.g. the mean range-based volatility of the next bars; NaN where unknown) explained by
    the regimes (eta squared) and the mean dwell there. Rule: among candidates whose validation eta squared is
    within ``cfg.penalty_tolerance`` (relative) of the best, take the largest penalty: as informative as the
    best, and as persistent as that allows."""
    n = len(g)
    fit = fit_mask(seg, n, cfg.validation)
    k = cfg.n_clusters
    if not np.isfinite(next_risk[~fit]).any():
        raise ValueError(
            f"cannot choose the switch penalty: none of the {int((~fit).sum())} validation windows has a "
            f"known coming risk (too few training bars); set clustering.penalty explicitly"
        )
    start = order_by(spectral_labels(g[fit], cfg, seed), order_key[fit], k)
    rows, labels_of = [], {}
    for lam in cfg.penalties:
        row, val = validate_penalty(g, start, fit, float(lam), next_risk, cfg, seg)
        rows.append(row)
        labels_of[float(lam)] = val
    best = max(r["eta2"] for r in rows)
    good = [r for r in rows if r["eta2"] >= best * (1.0 - cfg.penalty_tolerance)]
    chosen = max(good, key=lambda r: r["penalty"])
    rule = (
        "largest penalty whose validation eta^2 of the coming bars' range-based volatility is within "
        f"{cfg.penalty_tolerance:.0%} of the best; fitted on the first {1 - cfg.validation:.0%} of the training "
        "windows, validated on the rest"
    )
    return chosen["penalty"], {
        "rule": rule,
        "validation_windows": int((~fit).sum()),
        "candidates": rows,
        "chosen": chosen["penalty"],
        "_validation_row": chosen,
        "_validation_labels": labels_of[chosen["penalty"]],
        "_cut": fit,
    }


def self_consistent_penalty(
    g: np.ndarray, start: np.ndarray, cfg: ClusterConfig, seg: np.ndarray | None = None
) -> tuple[float, dict]:
    """The switch penalty of ``penalty_rule: self_consistent``: the one the fit's own persistence implies.

    A jump model is a hard HMM whose transition matrix stays with probability 1 - p and moves to each other
    regime with p / (K - 1); with costs in nats (``whiten``) a switch then costs log((1 - p)(K - 1) / p) nats
    more than a stay, i.e. log((K - 1)(D - 1)) for a mean dwell D = 1 / p. Starting at ``cfg.penalty_start``,
    fit the jump model on the training windows, decode them causally, set the penalty to what their mean dwell
    implies, and repeat until it moves by less than 0.05 (at most ``cfg.penalty_iterations`` fits). No horizon
    and no grid: a series whose regimes switch every 20 bars gets ~log(2 * 19) = 3.6, one whose regimes last
    200 bars ~6, whatever the window length. Training windows only."""
    k = cfg.n_clusters
    lam = float(cfg.penalty_start)
    history = []
    for _ in range(int(cfg.penalty_iterations)):
        cent, _ = refine(g, start, k, lam, seg=seg, huber_delta=cfg.huber_delta)
        served = decode(JumpDecoder(lam, cfg.memory), point_costs(g, cent, cfg.huber_delta), seg).argmin(1)
        d = dwell(served, seg)
        implied = float(np.log((k - 1) * max(d - 1.0, 1.0)))
        history.append({"penalty": lam, "dwell": d, "implied_penalty": implied})
        if abs(implied - lam) < 0.05:
            break
        lam = implied
    rule = (
        "self-consistent: penalty = log((K-1)(D-1)) nats for the mean dwell D of the causally decoded training "
        f"windows, iterated from {cfg.penalty_start:g} to a fixed point (hard-HMM switch cost)"
    )
    return lam, {"rule": rule, "candidates": history, "chosen": lam}


def persistent_penalty(
    g: np.ndarray,
    lam0: float,
    next_move: np.ndarray,
    order_key: np.ndarray,
    cfg: ClusterConfig,
    seed: int,
    seg: np.ndarray | None = None,
) -> tuple[float, dict]:
    """The switch penalty of ``penalty_rule: persistent``: the self-consistent one (``lam0``), raised as far as
    time-series cross-validation on the training windows cannot tell the difference.

    Why: the self-consistent penalty reads the fit's costs as calibrated log-likelihoods of independent bars.
    Where regimes are discrete (planted) that holds and ~4-6 nats recover them within a few bars; on real bars
    volatility drifts, the costs of overlapping windows are far from independent, and the same penalty flickers
    (EURUSD held-out dwell 24 bars against 14 in training). Whether a larger penalty loses anything is a question
    the training bars can answer: for each expanding-window fold (fit on the windows before cut c, causal labels
    on those up to the next cut; cuts ``cfg.persistence_folds``, per segment) and each candidate
    ``lam0 * m`` (``cfg.persistence_multiples``), score the share of the variance of the next bar's |log return|
    explained by the labels (eta squared; ``next_move`` (N,) NaN where the next bar is not a training bar). Take
    the best candidate, then the largest one whose fold-by-fold difference from it is within one standard error
    (paired, across folds): the one-standard-error rule, so a flat or noisy curve buys persistence and a steep
    one (planted regimes lost as the penalty grows) keeps the self-consistent penalty. Fewer than two usable
    folds keep ``lam0``."""
    from trainer.regime_scores import eta_squared

    n, k = len(g), cfg.n_clusters
    mults = sorted({float(m) for m in cfg.persistence_multiples} | {1.0})
    cuts = [float(c) for c in cfg.persistence_folds]
    scores: list[list[float]] = []
    for i, c in enumerate(cuts):
        fit = fit_mask(seg, n, 1.0 - c)
        upto = fit_mask(seg, n, 1.0 - cuts[i + 1]) if i + 1 < len(cuts) else np.ones(n, dtype=bool)
        val = ~fit & upto
        ok = val & np.isfinite(next_move)
        if fit.sum() <= max(cfg.n_neighbors, k) or ok.sum() < 2:
            continue
        start = order_by(spectral_labels(g[fit], cfg, seed), order_key[fit], k)
        row = []
        for m in mults:
            lam = lam0 * m
            cent, _ = refine(g[fit], start, k, lam, seg=sub_segments(seg, fit), huber_delta=cfg.huber_delta)
            # the unbounded recursion: what the served decoder gives once adequate_memory has sized it
            lab = unbounded_labels(point_costs(g, cent, cfg.huber_delta), lam, seg)
            row.append(eta_squared(lab[ok], next_move[ok]))
        if np.all(np.isfinite(row)):
            scores.append(row)
    info: dict[str, Any] = {"self_consistent": lam0, "multiples": mults, "folds": cuts}
    if len(scores) < 2:
        info.update(rule="self-consistent (fewer than two usable cross-validation folds)", chosen=lam0)
        return lam0, info
    s = np.asarray(scores)  # (folds, candidates)
    best = int(np.argmax(s.mean(0)))
    diff = s - s[:, [best]]
    se = diff.std(0, ddof=1) / np.sqrt(len(s))
    within = [j for j in range(len(mults)) if j >= best and diff[:, j].mean() >= -se[j]]
    chosen = lam0 * mults[max(within)]
    info.update(
        rule="persistent: the self-consistent penalty times the largest multiple whose next-bar |log return| "
        "eta^2 over expanding-window folds of the training windows is within one paired standard error of the "
        "best multiple's",
        fold_scores=s.tolist(),
        best=lam0 * mults[best],
        chosen=chosen,
    )
    return chosen, info
