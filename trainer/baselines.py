"""The regime finders the project's regimes are benchmarked against (benchmarks/bench_regimes.py).

Each baseline is fitted on training bars only, bars [fit_start, fit_end) of a (T, 5) open/high/low/close/volume
array, and then labels every bar causally: the label of bar t depends on bars <= t only (and on the fit, which
saw training bars only). Bars a baseline cannot label yet (its warm-up) get -1.

- ``hmm_filtered``: Gaussian HMM (hmmlearn), forward-filtered (trainer/evaluate.py::forward_filter).
- ``jump_model_online``: the statistical jump model of the ``jumpmodels`` package, decoded online, on the
  features of the jump-model papers (Nystrup et al.; Shu, Yu & Mulvey), its jump penalty chosen by
  time-series cross-validation on the training bars.
- ``trailing_vol``: the yardstick, quantile bins of the trailing volatility.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

JUMP_PENALTIES = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
JUMP_HALFLIVES = (5, 20, 60)
JUMP_CV_FIT_SHARE = 0.7  # fit on the first 70 % of the training bars, validate on the last 30 %
JUMP_CV_TOLERANCE = 0.05  # the largest penalty whose validation score is within 5 % of the best
FEATURE_CLIP = 3.0  # standardised jump-model features are clipped to +-3 training deviations
UNLABELLED = -1
JUMP_PENALTY_RULE = (
    f"time-series CV on the training bars only: for each penalty fit on the first "
    f"{JUMP_CV_FIT_SHARE:.0%} of the training bars, label all training bars with predict_online, "
    f"score the last {1 - JUMP_CV_FIT_SHARE:.0%} by eta^2 of next-bar |log return| (label at t vs "
    f"|r_(t+1)|, t+1 a training bar); take the LARGEST penalty whose score is within "
    f"{JUMP_CV_TOLERANCE:.0%} of the best (>= best - {JUMP_CV_TOLERANCE} |best|); refit on all "
    f"training bars"
)
HMM_RESTARTS = 5  # EM starts of the Gaussian HMM; the best training log-likelihood wins


@dataclass
class BaselineLabels:
    labels: np.ndarray  # (T,) int64, causal label of every bar, -1 during warm-up
    info: dict = field(default_factory=dict)


def log_returns(values: np.ndarray) -> np.ndarray:
    """(T,) log close-to-close return of each bar; bar 0 has none and gets 0."""
    close = np.log(np.asarray(values, dtype=np.float64)[:, 3])
    return np.concatenate([[0.0], np.diff(close)])


# -- Gaussian HMM, forward-filtered ---------------------------------------------------------------------------


def hmm_features(values: np.ndarray, use_volume: bool, fit_start: int = 1, fit_end: int | None = None) -> np.ndarray:
    """(T, 2 or 3) per bar: log return, log of the log(high/low) range, and log1p(volume) if use_volume.

    The range is floored at the 1st percentile of the positive ranges of the training bars [fit_start, fit_end):
    a bar with high == low (EURUSD has two) would otherwise sit ~7 log units below the rest, and EM gives such
    outliers a state of their own. Row 0 has no return; callers start at row 1.
    """
    v = np.asarray(values, dtype=np.float64)
    rng_ = np.log(v[:, 1] / v[:, 2])
    fit = rng_[fit_start:fit_end]
    floor = float(np.quantile(fit[fit > 0], 0.01)) if np.any(fit > 0) else 1e-6
    cols = [log_returns(v), np.log(np.maximum(rng_, floor))]
    if use_volume:
        cols.append(np.log1p(v[:, 4]))
    return np.stack(cols, 1)


def hmm_filtered(
    values: np.ndarray,
    fit_end: int,
    n_states: int,
    seed: int,
    use_volume: bool,
    fit_start: int = 1,
    n_iter: int = 100,
    n_init: int = HMM_RESTARTS,
) -> BaselineLabels:
    """GaussianHMM(n_states, 'full' covariance, falling back to 'diag' if no full fit works) fitted by EM on bars
    [fit_start, fit_end); label of bar t = argmax_k P(state_t = k | x_1..x_t) (forward filter), bars >= 1.

    EM from one start can stop in a poor local optimum within a few iterations (seen on the two-state
    volatility scenario), so it is started ``n_init`` times (random_state seed, seed+1, ...) and the fit with
    the highest training log-likelihood is kept. If neither covariance type fits, every label is -1 and
    info["error"] says why.
    """
    from hmmlearn.hmm import GaussianHMM

    from trainer.evaluate import forward_filter

    fit_start = max(1, fit_start)
    x = hmm_features(values, use_volume, fit_start, fit_end)
    labels = np.full(len(x), UNLABELLED, dtype=np.int64)
    failures = []
    for cov in ("full", "diag"):
        best, best_ll, lls = None, -np.inf, []
        for i in range(n_init):
            try:
                hmm = GaussianHMM(n_components=n_states, covariance_type=cov, n_iter=n_iter, random_state=seed + i)
                hmm.fit(x[fit_start:fit_end])
                ll = float(hmm.score(x[fit_start:fit_end]))
                if not (np.isfinite(ll) and np.all(np.isfinite(hmm.transmat_))):
                    raise ValueError("non-finite log-likelihood or transition matrix")
            except (ValueError, np.linalg.LinAlgError) as exc:
                failures.append(f"{cov} start {i}: {exc}")
                continue
            lls.append(ll)
            if ll > best_ll:
                best, best_ll = hmm, ll
        if best is None:
            continue
        labels[1:] = forward_filter(best, x[1:])
        return BaselineLabels(
            labels,
            {
                "covariance": cov,
                "converged": bool(best.monitor_.converged),
                "n_iter": int(best.monitor_.iter),
                "use_volume": bool(use_volume),
                "restarts": n_init,
                "train_log_likelihoods": lls,
                "failures": failures,
            },
        )
    return BaselineLabels(
        labels,
        {
            "covariance": None,
            "use_volume": bool(use_volume),
            "failures": failures,
            "error": "GaussianHMM failed to fit: " + "; ".join(failures[-2:]),
        },
    )


# -- statistical jump model, online -------------------------------------------------------------------------


def _ewm_mean(x: np.ndarray, halflife: float) -> np.ndarray:
    """Causal exponentially weighted mean with weights decay^i, decay = 0.5^(1/halflife), normalised by the
    weights actually present (pandas' adjust=True): m_t = sum_i w^i x_{t-i} / sum_i w^i."""
    from scipy.signal import lfilter

    a = 0.5 ** (1.0 / halflife)
    x = np.asarray(x, dtype=np.float64)
    num = lfilter([1.0], [1.0, -a], x)  # num_t = a num_{t-1} + x_t
    den = lfilter([1.0], [1.0, -a], np.ones_like(x))  # den_t = a den_{t-1} + 1
    return num / den


def jump_features(values: np.ndarray, halflives: tuple[int, ...] = JUMP_HALFLIVES) -> np.ndarray:
    """(T, 3 * len(halflives)) per bar, each causal: for every halflife h, with r the log return,
    DD_h = sqrt(ewm_h(min(r, 0)^2)) the downside deviation, the columns log(DD_h + 1e-12),
    ewm_h(r) / (DD_h + 1e-12) (a Sortino-like ratio) and ewm_h(r) (the mean return). Meaningful once about
    max(halflives) bars have passed."""
    r = log_returns(values)[1:]
    cols = []
    for h in halflives:
        dd = np.sqrt(_ewm_mean(np.minimum(r, 0.0) ** 2, h))
        mean = _ewm_mean(r, h)
        cols += [np.log(dd + 1e-12), mean / (dd + 1e-12), mean]
    feats = np.stack(cols, 1)
    return np.concatenate([np.full((1, feats.shape[1]), np.nan), feats])  # bar 0 has no return


def _standardise(x: np.ndarray, rows: slice) -> tuple[np.ndarray, dict]:
    """Clip at mean +- FEATURE_CLIP sd of the training rows, then z-score with the clipped training rows' stats."""
    mu, sd = x[rows].mean(0), x[rows].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    clipped = np.clip(x, mu - FEATURE_CLIP * sd, mu + FEATURE_CLIP * sd)
    mu2, sd2 = clipped[rows].mean(0), clipped[rows].std(0)
    sd2 = np.where(sd2 > 0, sd2, 1.0)
    return (clipped - mu2) / sd2, {"clip_sd": FEATURE_CLIP}


def _jump_fit(x_fit: np.ndarray, n_states: int, penalty: float, seed: int):
    from jumpmodels.jump import JumpModel

    return JumpModel(n_components=n_states, jump_penalty=float(penalty), random_state=seed).fit(x_fit)


def jump_model_online(
    values: np.ndarray,
    fit_end: int,
    n_states: int,
    seed: int,
    penalties: tuple[float, ...] = JUMP_PENALTIES,
    fit_start: int | None = None,
    halflives: tuple[int, ...] = JUMP_HALFLIVES,
) -> BaselineLabels:
    """Statistical jump model (jumpmodels.jump.JumpModel) on jump_features, online labels from bar fit_start on.

    Training bars: [fit_start, fit_end), fit_start defaulting to max(halflives) (the features' warm-up).
    Features are clipped and standardised with training statistics (_standardise).

    Jump penalty, chosen on training bars only by time-series cross-validation: for each penalty in
    ``penalties`` fit on the first JUMP_CV_FIT_SHARE (70 %) of the training bars, label all training bars with
    predict_online, and score the last 30 % by eta^2 of next-bar |log return| (labels at bar t vs |r_{t+1}|,
    t+1 still a training bar). The rule: the LARGEST penalty whose score is >= best - JUMP_CV_TOLERANCE * |best|
    (within 5 % of the best; persistence wins near-ties). Then refit on all training bars with that penalty
    and label every bar from fit_start on with predict_online (causal: row t uses rows <= t only).
    """
    from trainer.regime_scores import next_abs_return_eta2, next_returns

    fit_start = max(halflives) if fit_start is None else max(1, fit_start)
    feats = jump_features(values, halflives)
    x, scale_info = _standardise(feats[fit_start:], slice(0, fit_end - fit_start))
    n_fit = fit_end - fit_start
    if n_fit < 10 * n_states:
        raise ValueError(f"jump model: only {n_fit} training bars for {n_states} states")
    r = log_returns(values)
    n_cv = int(round(n_fit * JUMP_CV_FIT_SHARE))
    val_bars = np.arange(fit_start + n_cv, fit_end - 1)  # t with t+1 < fit_end
    scores = {}
    for lam in penalties:
        jm = _jump_fit(x[:n_cv], n_states, lam, seed)
        lab = np.asarray(jm.predict_online(x[:n_fit]))
        scores[float(lam)] = next_abs_return_eta2(lab[val_bars - fit_start], next_returns(r, val_bars))
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    if finite:
        best = max(finite.values())
        chosen = max(k for k, v in finite.items() if v >= best - JUMP_CV_TOLERANCE * abs(best))
    else:
        chosen = float(max(penalties))
    jm = _jump_fit(x[:n_fit], n_states, chosen, seed)
    labels = np.full(len(values), UNLABELLED, dtype=np.int64)
    labels[fit_start:] = np.asarray(jm.predict_online(x))
    return BaselineLabels(
        labels,
        {
            "jump_penalty": chosen,
            "cv_scores": {str(k): v for k, v in scores.items()},
            "rule": JUMP_PENALTY_RULE,
            "features": [f"{name}_hl{h}" for h in halflives for name in ("log_downside_dev", "sortino", "ewm_return")],
            "scaling": scale_info,
            "fit_start": int(fit_start),
        },
    )


# -- trailing-volatility yardstick ----------------------------------------------------------------------------


def trailing_sd(values: np.ndarray, window_size: int) -> np.ndarray:
    """(T,) standard deviation of the log returns of bars t-window_size+1..t (causal); nan for t < window_size."""
    from numpy.lib.stride_tricks import sliding_window_view

    r = log_returns(values)
    sd = np.full(len(r), np.nan)
    sd[window_size:] = sliding_window_view(r[1:], window_size).std(1)
    return sd


def trailing_vol(
    values: np.ndarray, fit_end: int, window_size: int, shares, fit_start: int | None = None
) -> BaselineLabels:
    """Rolling standard deviation of the last ``window_size`` log returns (bars t-window_size+1..t), cut into
    len(shares) bins at training quantiles so that the training bars [fit_start, fit_end) fall into the bins, from
    calmest (label 0) to most volatile, in the proportions ``shares`` (same order; normalised to sum 1).
    Labels from bar window_size on; fit_start defaults to that."""
    sd = trailing_sd(values, window_size)
    fit_start = window_size if fit_start is None else max(window_size, fit_start)
    s = np.asarray(shares, dtype=np.float64)
    s = s / s.sum()
    cuts = np.quantile(sd[fit_start:fit_end], np.cumsum(s)[:-1])
    labels = np.full(len(sd), UNLABELLED, dtype=np.int64)
    labels[window_size:] = np.searchsorted(cuts, sd[window_size:], side="right")
    return BaselineLabels(labels, {"window_size": int(window_size), "shares": s.tolist(), "cuts": cuts.tolist()})
