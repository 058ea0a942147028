"""Regimes from embeddings: spectral clustering on the training windows, refined into a jump model, decoded
causally.

Spectral clustering is transductive (a window's label depends on every other window, future ones included),
so its labels are only the *starting partition*. They are refined by the statistical jump model's coordinate
descent (centres = means of their windows; labels = the penalised Viterbi path, jumpmodels.jump.dp) in the
regime geometry of regimetry/regimes.py, and the regime of any window, in training reports and live alike, is
what the causal jump decoder says from that window's and its predecessors' costs: causal, and exactly
reproducible by the worker. The geometry is whitened (``whiten``: every column in units of its within-regime
spread) and the switch penalty is the one the fit's own dwell implies (``self_consistent_penalty``), all on the
training bars only, never on held-out bars; ``persistent_penalty`` (that penalty raised as far as cross-validation
cannot tell the difference) is kept as ``penalty_rule: persistent``, and ``choose_penalty`` (time-series validation
on the coming bars' volatility) is the earlier rule, kept as ``penalty_rule: validation_eta2``.

The nearest-neighbour classifier of the first build is still fitted and exported (its vote shares are a
diagnostic: agreement with the spectral targets), but no served regime comes from it.

A universe's training windows are several series laid end to end (trainer/windows.py): ``seg`` (N,) gives each
window's segment, in contiguous blocks, and every sequential step here (the Viterbi path, the causal decoder,
dwell, the validation split) runs block by block. ``seg=None`` is one series.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from regimetry.classify import KNNClassifier
from regimetry.diagnostics import mean_duration
from regimetry.regimes import JumpDecoder, RegimeSpace, point_costs
from trainer.config import ClusterConfig

WHITEN_PASSES = 2  # fits behind the spreads: the first in the configured weights, then in the whitened ones
MEMORY_AGREEMENT = 0.999  # share of training windows the finite-memory decoder must label as the unbounded one
MAX_MEMORY = 1024  # the decoder's memory is doubled from cfg.memory at most up to this


def blocks(seg: np.ndarray | None, n: int) -> list[slice]:
    """The contiguous runs of equal segment ids (one slice over everything when seg is None)."""
    if seg is None:
        return [slice(0, n)]
    seg = np.asarray(seg)
    cuts = [0, *(np.flatnonzero(seg[1:] != seg[:-1]) + 1).tolist(), len(seg)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def decode(decoder: JumpDecoder, costs: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
    """The causal decoder over each segment separately (its memory never reaches into another segment)."""
    parts = blocks(seg, len(costs))
    if len(parts) == 1:
        return decoder.decode_series(costs)
    return np.concatenate([decoder.decode_series(costs[b]) for b in parts])


def dwell(labels: np.ndarray, seg: np.ndarray | None = None) -> float:
    """Mean run length, runs cut at segment boundaries."""
    parts = blocks(seg, len(labels))
    if len(parts) == 1:
        return mean_duration(labels)
    from regimetry.diagnostics import run_lengths

    lengths = np.concatenate([run_lengths(labels[b])[1] for b in parts])
    return float(lengths.mean()) if len(lengths) else 0.0


def fit_mask(seg: np.ndarray | None, n: int, validation: float) -> np.ndarray:
    """The fitting part of a time-series validation split: the first 1 - validation share of each segment."""
    mask = np.zeros(n, dtype=bool)
    for b in blocks(seg, n):
        m = b.stop - b.start
        mask[b.start : b.start + int(round(m * (1.0 - validation)))] = True
    return mask


def _sub(seg: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if seg is None else np.asarray(seg)[mask]


@dataclass
class Clustering:
    emb_mean: np.ndarray  # embedding standardisation fitted on training embeddings
    emb_std: np.ndarray
    train_labels: np.ndarray  # spectral labels of the training windows (renumbered)
    centroids: np.ndarray  # (K, P) in the regime geometry
    classifier: KNNClassifier
    space: RegimeSpace
    decoder: JumpDecoder
    selection: dict | None = None  # how the switch penalty was chosen (validation figures per candidate)


def fit_geometry(raw_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = raw_train.mean(0).astype(np.float64)
    std = raw_train.std(0).astype(np.float64)
    return mean, np.where(std > 1e-8, std, 1.0)


def spectral_labels(z: np.ndarray, cfg: ClusterConfig, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        n_clusters=cfg.n_clusters,
        affinity="nearest_neighbors",
        n_neighbors=min(cfg.n_neighbors, len(z) - 1),
        assign_labels="cluster_qr",
        random_state=seed,
    )
    return model.fit_predict(z.astype(np.float64)).astype(np.int64)


def order_by(labels: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """Renumber clusters so that id 0 has the smallest mean ``key`` (e.g. volatility): stable, readable ids."""
    means = np.array([key[labels == k].mean() if (labels == k).any() else np.inf for k in range(n)])
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(means, kind="stable")] = np.arange(n)
    return rank[labels]


def centroids_of(z: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    return np.stack([z[labels == k].mean(0) if (labels == k).any() else np.zeros(z.shape[1]) for k in range(n)])


def subsample(n: int, cap: int) -> np.ndarray:
    """Evenly spaced indices (deterministic) so the bundle's reference set stays small."""
    return np.arange(n) if n <= cap else np.linspace(0, n - 1, cap).round().astype(np.int64)


