"""Regimes from embeddings: the regime geometry, the jump model fitted in it, and a refit anchored to a model.

Spectral clustering is transductive (a window's label depends on every other window, future ones included),
so its labels are only the *starting partition*. They are refined by the statistical jump model's coordinate
descent (trainer/jump_fit.py) in the regime geometry of regimetry/regimes.py, and the regime of any window, in
training reports and live alike, is what the causal jump decoder says from that window's and its predecessors'
costs: causal, and exactly reproducible by the worker. The geometry is whitened (``whiten``: every column in units
of its within-regime spread) and the switch penalty is chosen by one of the rules of trainer/penalty.py, all on
the training bars only, never on held-out bars.

The nearest-neighbour classifier of the first build is still fitted and exported (its vote shares are a
diagnostic: agreement with the spectral targets), but no served regime comes from it.

A universe's training windows are several series laid end to end (trainer/windows.py): ``seg`` (N,) gives each
window's segment, in contiguous blocks; trainer/jump_fit.py runs every sequential step block by block.
``seg=None`` is one series.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from regimetry.classify import KNNClassifier
from regimetry.regimes import JumpDecoder, RegimeSpace, point_costs
from trainer.config import ClusterConfig
from trainer.jump_fit import adequate_memory, decode, fit_mask, order_by, refine, spectral_labels
from trainer.penalty import choose_penalty, persistent_penalty, self_consistent_penalty, validate_penalty

WHITEN_PASSES = 2  # fits behind the spreads: the first in the configured weights, then in the whitened ones


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
            row, val = validate_penalty(g, vstart, fit, penalty, next_risk, cfg, seg)
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
    geometry, the jump model refined from the previous centres with the previous penalty, each centre shrunk toward
    the previous one by ``cfg.anchor_strength`` (jump_fit.shrink), ids kept. Records
    in ``selection`` whether the ids are still ordered by ``order_key`` (volatility)."""
    z = ((raw_train - warm.emb_mean) / warm.emb_std).astype(np.float32)
    g = warm.space.geometry(last_rows_train, z)
    k = len(warm.space.centroids)
    delta = warm.space.huber_delta  # the previous model's cost, whatever cfg says: ids and geometry are kept
    previous = np.asarray(warm.space.centroids, dtype=np.float64)
    # the windows the model in force serves in each regime on these bars: the prior's weight, so a refit moves a
    # centre only as far as the new fit outweighs the old one (without it, the centres of a daily index drifted
    # 0.7 whitened units over the refinement's iterations and 10 % of its bars changed regime: docs/research.md)
    weight: np.ndarray = np.zeros(k)
    anchor = None
    if cfg.anchor_strength > 0:
        before = decode(JumpDecoder(warm.penalty, warm.memory or cfg.memory), point_costs(g, previous, delta), seg)
        weight = float(cfg.anchor_strength) * np.bincount(before.argmin(1), minlength=k)
        anchor = (previous, weight)
    cent, labels = refine(g, None, k, warm.penalty, init_centroids=previous, seg=seg, huber_delta=delta, anchor=anchor)
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
        "anchor_strength": float(cfg.anchor_strength),
        "anchor_windows": weight.tolist(),
        "ids_ordered_by_volatility": ordered,
        "volatility_by_id": [None if not np.isfinite(v) else float(v) for v in means],
        "memory": {"memory": memory, "agreement_with_unbounded": agreement},
    }
    return Clustering(
        warm.emb_mean, warm.emb_std, labels, cent, clf, space, JumpDecoder(warm.penalty, memory), selection
    )
