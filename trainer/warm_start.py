"""Refits that keep their meaning: what a refit takes over from the model in force.

A from-scratch refit of an unsupervised encoder lands its embeddings elsewhere, its clusters with them, and
its regime ids mean something else (measured on EURUSD: 57-64 % of windows keep their id, below any
publishing threshold). A warm-started refit instead starts from the previous model and moves only as far as
the new bars ask:

- the feature scaler and the embedding standardisation are kept, so the regime geometry is the same space;
- the encoder starts from the previous weights (``encoder.weights.h5`` beside the bundle: a Keras HDF5 weights
  file, not a pickle, read only by the trainer; the worker never opens it, the manifest's sha256 covers it)
  and is fine-tuned for ``encoder.warm_epochs`` epochs;
- the jump model is refined starting from the previous regime centres with the previous switch penalty, so
  regime k stays the regime nearest to where regime k was: ids are anchored, not re-derived.

The manifest records the source (``warm_start``) and whether the ids are still ordered by volatility.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regimetry.features import Scaler
from regimetry.regimes import RegimeSpace

WEIGHTS_FILE = "encoder.weights.h5"


@dataclass
class WarmStart:
    source: str  # model version (or "in-memory") it comes from
    scaler: Scaler
    emb_mean: np.ndarray
    emb_std: np.ndarray
    space: RegimeSpace  # centres included
    penalty: float
    encoder_weights: list[np.ndarray] | None = field(default=None, repr=False)
    weights_file: Path | None = None
    memory: int | None = None  # the previous decoder's memory (None: the configured one)

    def load_into(self, encoder) -> None:
        """Set a freshly built encoder of the same architecture to the previous weights."""
        if self.encoder_weights is not None:
            encoder.set_weights(self.encoder_weights)
        elif self.weights_file is not None:
            encoder.load_weights(str(self.weights_file))
        else:
            raise ValueError(f"warm start from {self.source}: no encoder weights")

    @classmethod
    def from_bundle(cls, path: str | Path) -> WarmStart:
        """The warm start a bundle offers; ValueError if it has no encoder weights (bundles exported before
        warm starts existed) or no regime geometry."""
        from regimetry.bundle import load_bundle

        b = load_bundle(path)
        m = b.manifest
        weights = b.path / WEIGHTS_FILE
        if not weights.exists() or WEIGHTS_FILE not in m["files"]:
            raise ValueError(f"bundle {b.path.name} has no {WEIGHTS_FILE}: it cannot warm-start a refit")
        if "regimes" not in m:
            raise ValueError(f"bundle {b.path.name} has no regime geometry (trained before the jump decoder)")
        space = RegimeSpace.from_dict({**m["regimes"]["space"], "centroids": m["centroids"]})
        return cls(
            m["model_version"],
            b.scaler,
            b.emb_mean,
            b.emb_std,
            space,
            float(m["regimes"]["decoder"]["penalty"]),
            None,
            weights,
            int(m["regimes"]["decoder"]["memory"]),
        )
