"""Training-only scoring: recovery of planted regimes against a Gaussian HMM baseline."""

from __future__ import annotations

import numpy as np


def planted_recovery(found: np.ndarray, planted: np.ndarray, hmm_features: np.ndarray, n_states: int,
                     seed: int) -> dict:
    """Adjusted Rand index of the regimes found vs the planted ones, beside a Gaussian HMM on the same bars."""
    from sklearn.metrics import adjusted_rand_score

    out = {"ari_regimetry": float(adjusted_rand_score(planted, found))}
    try:
        from hmmlearn.hmm import GaussianHMM

        hmm = GaussianHMM(n_components=n_states, covariance_type="full", n_iter=100, random_state=seed)
        hmm.fit(hmm_features)
        out["ari_hmm"] = float(adjusted_rand_score(planted, hmm.predict(hmm_features)))
        out["hmm_note"] = "GaussianHMM (hmmlearn) on the same bars' log return, range and volume z-score; Viterbi path"
    except ImportError:  # pragma: no cover
        out["ari_hmm"] = None
        out["hmm_note"] = "hmmlearn not installed"
    return out
