"""Running a bundle with ONNX Runtime: the one inference path shared by the worker and `regimetry evaluate`.

`RegimeModel.run_series` is the batch reference: it computes, for every bar of a series, exactly what the
live worker emits for that bar, so tests can compare the stream's events with it number for number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regimetry.bundle import Bundle, load_bundle
from regimetry.classify import centroid_distance, standardize
from regimetry.features import scaled_windows
from regimetry.regimes import JumpDecoder, RegimeSpace, dwell


def make_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class SeriesRegimes:
    """Per-bar outputs for the bars that have a full window (index into the series = offset + row)."""

    offset: int  # series index of the first bar with a full window
    z: np.ndarray  # (N, D) standardised embeddings
    proba: np.ndarray  # (N, K) current-regime probabilities (the decoder's max-marginals)
    regime: np.ndarray  # (N,)
    ood: np.ndarray  # (N,) distance to the nearest regime centre in the regime geometry
    next_proba: np.ndarray  # (N, K), NaN rows where fewer than L embeddings exist
    next_regime: np.ndarray  # (N,), -1 where no forecast
    costs: np.ndarray | None = None  # (N, K) per-regime costs of each window
    values: np.ndarray | None = None  # (N, K) decoder values W (min 0 per row)
    dwell: np.ndarray | None = None  # (N,) bars in the current regime, this bar included


class RegimeModel:
    """A verified bundle with its ONNX Runtime sessions."""

    def __init__(self, bundle: Bundle | str | Path, threads: int = 1, public_key: str | Path | None = None):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, public_key)
        b = self.bundle
        self.encoder = make_session(b.onnx_path("encoder"), threads)
        self.forecaster = make_session(b.onnx_path("forecaster"), threads)
        self._enc_in = b.manifest["onnx"]["encoder"]["input"]
        self._enc_out = b.manifest["onnx"]["encoder"]["output"]
        self._fc_in = b.manifest["onnx"]["forecaster"]["input"]
        self._fc_out = b.manifest["onnx"]["forecaster"]["output"]
        self.space = RegimeSpace.from_dict({**b.manifest["regimes"]["space"], "centroids": b.manifest["centroids"]})
        self.decoder = JumpDecoder.from_dict(b.manifest["regimes"]["decoder"])

    # -- the three steps, each batched ------------------------------------------------------------------
    # ONNX Runtime's per-window cost of the encoder grows with the batch once its attention tensors leave the
    # CPU cache: ~60 us per window in blocks of <= 64, ~90 us in one call of 256 (2-core test machine).
    ENCODER_BLOCK = 64

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Feature windows -> embeddings in clustering geometry (float32)."""
        if len(windows) == 0:
            return np.zeros((0, self.bundle.manifest["embedding_dim"]), np.float32)
        x = np.ascontiguousarray(windows, np.float32)
        raw = np.concatenate(
            [self._encode_block(x[i : i + self.ENCODER_BLOCK]) for i in range(0, len(x), self.ENCODER_BLOCK)]
        )
        return standardize(raw, self.bundle.emb_mean, self.bundle.emb_std)

    def _encode_block(self, x: np.ndarray) -> np.ndarray:
        """One ONNX Runtime call. A block of exactly one window runs as two copies (row 0 kept): at batch 1
        ORT's kernels give embeddings that differ in the last bits from the same window inside any larger
        batch, and those bits feed 128 decoder decisions, so a bar arriving alone (an idle live worker) must
        get the numbers the batch pass gives it."""
        if len(x) == 1:
            return self.encoder.run([self._enc_out], {self._enc_in: np.concatenate([x, x])})[0][:1]
        return self.encoder.run([self._enc_out], {self._enc_in: x})[0]

    def forecast(self, z_history: np.ndarray) -> np.ndarray:
        """(B, L, D) embeddings, oldest first -> (B, D) predicted next embedding."""
        if len(z_history) == 0:
            return np.zeros((0, z_history.shape[-1]), np.float32)
        return self.forecaster.run([self._fc_out], {self._fc_in: np.ascontiguousarray(z_history, np.float32)})[0]

    def geometry(self, windows: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, W, F) scaled windows and their (N, D) embeddings -> (N, P) points in the regime geometry."""
        return self.space.geometry(np.asarray(windows)[:, -1, :], z)

    def costs(self, g: np.ndarray) -> np.ndarray:
        return self.space.costs(g)

    def ood(self, g: np.ndarray) -> np.ndarray:
        """Distance of each point (regime geometry) to its nearest regime centre: the out-of-distribution score."""
        return centroid_distance(g, self.space.centroids)

    def next_values(self, w: np.ndarray, windows: np.ndarray, z_next: np.ndarray) -> np.ndarray:
        """The decoder one bar ahead: values (N, K) at bar t, the window ending at t (its risk columns carried
        forward) and a predicted next embedding (N, D) -> values (N, K) at t + 1."""
        return self.decoder.step(w, self.costs(self.geometry(windows, z_next)))

    # -- batch reference -------------------------------------------------------------------------------
    def run_series(self, values: np.ndarray, batch: int = 512) -> SeriesRegimes:
        """Every bar of one symbol's history, as the worker would see them one at a time."""
        b = self.bundle
        h = b.history_bars
        wins = scaled_windows(values, b.spec, b.scaler, b.window_size)  # (N, W, F)
        z = np.concatenate(
            [self.embed(wins[i : i + batch]) for i in range(0, len(wins), batch)]
            or [np.zeros((0, b.manifest["embedding_dim"]), np.float32)]
        )
        g = self.geometry(wins, z)
        costs = self.costs(g)
        w = self.decoder.decode_series(costs)
        proba = self.decoder.proba(w)
        regime = w.argmin(1)
        L, s = b.input_length, b.stride
        span = (L - 1) * s
        n = len(z)
        next_proba = np.full_like(proba, np.nan)
        next_regime = np.full(n, -1, dtype=np.int64)
        if n > span:
            idx = np.arange(span, n)[:, None] - s * np.arange(L - 1, -1, -1)[None, :]
            hist = z[idx]
            pred = np.concatenate([self.forecast(hist[i : i + batch]) for i in range(0, len(hist), batch)])
            nw = self.next_values(w[span:], wins[span:], pred)
            next_proba[span:] = self.decoder.proba(nw)
            next_regime[span:] = nw.argmin(1)
        return SeriesRegimes(h - 1, z, proba, regime, self.ood(g), next_proba, next_regime, costs, w, dwell(regime))
