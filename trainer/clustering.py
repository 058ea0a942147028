"""Regimes from embeddings: spectral clustering on the training windows, then a causal classifier.

Spectral clustering is transductive (a window's label depends on every other window, future ones included),
so its labels are only the *targets*. The regime of any window, in training reports and live alike, is what
the nearest-neighbour classifier says about that window's own embedding: causal, and exactly reproducible
by the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regimetry.classify import KNNClassifier
from trainer.config import ClusterConfig


@dataclass
class Clustering:
    emb_mean: np.ndarray       # embedding standardisation fitted on training embeddings
    emb_std: np.ndarray
    train_labels: np.ndarray   # spectral labels of the training windows (renumbered)
    centroids: np.ndarray      # (K, D) in the standardised geometry
    classifier: KNNClassifier


def fit_geometry(raw_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = raw_train.mean(0).astype(np.float64)
    std = raw_train.std(0).astype(np.float64)
    return mean, np.where(std > 1e-8, std, 1.0)


def spectral_labels(z: np.ndarray, cfg: ClusterConfig, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(n_clusters=cfg.n_clusters, affinity="nearest_neighbors",
                               n_neighbors=min(cfg.n_neighbors, len(z) - 1), assign_labels="cluster_qr",
                               random_state=seed)
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


def fit_clustering(raw_train: np.ndarray, order_key: np.ndarray, cfg: ClusterConfig, seed: int) -> Clustering:
    """Standardise, cluster, renumber by ``order_key`` (per training window), fit the kNN classifier."""
    mean, std = fit_geometry(raw_train)
    z = ((raw_train - mean) / std).astype(np.float32)
    labels = order_by(spectral_labels(z, cfg, seed), order_key, cfg.n_clusters)
    keep = subsample(len(z), cfg.max_reference)
    clf = KNNClassifier(z[keep], labels[keep], cfg.n_clusters, cfg.knn_k)
    return Clustering(mean, std, labels, centroids_of(z, labels, cfg.n_clusters), clf)
