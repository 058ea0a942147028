"""Regimes from embeddings: spectral clustering on the training windows, refined into a jump model, decoded
causally.

Spectral clustering is transductive (a window's label depends on every other window, future ones included),
so its labels are only the *starting partition*. They are refined by the statistical jump model's coordinate
descent (centres = means of their windows; labels = the penalised Viterbi path, jumpmodels.jump.dp) in the
regime geometry of regimetry/regimes.py, and the regime of any window, in training reports and live alike, is
what the causal jump decoder says from that window's and its predecessors' costs: causal, and exactly
reproducible by the worker. The switch penalty is chosen on the training bars only (time-series validation:
fit on the first part of the training windows, decode the rest), never on held-out bars.

The nearest-neighbour classifier of the first build is still fitted and exported (its vote shares are a
diagnostic: agreement with the spectral targets), but no served regime comes from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regimetry.classify import KNNClassifier
from regimetry.diagnostics import mean_duration
from regimetry.regimes import JumpDecoder, RegimeSpace, sq_distances
from trainer.config import ClusterConfig


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
    return tuple(cols), tuple(weights)


def refine(
    g: np.ndarray,
    labels: np.ndarray | None,
    n: int,
    penalty: float,
    max_iter: int = 20,
    init_centroids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Statistical jump model fit started from a partition: alternate centres (means) and the penalised
    Viterbi path (jumpmodels.jump.dp) until the labels stop changing. Returns (centroids (K, P), labels (N,)).
    A regime left empty keeps its previous centre, so ids never vanish mid-fit."""
    from jumpmodels.jump import dp, jump_penalty_to_mx

    pen = jump_penalty_to_mx(float(penalty), n)
    if init_centroids is not None:
        cent = np.array(init_centroids, dtype=np.float64)
    elif labels is not None:
        cent = centroids_of(g, labels, n)
    else:
        raise ValueError("refine needs a partition or initial centres")
    if labels is None:
        labels = np.full(len(g), -1, dtype=np.int64)
    for _ in range(max_iter):
        new, _ = dp(0.5 * sq_distances(g, cent), pen)
        new = np.asarray(new, dtype=np.int64)
        cent = np.stack([g[new == k].mean(0) if (new == k).any() else cent[k] for k in range(n)])
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


def choose_penalty(
    g: np.ndarray, next_risk: np.ndarray, order_key: np.ndarray, cfg: ClusterConfig, seed: int
) -> tuple[float, dict]:
    """The switch penalty, chosen on training windows only.

    Fit (spectral start + jump refinement) on the first ``1 - cfg.validation`` share of the training windows,
    decode the rest causally with each candidate penalty, and score the share of the variance of the coming
    risk (``next_risk``, e.g. the mean range-based volatility of the next bars; NaN where unknown) explained by
    the regimes (eta squared) and the mean dwell there. Rule: among candidates whose validation eta squared is
    within ``cfg.penalty_tolerance`` (relative) of the best, take the largest penalty: as informative as the
    best, and as persistent as that allows."""
    n = len(g)
    cut = int(round(n * (1.0 - cfg.validation)))
    k = cfg.n_clusters
    if not np.isfinite(next_risk[cut:]).any():
        raise ValueError(
            f"cannot choose the switch penalty: none of the {n - cut} validation windows has a "
            f"known coming risk (too few training bars); set clustering.penalty explicitly"
        )
    start = order_by(spectral_labels(g[:cut], cfg, seed), order_key[:cut], k)
    from trainer.regime_scores import eta_squared

    rows, labels_of = [], {}
    for lam in cfg.penalties:
        cent, fit_labels = refine(g[:cut], start, k, lam)
        dec = JumpDecoder(float(lam), cfg.memory)
        lab = dec.decode_series(0.5 * sq_distances(g, cent)).argmin(1)
        val = lab[cut:]
        labels_of[float(lam)] = val
        eta2 = eta_squared(val, next_risk[cut:])  # NaN (no variance to explain) counts as 0
        rows.append(
            {
                "penalty": float(lam),
                "eta2": 0.0 if np.isnan(eta2) else eta2,
                "dwell_fit": mean_duration(lab[:cut]),
                "dwell_validation": mean_duration(val),
            }
        )
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
        "validation_windows": int(n - cut),
        "candidates": rows,
        "chosen": chosen["penalty"],
        "_validation_labels": labels_of[chosen["penalty"]],
        "_cut": cut,
    }


