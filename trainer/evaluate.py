"""Training-only scoring: recovery of planted regimes, beside a Gaussian HMM baseline.

The HMM is reported twice. Its Viterbi path uses the whole series (future bars included), which no live
system can do; its forward-filtered state at bar t uses bars up to t only, the same information the worker
has. Our regimes are causal, so the filtered figure is the like-for-like comparison.
"""

from __future__ import annotations

import numpy as np


def forward_filter(hmm, x: np.ndarray) -> np.ndarray:
    """argmax_k P(state_t = k | x_1..x_t) by the normalised forward recursion."""
    from scipy.special import logsumexp

    log_b = hmm._compute_log_likelihood(x)
    log_a = np.log(np.maximum(hmm.transmat_, 1e-300))
    alpha = np.log(np.maximum(hmm.startprob_, 1e-300)) + log_b[0]
    out = np.empty(len(x), dtype=np.int64)
    out[0] = alpha.argmax()
    for t in range(1, len(x)):
        alpha = logsumexp(alpha[:, None] + log_a, axis=0) + log_b[t]
        alpha -= logsumexp(alpha)
        out[t] = alpha.argmax()
    return out


def planted_recovery(
    found: np.ndarray,
    planted: np.ndarray,
    hmm_features: np.ndarray,
    n_states: int,
    seed: int,
    fit_rows: int | None = None,
) -> dict:
    """Adjusted Rand index of the regimes found vs the planted ones, beside a Gaussian HMM on the same bars.

    The HMM is fitted on the first ``fit_rows`` rows (the training part) and decoded on all of them.
    """
    from sklearn.metrics import adjusted_rand_score

    out: dict[str, object] = {"ari_regimetry": float(adjusted_rand_score(planted, found))}
    try:
        from hmmlearn.hmm import GaussianHMM
    except ImportError:  # pragma: no cover
        return {**out, "ari_hmm": None, "ari_hmm_filtered": None, "hmm_note": "hmmlearn not installed"}
    hmm = None
    for cov in ("full", "diag"):  # a degenerate full covariance must not fail a training run over a baseline
        try:
            hmm = GaussianHMM(n_components=n_states, covariance_type=cov, n_iter=100, random_state=seed)
            hmm.fit(hmm_features[:fit_rows])
            viterbi = hmm.predict(hmm_features)  # also the check that the fitted model is usable
            break
        except (ValueError, np.linalg.LinAlgError) as exc:
            hmm, failure = None, f"{cov} covariance: {exc}"
    if hmm is None:
        return {**out, "ari_hmm": None, "ari_hmm_filtered": None, "hmm_note": f"Gaussian HMM failed to fit ({failure})"}
    out["hmm_covariance"] = hmm.covariance_type
    out["ari_hmm"] = float(adjusted_rand_score(planted, viterbi))
    out["ari_hmm_filtered"] = float(adjusted_rand_score(planted, forward_filter(hmm, hmm_features)))
    out["hmm_note"] = (
        "GaussianHMM (hmmlearn) on each bar's log return, log range and log volume, fitted on the "
        "training bars; ari_hmm = Viterbi path (uses future bars), ari_hmm_filtered = forward "
        "filter (causal, like regimetry)"
    )
    return out
