"""locked_profile.yaml: the configuration a researcher has chosen, frozen with what it was chosen on.

A locked profile is what periodic refreshes retrain: the full resolved training config (seed included), the
range and hash of the bars it was chosen on, and the hash of the feature code. A refresh refuses a profile
whose feature hash differs from the running code: the search's conclusions were drawn on other features.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml

from regimetry.data import BarSeries, iso_utc
from regimetry.features import FeatureSpec
from trainer.config import TrainConfig, from_dict

KIND = "regimetry-locked-profile"
FORMAT_VERSION = 1


class ProfileError(ValueError):
    """A locked profile that cannot be used as it is; the message says why."""


class ProfileMismatch(ProfileError):
    """A readable profile that does not fit the running code or the bundle in force (features, regime count)."""


@dataclass(frozen=True)
class LockedProfile:
    config: TrainConfig
    meta: dict  # everything else in the file: seed, data range, feature spec and hash, locked_at


def data_fingerprint(series: BarSeries) -> dict:
    """Where the bars start and end, how many, and a hash of their values (to tell the same data again)."""
    return {
        "symbol": series.symbol,
        "n_bars": len(series),
        "start": iso_utc(series.times[0]),
        "end": iso_utc(series.times[-1]),
        "sha256": series.digest(),
    }


def lock(cfg: TrainConfig, series: BarSeries, source: str | None = None) -> dict:
    """The locked profile document for ``cfg`` chosen on ``series``."""
    spec = FeatureSpec()
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "locked_at": iso_utc(dt.datetime.now(dt.UTC).timestamp()),
        "seed": cfg.seed,
        "data": {"source": source or cfg.data, **data_fingerprint(series)},
        "feature_spec": spec.to_dict(),
        "feature_spec_hash": spec.hash(),
        "config": cfg.to_dict(),
    }


def write(doc: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))


def load(path: str | Path, check_features: bool = True) -> LockedProfile:
    """Read and check a locked profile; the config's seed is the profile's seed."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read locked profile {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ProfileError(f"{path} is not a locked profile (expected kind: {KIND}); make one with `regimetry lock`")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ProfileError(f"{path}: format_version {doc.get('format_version')} is not {FORMAT_VERSION}")
    ours = FeatureSpec().hash()
    if check_features and doc.get("feature_spec_hash") != ours:
        raise ProfileMismatch(
            f"{path} was locked with feature spec {str(doc.get('feature_spec_hash'))[:12]}..., this "
            f"code computes {ours[:12]}...: re-run the search (or lock again) on the current features"
        )
    values = dict(doc["config"])
    values["seed"] = doc["seed"]
    try:
        cfg = from_dict(values)
    except ValueError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return LockedProfile(cfg, {k: v for k, v in doc.items() if k != "config"})