def risk_columns(names: tuple[str, ...], cfg: ClusterConfig) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Indices and weights of the feature columns the regime geometry reads directly."""
    cols, weights = [], []
    for i, n in enumerate(names):
        if n.startswith("log_rvol_hl"):
            cols.append(i)
            weights.append(cfg.risk_weight)
        elif n.startswith("trend_hl"):
            cols.append(i)
            weights.append(cfg.trend_weight)
        elif n == "log_range" and cfg.range_weight > 0:  # the bar's own range: the fastest risk reading
            cols.append(i)
            weights.append(cfg.range_weight)
        elif n.startswith("volume_z_") and cfg.volume_weight > 0:  # the bar's volume level (trailing z-score)
            cols.append(i)
            weights.append(cfg.volume_weight)
    return tuple(cols), tuple(weights)


def huber_centre(x: np.ndarray, delta: float, start: np.ndarray, iters: int = 20) -> np.ndarray:
    """(M, P) points -> (P,) the per-coordinate Huber location (the minimiser of the summed Huber costs of
    regimetry/regimes.py::point_costs) by iteratively reweighted means from ``start``."""
    m = np.asarray(start, dtype=np.float64).copy()
    for _ in range(iters):
        r = np.abs(x - m)
        w = np.minimum(1.0, delta / np.maximum(r, 1e-12))
        new = (w * x).sum(0) / w.sum(0)
        if np.max(np.abs(new - m)) < 1e-9:
            return new
        m = new
    return m


def centre_of(x: np.ndarray, huber_delta: float | None, start: np.ndarray | None = None) -> np.ndarray:
    """The centre that minimises the regime's summed costs: the mean (Gaussian) or the Huber location."""
    mean = x.mean(0)
    if huber_delta is None:
        return mean
    return huber_centre(x, float(huber_delta), mean if start is None else start)