def fit_regimes(
    raw_train: np.ndarray,
    last_rows_train: np.ndarray,
    names: tuple[str, ...],
    order_key: np.ndarray,
    next_risk: np.ndarray,
    cfg: ClusterConfig,
    seed: int,
) -> Clustering:
    """Standardise the embeddings, build the regime geometry, choose the penalty, fit the jump model on every
    training window (spectral start), renumber by ``order_key`` (calmest first), fit the kNN diagnostic.

    raw_train (N, D) raw encoder outputs; last_rows_train (N, F) scaled last feature rows of the same windows;
    order_key (N,) e.g. each window's own return volatility; next_risk (N,) the risk of the bar after each
    window's last bar, e.g. bar_volatility (the penalty's validation target)."""
    mean, std = fit_geometry(raw_train)
    z = ((raw_train - mean) / std).astype(np.float32)
    cols, weights = risk_columns(names, cfg)
    space = RegimeSpace(cols, weights, cfg.embedding_weight, np.zeros((cfg.n_clusters, len(cols) + z.shape[1])))
    g = space.geometry(last_rows_train, z)
    k = cfg.n_clusters
    if cfg.penalty is None:
        penalty, selection = choose_penalty(g, next_risk, order_key, cfg, seed)
    else:
        penalty, selection = float(cfg.penalty), {"rule": "fixed by configuration", "chosen": float(cfg.penalty)}
    start = spectral_labels(g, cfg, seed)
    cent, labels = refine(g, start, k, penalty)  # a regime the fit left empty keeps its last centre
    # number the ids by the volatility of the windows each regime is *served* on (the causal decoder's labels,
    # which lag the offline fit's), so id 0 is the calmest regime as subscribers see it
    decoded = JumpDecoder(penalty, cfg.memory).decode_series(0.5 * sq_distances(g, cent)).argmin(1)
    means = np.array([order_key[decoded == i].mean() if (decoded == i).any() else np.inf for i in range(k)])
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(means, kind="stable")] = np.arange(k)
    labels, cent = rank[labels], cent[np.argsort(rank)]
    space = RegimeSpace(cols, weights, cfg.embedding_weight, cent)
    if "_validation_labels" in selection:  # what the search ranks by: all on training windows only
        from trainer.regime_scores import refit_agreement

        val, cut = selection.pop("_validation_labels"), selection.pop("_cut")
        final = rank[decoded][cut:]
        row = next(r for r in selection["candidates"] if r["penalty"] == penalty)
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
    return Clustering(mean, std, labels, cent, clf, space, JumpDecoder(penalty, cfg.memory), selection)


def fit_anchored(
    raw_train: np.ndarray, last_rows_train: np.ndarray, order_key: np.ndarray, warm, cfg: ClusterConfig
) -> Clustering:
    """A warm-started refit's regimes (trainer/warm_start.py): the previous embedding standardisation and
    geometry, the jump model refined from the previous centres with the previous penalty, ids kept. Records
    in ``selection`` whether the ids are still ordered by ``order_key`` (volatility)."""
    z = ((raw_train - warm.emb_mean) / warm.emb_std).astype(np.float32)
    g = warm.space.geometry(last_rows_train, z)
    k = len(warm.space.centroids)
    cent, labels = refine(g, None, k, warm.penalty, init_centroids=warm.space.centroids)
    served = JumpDecoder(warm.penalty, cfg.memory).decode_series(0.5 * sq_distances(g, cent)).argmin(1)
    means = np.array([order_key[served == i].mean() if (served == i).any() else np.nan for i in range(k)])
    ordered = bool(np.all(np.diff(means[np.isfinite(means)]) >= 0))
    space = RegimeSpace(warm.space.risk_columns, warm.space.risk_weights, warm.space.embedding_weight, cent)
    keep = subsample(len(z), cfg.max_reference)
    clf = KNNClassifier(z[keep], labels[keep], k, cfg.knn_k)
    selection = {
        "rule": f"anchored refit: penalty and regime ids of {warm.source}",
        "chosen": warm.penalty,
        "warm_start": warm.source,
        "ids_ordered_by_volatility": ordered,
        "volatility_by_id": [None if not np.isfinite(v) else float(v) for v in means],
    }
    return Clustering(
        warm.emb_mean, warm.emb_std, labels, cent, clf, space, JumpDecoder(warm.penalty, cfg.memory), selection
    )
