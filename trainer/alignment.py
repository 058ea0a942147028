"""Keeping regime ids meaningful across refits: match a new clustering's ids onto the previous model's.

Spectral clustering numbers its clusters arbitrarily, and even the volatility ordering of trainer/clustering.py
can swap two regimes of similar volatility after a refit. Strategies subscribe to "regime 2", so a refit must
renumber its regimes to mean what they meant before. Two ways, both solved as an assignment problem with
scipy.optimize.linear_sum_assignment (the Hungarian method):

- window labels (preferred): the previous bundle labels the new data's windows too; pick the renumbering that
  maximises the number of windows on which old and new ids agree. The agreement rate is the evidence that the
  renumbered regimes mean the same thing.
- profile centroids (fallback, when the previous bundle cannot label the data): two independently trained
  encoders do not share an embedding space, so their centroids cannot be compared; what both models share is
  the bars. Each regime is summarised by the (mean log return, volatility) of its bars, standardised, and the
  renumbering minimises the total Euclidean distance between old and new summaries. No agreement rate exists.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from regimetry.classify import KNNClassifier
from trainer.clustering import Clustering


def contingency(new: np.ndarray, previous: np.ndarray, n: int) -> np.ndarray:
    """C[i, j] = number of windows labelled i by the new model and j by the previous one."""
    c = np.zeros((n, n), dtype=np.int64)
    np.add.at(c, (np.asarray(new, np.int64), np.asarray(previous, np.int64)), 1)
    return c


def match_labels(new: np.ndarray, previous: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """(perm, agreement): perm[new id] = previous id maximising sum_i C[i, perm[i]], and the share of windows
    on which perm[new] == previous."""
    if len(new) == 0:
        raise ValueError("no windows labelled by both models: cannot align on labels")
    c = contingency(new, previous, n)
    rows, cols = linear_sum_assignment(c, maximize=True)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    return perm, float(c[rows, cols].sum() / len(new))


def match_centroids(new: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """perm[new id] = previous id minimising the summed Euclidean distance between matched centroids
    (both (K, D) in one shared space)."""
    new, previous = np.asarray(new, np.float64), np.asarray(previous, np.float64)
    cost = np.sqrt(((new[:, None, :] - previous[None, :, :]) ** 2).sum(-1))
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(new), dtype=np.int64)
    perm[rows] = cols
    return perm


def profile_centroids(profiles: list[dict]) -> np.ndarray:
    """(K, 2) [mean_return, volatility] per regime from manifest-style regime profiles, in id order."""
    ordered = sorted(profiles, key=lambda p: p["id"])
    return np.array([[p["mean_return"], p["volatility"]] for p in ordered], dtype=np.float64)


def standardise_together(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each column by the pooled std of both sets, so return and volatility weigh alike."""
    both = np.concatenate([a, b])
    mean, std = both.mean(0), both.std(0)
    std = np.where(std > 0, std, 1.0)
    return (a - mean) / std, (b - mean) / std


def permute_clustering(cl: Clustering, perm: np.ndarray) -> Clustering:
    """The same clustering with regime id i renamed perm[i]: labels, centroid order and classifier labels."""
    perm = np.asarray(perm, dtype=np.int64)
    centroids = np.empty_like(cl.centroids)
    centroids[perm] = cl.centroids
    clf = cl.classifier
    space = None
    if cl.space is not None:
        from dataclasses import replace

        space = replace(cl.space, centroids=centroids)
    return Clustering(
        cl.emb_mean,
        cl.emb_std,
        perm[cl.train_labels],
        centroids,
        KNNClassifier(clf.reference, perm[clf.labels], clf.n_classes, clf.k),
        space,
        cl.decoder,
        cl.selection,
    )