def refine(
    g: np.ndarray,
    labels: np.ndarray | None,
    n: int,
    penalty: float,
    max_iter: int = 20,
    init_centroids: np.ndarray | None = None,
    seg: np.ndarray | None = None,
    huber_delta: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Statistical jump model fit started from a partition: alternate centres (the minimisers of each regime's
    summed costs: means, or Huber locations with ``huber_delta``) and the penalised Viterbi path
    (jumpmodels.jump.dp) on the costs of regimetry/regimes.py::point_costs until the labels stop changing.
    Returns (centroids (K, P), labels (N,)). A regime left empty keeps its previous centre, so ids never vanish
    mid-fit."""
    from jumpmodels.jump import dp, jump_penalty_to_mx

    pen = jump_penalty_to_mx(float(penalty), n)
    if init_centroids is not None:
        cent = np.array(init_centroids, dtype=np.float64)
    elif labels is not None:
        cent = centroids_of(g, labels, n)
        if huber_delta is not None:
            cent = np.stack(
                [centre_of(g[labels == k], huber_delta) if (labels == k).any() else cent[k] for k in range(n)]
            )
    else:
        raise ValueError("refine needs a partition or initial centres")
    if labels is None:
        labels = np.full(len(g), -1, dtype=np.int64)
    parts = blocks(seg, len(g))
    for _ in range(max_iter):
        loss = point_costs(g, cent, huber_delta)
        if len(parts) == 1:
            new = np.asarray(dp(loss, pen)[0], dtype=np.int64)
        else:  # one Viterbi path per segment: no switch is charged (or saved) across a boundary
            new = np.concatenate([np.asarray(dp(loss[b], pen)[0], dtype=np.int64) for b in parts])
        cent = np.stack([centre_of(g[new == k], huber_delta) if (new == k).any() else cent[k] for k in range(n)])
        if np.array_equal(new, labels):
            break
        labels = new
    return cent, labels


def bar_volatility(values: np.ndarray) -> np.ndarray:
    """(T, 5) OHLCV -> (T,) each bar's own range-based volatility: sqrt(Garman-Klass variance + squared gap from
    the previous close); bar 0 has no gap term."""
    from regimetry.features import garman_klass

    o, h, l, c = (np.log(values[:, i]) for i in range(4))
    gk = garman_klass(o, h, l, c)
    gap = np.concatenate([[0.0], o[1:] - c[:-1]])
    return np.sqrt(np.maximum(gk, 0.0) + gap**2)


def whiten(
    last_rows: np.ndarray,
    z: np.ndarray,
    space: RegimeSpace,
    cfg: ClusterConfig,
    seed: int,
    seg: np.ndarray | None = None,
) -> tuple[RegimeSpace, dict]:
    """The geometry with every column measured against its own noise.

    A preliminary fit (spectral start + jump refinement at ``cfg.penalty_start``) in the configured geometry gives
    each column's pooled within-regime standard deviation (the residuals from the regime centres; the embedding
    block's as the root-mean-square norm of its residuals). Each weight is divided by that spread, measured on the
    unweighted column, so a configured weight of 1 makes a column's within-regime noise 1: a smooth column that
    lags at every switch (log_rvol_hl30) gets less weight than one that reacts at once (log_range), and the
    costs 0.5 * squared distance are the negative log-likelihood of a unit-variance Gaussian, in nats, the units
    of the switch penalty. Training windows only; the weights are plain numbers of the RegimeSpace (the worker
    applies them as before)."""
    k = len(space.centroids)
    n_risk = len(space.risk_columns)
    base_w, base_ew = np.asarray(space.risk_weights, dtype=np.float64), float(space.embedding_weight)
    cur = space
    passes = []
    for _ in range(max(1, int(WHITEN_PASSES))):
        g0 = cur.geometry(last_rows, z)
        cent, labels = refine(
            g0, spectral_labels(g0, cfg, seed), k, cfg.penalty_start, seg=seg, huber_delta=cfg.huber_delta
        )
        resid = g0 - cent[labels]
        cur_w = np.asarray(cur.risk_weights, dtype=np.float64)
        # spreads of the unweighted columns (and of the embedding block at weight 1)
        sd = np.where(cur_w > 0, resid[:, :n_risk].std(0) / np.where(cur_w > 0, cur_w, 1.0), 0.0)
        esd = (
            float(np.sqrt((resid[:, n_risk:] ** 2).sum(1).mean())) / cur.embedding_weight
            if cur.embedding_weight > 0 and resid.shape[1] > n_risk
            else 0.0
        )
        weights = tuple(float(w / s) if s > 1e-12 else float(w) for w, s in zip(base_w.tolist(), sd.tolist()))
        ew = base_ew / esd if esd > 1e-12 else base_ew
        passes.append({"column_spread": sd.tolist(), "embedding_spread": esd})
        cur = replace(space, risk_weights=weights, embedding_weight=ew)
    info = {
        "rule": "configured weight / pooled within-regime spread of each column (embedding block: rms residual "
        f"norm), from a fit at penalty {cfg.penalty_start:g} in the geometry of the pass before",
        "passes": passes,
    }
    return replace(space, risk_weights=weights, embedding_weight=ew), info


def _validate(
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

    cent, _ = refine(g[fit], start, cfg.n_clusters, lam, seg=_sub(seg, fit), huber_delta=cfg.huber_delta)
    lab = decode(JumpDecoder(float(lam), cfg.memory), point_costs(g, cent, cfg.huber_delta), seg).argmin(1)
    val = lab[~fit]
    ok = np.isfinite(next_risk[~fit])
    eta2 = eta_squared(val[ok], next_risk[~fit][ok]) if ok.sum() > 1 else float("nan")
    row = {
        "penalty": float(lam),
        "eta2": 0.0 if np.isnan(eta2) else float(eta2),
        "dwell_fit": dwell(lab[fit], _sub(seg, fit)),
        "dwell_validation": dwell(val, _sub(seg, ~fit)),
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
        row, val = _validate(g, start, fit, float(lam), next_risk, cfg, seg)
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
            cent, _ = refine(g[fit], start, k, lam, seg=_sub(seg, fit), huber_delta=cfg.huber_delta)
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


def unbounded_labels(costs: np.ndarray, penalty: float, seg: np.ndarray | None = None) -> np.ndarray:
    """(N, K) costs -> (N,) labels of the jump model's online recursion over each whole segment (no memory
    bound): the reference the finite-memory decoder approximates."""
    out = np.empty(len(costs), dtype=np.int64)
    for b in blocks(seg, len(costs)):
        w = np.zeros(costs.shape[1])
        for t in range(b.start, b.stop):
            w = costs[t] + np.minimum(w, penalty)
            w -= w.min()
            out[t] = int(np.argmin(w))
    return out


def adequate_memory(costs: np.ndarray, penalty: float, memory: int, seg: np.ndarray | None = None) -> tuple[int, float]:
    """The decoder's memory: ``memory``, doubled (up to MAX_MEMORY) until the finite-memory decoder labels at
    least MEMORY_AGREEMENT of the training windows as the unbounded recursion does. Why: the restart ``memory``
    bars back is forgotten once every losing regime has been ``penalty`` behind, which takes longer the larger
    the penalty (a 238-nat penalty at memory 128 agreed on 98.3 % of EURUSD's windows, at 256 on all).
    Returns (memory, agreement)."""
    ref = unbounded_labels(costs, penalty, seg)
    m = int(memory)
    while True:
        agree = float(np.mean(decode(JumpDecoder(penalty, m), costs, seg).argmin(1) == ref)) if len(ref) else 1.0
        if agree >= MEMORY_AGREEMENT or m >= MAX_MEMORY:
            return m, agree
        m = min(2 * m, MAX_MEMORY)


def fit_regimes(
    raw_train: np.ndarray,
    last_rows_train: np.ndarray,
    names: tuple[str, ...],
    order_key: np.ndarray,
    next_risk: np.ndarray,
    cfg: ClusterConfig,
    seed: int,
    seg: np.ndarray | None = None,
    next_move: np.ndarray | None = None,
) -> Clustering:
    """Standardise the embeddings, build the regime geometry (whitened: ``whiten``), choose the penalty, fit
    the jump model on every training window (spectral start), renumber by ``order_key`` (calmest first), fit
    the kNN diagnostic.

    raw_train (N, D) raw encoder outputs; last_rows_train (N, F) scaled last feature rows of the same windows;
    order_key (N,) e.g. each window's own return volatility; next_risk (N,) the risk of the bars after each
    window's last bar, e.g. bar_volatility (the validation target: the search's figures, and the penalty of
    ``penalty_rule: validation_eta2``); seg (N,) each window's segment (module docstring), None for one series;
    next_move (N,) the next bar's |log return| where that bar is a training bar, else NaN (``penalty_rule:
    persistent``; None there keeps the self-consistent penalty)."""
    mean, std = fit_geometry(raw_train)
    z = ((raw_train - mean) / std).astype(np.float32)
    cols, weights = risk_columns(names, cfg)
    k = cfg.n_clusters
    space = RegimeSpace(
        cols, weights, cfg.embedding_weight, np.zeros((k, len(cols) + z.shape[1])), huber_delta=cfg.huber_delta
    )
    whitening = None
    if cfg.whiten:
        space, whitening = whiten(last_rows_train, z, space, cfg, seed, seg)
        cols, weights = space.risk_columns, space.risk_weights
    g = space.geometry(last_rows_train, z)
    start = spectral_labels(g, cfg, seed)
    if cfg.penalty is not None:
        penalty, selection = float(cfg.penalty), {"rule": "fixed by configuration", "chosen": float(cfg.penalty)}
    elif cfg.penalty_rule == "validation_eta2":
        penalty, selection = choose_penalty(g, next_risk, order_key, cfg, seed, seg)
    else:
        penalty, selection = self_consistent_penalty(g, start, cfg, seg)
        if cfg.penalty_rule == "persistent" and next_move is not None:
            history = selection["candidates"]
            penalty, selection = persistent_penalty(g, penalty, np.asarray(next_move), order_key, cfg, seed, seg)
            selection["self_consistent_history"] = history
    if whitening is not None:
        selection["whitening"] = whitening
    if "_validation_labels" not in selection and np.isfinite(next_risk).any():
        # the search's training-only figures for the chosen penalty (what validation_eta2 computes per candidate)
        fit = fit_mask(seg, len(g), cfg.validation)
        if np.isfinite(next_risk[~fit]).any():
            vstart = order_by(spectral_labels(g[fit], cfg, seed), order_key[fit], k)
            row, val = _validate(g, vstart, fit, penalty, next_risk, cfg, seg)
            selection.update({"validation_windows": int((~fit).sum()), "_validation_row": row})
            selection.update({"_validation_labels": val, "_cut": fit})
    # a regime the fit left empty keeps its last centre
    cent, labels = refine(g, start, k, penalty, seg=seg, huber_delta=cfg.huber_delta)
    memory, agreement = adequate_memory(point_costs(g, cent, cfg.huber_delta), penalty, cfg.memory, seg)
    selection["memory"] = {"memory": memory, "agreement_with_unbounded": agreement}
    # number the ids by the volatility of the windows each regime is *served* on (the causal decoder's labels,
    # which lag the offline fit's), so id 0 is the calmest regime as subscribers see it
    decoded = decode(JumpDecoder(penalty, memory), point_costs(g, cent, cfg.huber_delta), seg).argmin(1)
    means = np.array([order_key[decoded == i].mean() if (decoded == i).any() else np.inf for i in range(k)])
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(means, kind="stable")] = np.arange(k)
    labels, cent = rank[labels], cent[np.argsort(rank)]
    space = replace(space, centroids=cent)
    if "_validation_labels" in selection:  # what the search ranks by: all on training windows only
        from trainer.regime_scores import refit_agreement

        popped: Any = (selection.pop("_validation_labels"), selection.pop("_cut"), selection.pop("_validation_row"))
        val, cut, row = popped
        final = rank[decoded][~cut]
        selection["validation"] = {
            "eta2_coming_risk": row["eta2"],
            "dwell_fit": row["dwell_fit"],
            "dwell_validation": row["dwell_validation"],
            "dwell_ratio": row["dwell_validation"] / row["dwell_fit"] if row["dwell_fit"] else None,
            # the regimes of a fit that never saw the validation windows vs the final fit's, Hungarian-matched:
            # a refit's stability, measured inside the training bars
            "refit_stability": refit_agreement(val, final),
        }
    keep = subsample(len(z), cfg.max_reference)
    clf = KNNClassifier(z[keep], labels[keep], k, cfg.knn_k)
    return Clustering(mean, std, labels, cent, clf, space, JumpDecoder(penalty, memory), selection)


def fit_anchored(
    raw_train: np.ndarray,
    last_rows_train: np.ndarray,
    order_key: np.ndarray,
    warm,
    cfg: ClusterConfig,
    seg: np.ndarray | None = None,
) -> Clustering:
    """A warm-started refit's regimes (trainer/warm_start.py): the previous embedding standardisation and
    geometry, the jump model refined from the previous centres with the previous penalty, ids kept. Records
    in ``selection`` whether the ids are still ordered by ``order_key`` (volatility)."""
    z = ((raw_train - warm.emb_mean) / warm.emb_std).astype(np.float32)
    g = warm.space.geometry(last_rows_train, z)
    k = len(warm.space.centroids)
    delta = warm.space.huber_delta  # the previous model's cost, whatever cfg says: ids and geometry are kept
    cent, labels = refine(g, None, k, warm.penalty, init_centroids=warm.space.centroids, seg=seg, huber_delta=delta)
    costs = point_costs(g, cent, delta)
    memory, agreement = adequate_memory(costs, warm.penalty, max(cfg.memory, warm.memory or cfg.memory), seg)
    served = decode(JumpDecoder(warm.penalty, memory), costs, seg).argmin(1)
    means = np.array([order_key[served == i].mean() if (served == i).any() else np.nan for i in range(k)])
    ordered = bool(np.all(np.diff(means[np.isfinite(means)]) >= 0))
    space = replace(warm.space, centroids=cent)
    keep = subsample(len(z), cfg.max_reference)
    clf = KNNClassifier(z[keep], labels[keep], k, cfg.knn_k)
    selection = {
        "rule": f"anchored refit: penalty and regime ids of {warm.source}",
        "chosen": warm.penalty,
        "warm_start": warm.source,
        "ids_ordered_by_volatility": ordered,
        "volatility_by_id": [None if not np.isfinite(v) else float(v) for v in means],
        "memory": {"memory": memory, "agreement_with_unbounded": agreement},
    }
    return Clustering(
        warm.emb_mean, warm.emb_std, labels, cent, clf, space, JumpDecoder(warm.penalty, memory), selection
    )
