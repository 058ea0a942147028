"""The model in force and everything derived from its manifest, swappable as one unit.

Hot reload replaces this object between two micro-batches, never inside one: a batch is computed entirely
by one model version, its events carry that version (and so that version's event ids), and the drift
gauges restart against the new bundle's baseline. Embeddings and regime costs stored in Redis by the previous
version live in another geometry: the first batch that sees a symbol's old state rebuilds them (and the last
regime and its dwell) from the symbol's stored bars with the new model, so events right after the switch are
the new model's batch reference (worker/pipeline.py); regime ids continue, since a retrain aligns ids to the
previous bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from regimetry.drift_alarms import Cusum, detectors_from_manifest
from regimetry.inference import RegimeModel
from worker.drift import DriftMonitor
from worker.events import Profiles
from worker.settings import Settings


@dataclass(frozen=True)
class Serving:
    model: RegimeModel
    ood_threshold: float
    drift: DriftMonitor
    profiles: Profiles
    # the bundle's calibrated CUSUM drift alarms (regimetry/drift_alarms.py) by stream; {} for a bundle trained
    # before them (then no alarm is raised: load_serving's caller logs it)
    detectors: dict[str, Cusum] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.model.bundle.path.resolve()

    @property
    def version(self) -> str:
        return self.model.bundle.version

    @property
    def history(self) -> int:
        return self.model.bundle.history_bars

    @property
    def stride(self) -> int:
        return self.model.bundle.stride

    @property
    def span(self) -> int:
        """Embeddings between the oldest and newest forecaster input: (L - 1) * stride."""
        return (self.model.bundle.input_length - 1) * self.model.bundle.stride

    @property
    def memory(self) -> int:
        """Costs behind each decoded regime (the jump decoder's finite memory, the bar itself included)."""
        return int(self.model.decoder.memory)

    @property
    def keep_emb(self) -> int:
        """Members (embedding + costs) kept per symbol: the forecaster's span and the decoder's memory - 1."""
        return max(self.span, self.memory - 1, 1)

    @property
    def rebuild_bars(self) -> int:
        """Stored bars an exact rebuild of those members and of the last regime needs."""
        return self.history + self.keep_emb

    @property
    def dim(self) -> int:
        return int(self.model.bundle.manifest["embedding_dim"])

    @property
    def n_clusters(self) -> int:
        return self.model.bundle.n_clusters


def load_serving(bundle_dir: str | Path, settings: Settings) -> Serving:
    """Verify and open a bundle (BundleError / ValueError with a clear message if it cannot be served)."""
    model = RegimeModel(bundle_dir, threads=settings.ort_threads, public_key=settings.bundle_public_key or None)
    manifest = model.bundle.manifest
    quantiles = manifest["baseline"]["centroid_distance_quantiles"]
    if settings.ood_quantile not in quantiles:
        raise ValueError(
            f"REGIMETRY_OOD_QUANTILE={settings.ood_quantile!r} is not in the bundle's "
            f"centroid_distance_quantiles ({', '.join(sorted(quantiles))})"
        )
    threshold = float(quantiles[settings.ood_quantile])
    drift = DriftMonitor(manifest["baseline"], model.bundle.n_clusters, settings.drift_horizon, threshold)
    return Serving(model, threshold, drift, Profiles.from_manifest(manifest), detectors_from_manifest(manifest))
