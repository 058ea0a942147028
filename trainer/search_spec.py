"""search.yaml -> the list of candidate training configurations of a configuration search.

    base: configs/eurusd.yaml        # a training YAML (path relative to this file) or an inline mapping
    output: search_runs/eurusd       # records, ranking.csv, shortlist.json, best_config.yaml
    workers: 1                       # candidate processes at once (default "auto": one per 2 cores)
    shortlist: 5
    score: {weights: {informative: 0.3, stability: 0.2, persistence: 0.2, steadiness: 0.1, separation: 0.1,
                      balance: 0.1}, duration_scale: 24, eta2_scale: 0.05}
    grid:
      window_size: [30, 60]
      stride: [1]
      embedding_dim: [8, 16]
      encoding_method: [learnable, sinusoidal]
      encoding_style: [interleaved, stacked]
      n_clusters: [3, 4, 5]
      encoder.epochs: [10]           # any dotted training option may be gridded too

Candidates are the cartesian product of the grid over the base. Each is identified by the hash of its fully
resolved config, so a rerun recognises finished work even if the grid was reordered or extended. The
encoding style means nothing for a learnable encoding: such pairs collapse into one candidate.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from regimetry.bundle import sha256_json
from trainer.config import TrainConfig, load_config, recipe
from trainer.scorecard import ScoreSpec

SHORT_NAMES = {
    "window_size": "window_size",
    "stride": "stride",
    "embedding_dim": "encoder.embedding_dim",
    "encoding_method": "encoder.encoding_method",
    "encoding_style": "encoder.encoding_style",
    "n_clusters": "clustering.n_clusters",
}
NOT_PART_OF_RECIPE = ("output_dir", "set_current", "name")


@dataclass(frozen=True)
class Candidate:
    id: str
    params: dict  # the gridded options (short names where they exist) as resolved
    config: dict  # the full TrainConfig as a dict


@dataclass
class SearchSpec:
    base: dict  # dotted overrides of the defaults
    grid: dict  # dotted key -> list of values
    output: Path
    workers: int = 1
    shortlist: int = 5
    score: ScoreSpec = field(default_factory=ScoreSpec)


def flatten(values: dict, prefix: str = "") -> dict:
    """{'encoder': {'epochs': 2}} -> {'encoder.epochs': 2}."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def auto_workers() -> int:
    """One TensorFlow process per two cores: each gets one thread for ops, the rest of the core for Python."""
    return max(1, (os.cpu_count() or 1) // 2)


def load_search(path: str | Path) -> SearchSpec:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read search config {path}: {exc}") from None
    unknown = set(doc) - {"base", "output", "workers", "shortlist", "score", "grid"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    base = doc.get("base") or {}
    if isinstance(base, str):
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        base = yaml.safe_load(base_path.read_text()) or {}
    grid = {SHORT_NAMES.get(k, k): (v if isinstance(v, list) else [v]) for k, v in (doc.get("grid") or {}).items()}
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError(f"{path}: 'grid' must map options to non-empty lists of values")
    workers = doc.get("workers", "auto")
    return SearchSpec(
        base=flatten(base),
        grid=grid,
        output=Path(doc.get("output") or path.with_suffix("").name + "_runs"),
        workers=auto_workers() if workers == "auto" else int(workers),
        shortlist=int(doc.get("shortlist", 5)),
        score=ScoreSpec.from_dict(doc.get("score")),
    )


def recipe_id(cfg: TrainConfig) -> str:
    """Hash of everything that changes the trained model (not where it is written, nor its name)."""
    return sha256_json(recipe(cfg, NOT_PART_OF_RECIPE))[:12]


def _params(cfg: TrainConfig, keys: list[str]) -> dict:
    short = {v: k for k, v in SHORT_NAMES.items()}
    d = flatten(cfg.to_dict())
    out = {short.get(k, k): d[k] for k in keys}
    if cfg.encoder.encoding_method == "learnable" and "encoding_style" in out:
        out["encoding_style"] = "-"
    return out


def expand(spec: SearchSpec) -> tuple[list[Candidate], list[dict]]:
    """(unique valid candidates in grid order, invalid combinations with the reason)."""
    keys = list(spec.grid)
    seen: set[str] = set()
    candidates, invalid = [], []
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        overrides = {**spec.base, **dict(zip(keys, combo))}
        try:
            cfg = load_config(None, overrides)
        except ValueError as exc:
            invalid.append({"params": dict(zip(keys, combo)), "error": str(exc)})
            continue
        if cfg.encoder.encoding_method == "learnable":
            cfg.encoder.encoding_style = TrainConfig().encoder.encoding_style  # unused: canonical value
        cid = recipe_id(cfg)
        if cid in seen:
            continue
        seen.add(cid)
        candidates.append(Candidate(cid, _params(cfg, keys), cfg.to_dict()))
    return candidates, invalid
