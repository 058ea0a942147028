"""Training configuration: every option has a default, a YAML file overrides any subset.

The resolved configuration (defaults + file + command-line overrides) is written into the bundle as
training_profile_used.yaml, so a bundle always says exactly how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

TRAINER_VERSION = 7  # bump when training changes what a given config produces (part of every recipe hash)
ENCODING_METHODS = ("learnable", "sinusoidal")
ENCODING_STYLES = ("interleaved", "stacked")
FORECASTERS = ("stratum", "stratum_attn", "stratum_hydra")
LOSSES = ("mse", "cosine")
PENALTY_RULES = ("self_consistent", "persistent", "validation_eta2")
UNIVERSE_OPTIONS = ("symbols", "max_gap", "mixed_intervals")


@dataclass
class EncoderConfig:
    d_model: int = 32
    heads: int = 4
    depth: int = 2
    ff_dim: int = 64
    dropout: float = 0.1
    embedding_dim: int = 16
    encoding_method: str = "sinusoidal"  # learnable | sinusoidal
    encoding_style: str = "interleaved"  # interleaved | stacked (sinusoidal only)
    mask_ratio: float = 0.15  # share of time steps hidden during masked-window pretraining
    contrast_weight: float = 0.0  # weight of the temporal contrastive loss (0 = reconstruction only)
    temperature: float = 0.5  # InfoNCE temperature
    epochs: int = 20
    warm_epochs: int = 4  # fine-tuning epochs of a warm-started refit (trainer/warm_start.py)
    batch_size: int = 128
    learning_rate: float = 1e-3


@dataclass
class ClusterConfig:
    n_clusters: int = 4
    n_neighbors: int = 15  # affinity graph of the spectral clustering
    knn_k: int = 9  # neighbours voting in the kNN diagnostic
    max_reference: int = 2000  # reference embeddings kept in the bundle (kNN diagnostic only)
    # the regime geometry and the causal jump decoder (regimetry/regimes.py)
    risk_weight: float = 1.0  # weight of each log_rvol_hl* column
    trend_weight: float = 1.0  # weight of each trend_hl* column
    range_weight: float = 1.0  # weight of the bar's own log range (the fastest risk reading; 0 = left out)
    embedding_weight: float = 1.0  # weight of the whole standardised embedding (as one column)
    volume_weight: float = 0.0  # weight of the bar's volume_z_* column (trailing volume z-score; 0 = left out)
    # huber_delta: None = Gaussian costs (0.5 * squared distance); a number = Huber costs per coordinate, quadratic
    # within delta of a regime centre and linear beyond (in whitened units when whiten), so that one heavy-tailed
    # bar cannot carry a switch alone; the fit's centres are then Huber locations (regimetry/regimes.py)
    huber_delta: float | None = None
    # whiten: the weights above count in units of each column's (and the embedding block's) pooled within-regime
    # spread on a preliminary training fit, so every column is measured against its own noise
    whiten: bool = True
    penalty: float | None = None  # switch penalty; None = chosen on the training windows by penalty_rule
    # self_consistent (the default): the penalty is the switch cost in nats of the fit's own dwell D
    # (log((K-1)(D-1)), a hard HMM's), iterated to a fixed point on the training windows; persistent: that
    # penalty, raised to the largest multiple time-series cross-validation cannot tell from the best (next-bar
    # |log return| eta^2, one-standard-error rule; the default of trainer version 7 until session 25: its
    # multiple jumped 2x-64x between origins and cost eta^2 on most rolling-origin spans, docs/research.md);
    # validation_eta2: the candidate rule below
    penalty_rule: str = "self_consistent"
    penalty_start: float = 4.0  # first penalty of the fixed point (and of the preliminary fit of whiten)
    penalty_iterations: int = 8  # at most this many refits of the fixed point
    penalties: list = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0])  # validation_eta2's
    penalty_tolerance: float = 0.05  # validation_eta2: relative eta^2 loss accepted for a larger penalty
    # persistent: the self-consistent penalty, raised to the largest of its multiples below that time-series
    # cross-validation on the training windows cannot tell from the best one (trainer/penalty.py::persistent_penalty)
    persistence_multiples: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    persistence_folds: list = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9])  # expanding-window cuts
    validation: float = 0.3  # share of the training windows the penalty is validated on
    # a warm-started refit (`regimetry refresh`) shrinks each regime centre toward the previous model's as if that
    # centre were anchor_strength times the windows the previous model serves in the regime on the new bars: 1 =
    # the previous model weighs as much as the new fit, 0 = anchored only by the starting centres (trainer
    # version 7), where the fit can drift far from the regimes in force (docs/research.md, session 26)
    anchor_strength: float = 1.0
    memory: int = 128  # bars of costs behind each decoded regime, at least (doubled until the decoder equals the
    # unbounded recursion on 99.9 % of the training windows: trainer/jump_fit.py::adequate_memory)


@dataclass
class ForecasterConfig:
    name: str = "stratum"  # stratum | stratum_attn | stratum_hydra
    input_length: int = 8  # L: embeddings fed to the forecaster
    units: int = 64
    loss: str = "mse"  # mse | cosine
    epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 1e-3


@dataclass
class TrainConfig:
    name: str = "eurusd"
    data: str = "eurusd"  # 'eurusd', 'synthetic', a CSV/parquet path, a folder, 'archive:DIR', or a comma list
    symbol: str | None = None
    # a universe (trainer/windows.py): the symbols kept from --data (None: every one it holds), and the gap that
    # cuts a symbol's bars into separate runs (bars more than max_gap median intervals apart; None: never cut)
    symbols: list | None = None
    max_gap: float | None = None
    # symbols of different bar intervals (median spacing apart by more than 1.5x) in one universe are refused
    # unless this is true: measured (benchmarks/bench_universe.py), their regimes then tell the symbols apart
    mixed_intervals: bool | None = None
    seed: int = 42
    window_size: int = 30
    stride: int = 1
    holdout: float = 0.2  # last share of windows held out, chronologically
    output_dir: str = "exported_models"
    opset: int = 17
    drift_arl_events: float = 5000.0  # drift alarms: mean events between false alarms on training-like data
    set_current: bool = True  # point exported_models/CURRENT at the new bundle
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    clustering: ClusterConfig = field(default_factory=ClusterConfig)
    forecaster: ForecasterConfig = field(default_factory=ForecasterConfig)

    def validate(self) -> TrainConfig:
        errs = []
        if self.encoder.encoding_method not in ENCODING_METHODS:
            errs.append(f"encoder.encoding_method must be one of {ENCODING_METHODS}")
        if self.encoder.encoding_style not in ENCODING_STYLES:
            errs.append(f"encoder.encoding_style must be one of {ENCODING_STYLES}")
        if self.encoder.d_model % self.encoder.heads:
            errs.append("encoder.d_model must be divisible by encoder.heads")
        if self.encoder.encoding_method == "sinusoidal" and self.encoder.d_model % 2:
            errs.append("encoder.d_model must be even for sinusoidal encoding")
        if self.forecaster.name not in FORECASTERS:
            errs.append(f"forecaster.name must be one of {FORECASTERS}")
        if self.forecaster.loss not in LOSSES:
            errs.append(f"forecaster.loss must be one of {LOSSES}")
        if self.window_size < 2 or self.stride < 1:
            errs.append("window_size must be >= 2 and stride >= 1")
        if not 0.0 < self.holdout < 0.9:
            errs.append("holdout must be in (0, 0.9)")
        if self.clustering.n_clusters < 2:
            errs.append("clustering.n_clusters must be >= 2")
        if self.stride != 1:
            errs.append("stride must be 1: regimes are decoded bar by bar (the causal jump decoder)")
        if not self.clustering.penalties or any(float(x) < 0 for x in self.clustering.penalties):
            errs.append("clustering.penalties must be a non-empty list of numbers >= 0")
        if self.clustering.penalty is not None and float(self.clustering.penalty) < 0:
            errs.append("clustering.penalty must be >= 0 (a negative penalty would reward switching)")
        if not float(self.clustering.anchor_strength) >= 0:
            errs.append("clustering.anchor_strength must be >= 0 (0: a warm refit is anchored by its start only)")
        if self.clustering.huber_delta is not None and not float(self.clustering.huber_delta) > 0:
            errs.append("clustering.huber_delta must be > 0 (or null for the Gaussian cost)")
        if float(self.clustering.volume_weight) < 0:
            errs.append("clustering.volume_weight must be >= 0")
        if self.clustering.penalty_rule not in PENALTY_RULES:
            errs.append(f"clustering.penalty_rule must be one of {PENALTY_RULES}")
        if float(self.clustering.penalty_start) < 0 or int(self.clustering.penalty_iterations) < 1:
            errs.append("clustering.penalty_start must be >= 0 and clustering.penalty_iterations >= 1")
        mult, folds = self.clustering.persistence_multiples, self.clustering.persistence_folds
        if not mult or any(float(x) < 1 for x in mult):
            errs.append("clustering.persistence_multiples must be a non-empty list of numbers >= 1")
        if len(folds) < 2 or any(not 0 < float(x) < 1 for x in folds) or list(folds) != sorted(set(folds)):
            errs.append("clustering.persistence_folds must be >= 2 increasing cuts in (0, 1)")
        if self.clustering.memory < 1:
            errs.append("clustering.memory must be >= 1")
        if self.symbols is not None and (
            not isinstance(self.symbols, list) or not self.symbols or not all(isinstance(x, str) for x in self.symbols)
        ):
            errs.append("symbols must be a non-empty list of symbol names (or unset: every symbol of --data)")
        if self.max_gap is not None and not float(self.max_gap) > 1.0:
            errs.append("max_gap must be > 1 (median bar intervals) or unset")
        if not 0.05 <= self.clustering.validation <= 0.5:
            errs.append("clustering.validation must be in [0.05, 0.5]")
        if errs:
            raise ValueError("invalid training config: " + "; ".join(errs))
        return self

    def to_dict(self) -> dict:
        """The options; the universe-only ones (UNIVERSE_OPTIONS) only when set, so a one-symbol profile, its
        recipe hash and the model version it gives are what they were before universes existed."""
        d = asdict(self)
        return {k: v for k, v in d.items() if not (k in UNIVERSE_OPTIONS and v is None)}


def _merge(obj, values: dict, where: str) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, val in values.items():
        if key not in known:
            raise ValueError(f"unknown option '{where}{key}'; known: {', '.join(sorted(known))}")
        cur = getattr(obj, key)
        if hasattr(cur, "__dataclass_fields__"):
            if not isinstance(val, dict):
                raise ValueError(f"option {where}{key} must be a mapping")
            _merge(cur, val, f"{where}{key}.")
        else:
            setattr(obj, key, val)


def from_dict(values: dict | None) -> TrainConfig:
    cfg = TrainConfig()
    _merge(cfg, values or {}, "")
    return cfg.validate()


def load_config(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then dotted overrides such as {'encoder.epochs': 2}.

    The file may be a plain profile (best_config.yaml, training_profile_used.yaml) or a locked profile from
    `regimetry lock`, whose frozen config and seed are used after its feature hash is checked.
    """
    values = yaml.safe_load(Path(path).read_text()) if path else {}
    if path and isinstance(values, dict) and values.get("kind") == "regimetry-locked-profile":
        from trainer.locked_profile import load as load_locked

        values = load_locked(path).config.to_dict()
    cfg = TrainConfig()
    _merge(cfg, values or {}, "")
    for dotted, val in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        nested: dict = {leaf: val}
        for p in reversed(parents):
            nested = {p: nested}
        _merge(cfg, nested, "")
    return cfg.validate()


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def recipe(cfg: TrainConfig, exclude: tuple[str, ...] = ("output_dir", "set_current")) -> dict:
    """Everything that decides what training produces: the config without `exclude` (where it is written),
    the feature code's hash and the trainer version. The one input of both recipe hashes (the model version
    and the search's resume key), so a change of features or trainer invalidates both alike."""
    from regimetry.features import FeatureSpec

    out = {k: v for k, v in cfg.to_dict().items() if k not in exclude}
    out["feature_spec"] = FeatureSpec().hash()
    out["trainer"] = TRAINER_VERSION
    return out
