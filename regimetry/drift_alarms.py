"""Sequential drift detectors that fire: one-sided CUSUMs on the streams every regime event carries.

Streams, one value per event, oriented so that "worse" is larger:

    ood          the OOD score (distance to the nearest regime centre in the regime geometry)
    uncertainty  1 - confidence (the decoder probability of the served regime)
    miss         1 if the regime predicted at the previous bar is not the regime of this bar, else 0

Each stream has a CUSUM  S_t = max(0, S_{t-1} + (x_t - mu) / sigma - k)  that alarms when S_t > h and then
restarts from 0 (Page's scheme). mu and sigma are the stream's training mean and standard deviation; k (the
allowance, half the shift to detect in sigma units) is fixed at 0.5; h is calibrated on the training windows
so that the detector's mean time between false alarms on data like the training data is at least a stated
number of events (`arl0`; see `calibrate` for how: the stream's dependence is modelled and simulated, since a
few thousand training values cannot show a rate of one alarm in thousands). The calibration is written in the manifest
(drift_alarms), so the trainer, `regimetry drift-report` and the live worker run the very same numbers; and
the very same update: `Cusum.step`, through `step_detectors` (one event; the worker keeps each symbol's
statistics in Redis between batches, worker/steps.py) and `run_detectors` (a whole series, from zero).

A CUSUM of our own rather than River's: the calibration needs the statistic's whole path on the training
stream (River's detectors expose the decision, not S_t), and this is ten lines of numpy shared by all sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STREAMS = ("ood", "uncertainty", "miss")
ALLOWANCE = 0.5


@dataclass(frozen=True)
class Cusum:
    stream: str
    mean: float
    std: float
    threshold: float  # h, in standardised units
    allowance: float = ALLOWANCE

    def step(self, acc: float, x: float) -> tuple[float, bool]:
        """One value: S_t = max(0, acc + (x - mu) / sigma - k) after the statistic ``acc`` before it, and whether
        S_t alarms (S_t > h; the next statistic is then 0). The one update of every side: ``path`` (and so the
        calibration and run_detectors) and the live worker (step_detectors) all go through it."""
        s = max(0.0, acc + ((x - self.mean) / self.std - self.allowance))
        return s, s > self.threshold

    def path(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S_t (T,), alarm indices) over a stream of values (T,), restarting from 0 after each alarm."""
        values = np.asarray(x, dtype=np.float64).tolist()
        s = np.empty(len(values))
        alarms = []
        acc = 0.0
        for t, v in enumerate(values):
            s[t], fired = self.step(acc, v)
            if fired:
                alarms.append(t)
            acc = 0.0 if fired else float(s[t])
        return s, np.asarray(alarms, dtype=np.int64)

    def to_dict(self) -> dict:
        return {
            "stream": self.stream,
            "mean": self.mean,
            "std": self.std,
            "threshold": self.threshold,
            "allowance": self.allowance,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Cusum:
        return cls(str(d["stream"]), float(d["mean"]), float(d["std"]), float(d["threshold"]), float(d["allowance"]))


def _alarm_counts(z: np.ndarray, h: float) -> np.ndarray:
    """Alarms of the restarting CUSUM with threshold h on each row of z (S, T): (S,) counts."""
    acc = np.zeros(len(z))
    n = np.zeros(len(z), dtype=np.int64)
    for t in range(z.shape[1]):
        acc = np.maximum(acc + z[:, t], 0.0)
        fired = acc > h
        n += fired
        acc[fired] = 0.0
    return n


def _simulate(z: np.ndarray, chains: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """(chains, length) standardised streams like ``z`` (the training stream, standardised): a two-state Markov
    chain fitted to a binary stream (a forecast miss is 0 or 1), otherwise an AR(1) with innovations resampled
    from its own residuals; each chain starts from a random training value."""
    values = np.unique(z)
    out = np.empty((chains, length))
    if len(values) <= 2:
        hi = z == values.max()
        p01 = float(np.mean(hi[1:][~hi[:-1]])) if (~hi[:-1]).any() else 0.0
        p11 = float(np.mean(hi[1:][hi[:-1]])) if hi[:-1].any() else 0.0
        state = rng.random(chains) < hi.mean()
        for t in range(length):
            out[:, t] = np.where(state, values.max(), values.min())
            state = rng.random(chains) < np.where(state, p11, p01)
        return out, {"model": "markov", "p_01": p01, "p_11": p11}
    phi = float(np.clip(np.corrcoef(z[:-1], z[1:])[0, 1], -0.999, 0.999))
    resid = z[1:] - phi * z[:-1]
    resid -= resid.mean()
    cur = rng.choice(z, chains)
    for t in range(length):
        out[:, t] = cur
        cur = phi * cur + rng.choice(resid, chains)
    return out, {"model": "ar1", "phi": phi}


def _threshold(samples: np.ndarray, allowed: float) -> float:
    """The smallest h whose restarting CUSUM gives at most ``allowed`` alarms per row of samples (S, T) on
    average (bisection: alarm counts fall as h grows)."""
    lo, hi = 0.0, 1.0
    while _alarm_counts(samples, hi).mean() > allowed:
        lo, hi = hi, hi * 2
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        if _alarm_counts(samples, mid).mean() > allowed:
            lo = mid
        else:
            hi = mid
    return hi


def calibrate(
    stream: str, x: np.ndarray, arl0: float = 5000.0, chains: int = 64, block: int = 200, seed: int = 0
) -> tuple[Cusum, dict]:
    """The CUSUM of one stream with h set for a mean time between false alarms of at least ``arl0`` events on
    data like ``x`` (the training stream, in time order); returns it and a record of the calibration.

    A training stream is a few thousand values and arl0 is of that order or larger, so the false-alarm rate
    cannot be read off the training stream itself: the stream's dependence is modelled (AR(1) on the values,
    or a two-state Markov chain for a 0/1 stream, innovations resampled from the data's own residuals), giving
    the smallest threshold with at most one alarm per arl0 events over ~40 * arl0 simulated events; and since
    real streams have longer memory than an AR(1) (regimes persist), h is at least the threshold the training
    stream and its circular block-bootstrap resamples (blocks of ``block``) need to stay within len / arl0
    alarms. Both thresholds and the training stream's alarm count at h are recorded."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 200:
        raise ValueError(f"{stream}: {len(x)} training values are too few to calibrate a drift alarm")
    mean, std = float(x.mean()), float(x.std())
    std = std if std > 1e-12 else 1.0
    rng = np.random.default_rng(seed)
    length = max(2000, int(np.ceil(40 * arl0 / chains)))
    z = (x - mean) / std
    sim, model = _simulate(z, chains, length, rng)
    h_model = _threshold(sim - ALLOWANCE, length / arl0)
    # the data itself, in circular blocks of `block` (its own dependence, whatever the model misses): no more
    # alarms per resample than its length allows at arl0
    n_blocks = -(-len(z) // block)
    rows = [z]
    for _ in range(chains // 4):
        starts = rng.integers(0, len(z), n_blocks)
        rows.append(z[((starts[:, None] + np.arange(block)[None, :]).ravel() % len(z))[: len(z)]])
    h_data = _threshold(np.stack(rows) - ALLOWANCE, len(z) / arl0)
    hi = max(h_model, h_data)
    model.update(threshold_model=h_model, threshold_data=h_data)
    det = Cusum(stream, mean, std, float(hi))
    return det, {
        "stream": stream,
        "n_train": int(len(x)),
        "target_arl_events": arl0,
        "simulated_events": int(chains * length),
        **model,
        "train_alarms": int(len(det.path(x)[1])),
    }


def streams_of(proba: np.ndarray, regimes: np.ndarray, ood: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """The three streams from per-event arrays: proba (T, K) decoder probabilities, regimes (T,), ood (T,),
    predicted (T,) the regime predicted at each bar for the next one (-1 where there is no forecast).
    miss[t] compares predicted[t - 1] with regimes[t]; it is NaN where bar t - 1 had no forecast."""
    conf = np.asarray(proba, dtype=np.float64)[np.arange(len(regimes)), np.asarray(regimes)]
    miss = np.full(len(regimes), np.nan)
    if len(regimes) > 1:
        prev = np.asarray(predicted)[:-1]
        ok = prev >= 0
        miss[1:][ok] = (prev[ok] != np.asarray(regimes)[1:][ok]).astype(np.float64)
    return {"ood": np.asarray(ood, dtype=np.float64), "uncertainty": 1.0 - conf, "miss": miss}


def detectors_from_manifest(manifest: dict) -> dict[str, Cusum]:
    """The calibrated detectors of a bundle ({} for a bundle trained before they existed)."""
    section = manifest.get("drift_alarms") or {}
    return {d["stream"]: Cusum.from_dict(d) for d in section.get("detectors", [])}


def step_detectors(
    detectors: dict[str, Cusum], state: dict[str, float], values: dict[str, float]
) -> tuple[dict[str, float], list[dict]]:
    """One event through every detector: ``state`` holds each stream's statistic before it (absent: 0),
    ``values`` the event's value of each stream. Returns the statistics after it (0 after an alarm) and its
    alarms [{detector, stream, statistic, threshold, value}] in detector order. A NaN or missing value (a miss
    with no forecast before it) leaves its statistic as it is. The worker keeps ``state`` per symbol
    (worker/steps.py), run_detectors replays a whole series through this same function."""
    new = dict(state)
    alarms = []
    for name in sorted(detectors):
        x = values.get(name)
        if x is None or not math.isfinite(x):
            continue
        det = detectors[name]
        s, fired = det.step(new.get(name, 0.0), x)
        new[name] = 0.0 if fired else s
        if fired:
            alarms.append(
                {"detector": f"cusum_{name}", "stream": name, "statistic": s, "threshold": det.threshold, "value": x}
            )
    return new, alarms


def run_detectors(detectors: dict[str, Cusum], streams: dict[str, np.ndarray]) -> list[dict]:
    """Alarms of every detector over its stream: [{detector, stream, index, statistic, threshold, value}] in
    (index, detector) order, each event through step_detectors from a zero state (the live worker's update,
    so live alarms equal these by construction); NaN values skipped without resetting the statistic."""
    cols = {name: np.asarray(streams[name], dtype=np.float64).tolist() for name in detectors if name in streams}
    n = max((len(v) for v in cols.values()), default=0)
    state: dict[str, float] = {}
    out = []
    for t in range(n):
        state, alarms = step_detectors(detectors, state, {name: v[t] for name, v in cols.items()})
        out += [{**a, "index": t} for a in alarms]
    return out
