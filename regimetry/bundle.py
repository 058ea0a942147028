"""The bundle contract (exported_models/<model_version>/): writing its manifest, reading and verifying it.

Writer and reader of manifest.json live here together, so the contract has one home: the trainer hands a
Manifest over and `write_manifest` lays it out, hashes every file beside it and seals the whole with its
content digest; the worker trusts nothing it cannot check: the manifest must match its schema, every file must match the
sha256 recorded at export, and the feature spec must hash to what this very feature code produces. A bundle
failing any of these is refused with a message saying which check failed and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from regimetry.classify import KNNClassifier
from regimetry.features import FEATURE_CODE_VERSION, FeatureSpec, Scaler, history_needed
from regimetry.regimes import JumpDecoder, RegimeSpace

MANIFEST = "manifest.json"
POINTER = "CURRENT"  # text file in the models root naming the bundle in force


class BundleError(RuntimeError):
    """A bundle that must not be served; the message says what is wrong."""


def schemas_dir() -> Path:
    """The contracts (bar, event, dead letter, manifest), shipped as package data of the core.

    regimetry/schemas/ (schemas/ at the repository root links to it): an installed package finds them without
    any setting."""
    return Path(__file__).resolve().parent / "schemas"


@cache
def load_schema(name: str) -> dict:
    path = schemas_dir() / name
    if not path.exists():
        raise BundleError(f"schema {path} not found: the package was installed without its data files")
    return json.loads(path.read_text())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj) -> str:
    """Hash of a JSON-able value in canonical form (sorted keys), for manifest sub-sections."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the whole manifest but its own digest (hashes.manifest): every number the worker serves from
    it (scalers, centres, decoder, thresholds, profiles, names) and the model version that event ids are made
    of. Written by the trainer, checked at every load and hot reload, so a one-byte edit is refused."""
    body = json.loads(json.dumps(manifest))
    body.get("hashes", {}).pop("manifest", None)
    return sha256_json(body)


@dataclass(frozen=True)
class Manifest:
    """What a bundle's manifest records, as the trainer hands it over; ``to_dict`` lays it out per
    schemas/manifest.schema.json and `write_manifest` seals it. Arrays: emb_mean, emb_std (D,) of the
    embedding scaler; centroids (K, P) in the regime geometry (RegimeSpace)."""

    model_version: str
    created_at: str  # ISO 8601 UTC
    seed: int
    spec: FeatureSpec
    scaler: Scaler
    window_size: int
    stride: int
    emb_mean: np.ndarray
    emb_std: np.ndarray
    centroids: np.ndarray
    space: RegimeSpace
    decoder: JumpDecoder
    classifier: KNNClassifier  # diagnostic only, saved as classifier.npz
    forecaster: dict  # name, input_length, loss
    onnx: dict  # encoder / forecaster: input and output names, shapes, opset, parity
    regime_profiles: list[dict]
    baseline: dict  # training shares, transition matrix, OOD distance quantiles, confidence, hit rate
    data: dict  # source, symbol, n_bars, start, end, train_end (epoch seconds)
    libraries: dict
    alignment: dict | None = None  # how a refresh renumbered the ids (trainer/alignment.py)
    warm_start: dict | None = None  # what a warm-started refit started from (trainer/warm_start.py)
    drift_alarms: dict | None = None  # calibrated CUSUM drift alarms (regimetry/drift_alarms.py)

    def to_dict(self) -> dict:
        spec, space, decoder = self.spec, self.space, self.decoder
        emb_scaler = {"mean": np.asarray(self.emb_mean).tolist(), "std": np.asarray(self.emb_std).tolist()}
        centroids = np.asarray(self.centroids).tolist()
        return {
            "schema_version": 1,
            "model_version": self.model_version,
            "created_at": self.created_at,
            "seed": self.seed,
            "feature_spec": spec.to_dict(),
            "feature_spec_hash": spec.hash(),
            "feature_scaler": self.scaler.to_dict(),
            "window_size": self.window_size,
            "stride": self.stride,
            "history_bars": history_needed(spec, self.window_size),
            "embedding_dim": len(emb_scaler["mean"]),
            "embedding_scaler": emb_scaler,
            "n_clusters": len(centroids),
            "centroids": centroids,
            "classifier": {
                "kind": "knn",
                "file": "classifier.npz",
                "k": self.classifier.k,
                "n_reference": int(len(self.classifier.reference)),
                "geometry": "standardised embedding",
                "role": "diagnostic only: served regimes come from the decoder",
            },
            "regimes": {
                "space": {k: v for k, v in space.to_dict().items() if k != "centroids"},
                "risk_features": [spec.names[i] for i in space.risk_columns],
                "decoder": decoder.to_dict(),
                "geometry": "regimetry/regimes.py RegimeSpace; centroids above",
            },
            "forecaster": self.forecaster,
            "onnx": self.onnx,
            "regime_profiles": self.regime_profiles,
            "baseline": self.baseline,
            "hashes": {
                "regimes": sha256_json({"space": space.to_dict(), "decoder": decoder.to_dict()}),
                "feature_scaler": sha256_json(self.scaler.to_dict()),
                "embedding_scaler": sha256_json(emb_scaler),
                "centroids": sha256_json(centroids),
            },
            "alignment": self.alignment,
            "warm_start": self.warm_start,
            **({"drift_alarms": self.drift_alarms} if self.drift_alarms is not None else {}),
            "libraries": self.libraries,
            "data": self.data,
            "files": {},
        }


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> dict:
    """Write manifest.json into a bundle folder whose other files are final: the sha256 of every file in it,
    then the content digest over everything (hashes.manifest); validated against the schema before it is
    written. Returns the manifest as written."""
    d = Path(bundle_dir)
    out = manifest.to_dict()
    out["files"] = {p.name: sha256_file(p) for p in sorted(d.iterdir()) if p.name != MANIFEST}
    out["hashes"]["manifest"] = manifest_digest(out)  # checked at every load (verify_bundle)
    validate_manifest(out)
    (d / MANIFEST).write_text(json.dumps(out, indent=2))
    return out


def resolve_bundle_dir(path: str | Path) -> Path:
    """A bundle folder, or a models root holding a CURRENT pointer (or exactly one bundle)."""
    p = Path(path)
    if (p / MANIFEST).exists():
        return p
    if (p / POINTER).exists():
        name = (p / POINTER).read_text().strip()
        if not (p / name / MANIFEST).exists():
            raise BundleError(f"{p / POINTER} names bundle {name!r}, but {p / name / MANIFEST} does not exist")
        return p / name
    if p.is_dir():
        found = sorted(d for d in p.iterdir() if (d / MANIFEST).exists())
        if len(found) == 1:
            return found[0]
        if found:
            raise BundleError(f"{p} holds {len(found)} bundles and no {POINTER} pointer; name one explicitly")
    raise BundleError(f"no model bundle at {p} (expected {MANIFEST} or a {POINTER} pointer)")


def validate_manifest(manifest: dict) -> None:
    import jsonschema

    try:
        jsonschema.validate(manifest, load_schema("manifest.schema.json"))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(x) for x in exc.absolute_path) or "(root)"
        raise BundleError(f"manifest does not match schemas/manifest.schema.json at {where}: {exc.message}") from None


def verify_bundle(bundle_dir: str | Path, public_key: str | Path | None = None) -> dict:
    """Return the manifest of a bundle that passes every check, else raise BundleError. With ``public_key`` (a
    PEM file), the bundle must also carry a valid ed25519 signature of its manifest (regimetry/signing.py)."""
    d = resolve_bundle_dir(bundle_dir)
    raw = (d / MANIFEST).read_bytes()  # read once: the bytes checked are the bytes parsed
    if public_key:
        from regimetry.signing import signature_problem

        problem = signature_problem(d, public_key, raw)
        if problem is not None:
            raise BundleError(f"bundle {d.name}: {problem}")
    try:
        manifest = json.loads(raw.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{d / MANIFEST} is not valid JSON: {exc}") from None
    validate_manifest(manifest)
    for name, digest in manifest["files"].items():
        f = d / name
        if not f.exists():
            raise BundleError(f"bundle {d.name}: file {name} listed in the manifest is missing")
        if f.suffix in (".pkl", ".pickle", ".joblib"):
            raise BundleError(f"bundle {d.name}: {name} is a pickle; bundles must not contain pickles")
        actual = sha256_file(f)
        if actual != digest:
            raise BundleError(
                f"bundle {d.name}: sha256 of {name} is {actual[:12]}..., manifest says "
                f"{digest[:12]}...: the file was modified or corrupted; re-export the bundle"
            )
    spec = manifest["feature_spec"]
    if spec.get("code_version") != FEATURE_CODE_VERSION:
        raise BundleError(
            f"bundle {d.name} was built with feature code version {spec.get('code_version')}, this "
            f"worker runs version {FEATURE_CODE_VERSION}; retrain or deploy a matching worker"
        )
    ours = FeatureSpec.from_dict(spec).hash()
    if ours != manifest["feature_spec_hash"]:
        raise BundleError(
            f"bundle {d.name}: feature spec hash {manifest['feature_spec_hash'][:12]}... does not "
            f"match this feature code ({ours[:12]}...); retrain or deploy a matching worker"
        )
    recorded = manifest.get("hashes", {}).get("manifest")
    if recorded is None:
        raise BundleError(
            f"bundle {d.name}: its manifest carries no content hash (hashes.manifest), so the numbers "
            f"in it cannot be checked; re-export it with this trainer"
        )
    actual = manifest_digest(manifest)
    if actual != recorded:
        raise BundleError(
            f"bundle {d.name}: manifest.json was modified after export (content hash {actual[:12]}..., "
            f"recorded {recorded[:12]}...): a changed scaler, centre, threshold or model version would "
            f"serve wrong regimes or ids; re-export the bundle"
        )
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A verified bundle's plain data (no ONNX sessions here: the trainer and the worker open those)."""

    path: Path
    manifest: dict
    spec: FeatureSpec
    scaler: Scaler
    emb_mean: np.ndarray
    emb_std: np.ndarray
    centroids: np.ndarray
    classifier: KNNClassifier

    @property
    def version(self) -> str:
        return self.manifest["model_version"]

    @property
    def window_size(self) -> int:
        return int(self.manifest["window_size"])

    @property
    def stride(self) -> int:
        return int(self.manifest["stride"])

    @property
    def history_bars(self) -> int:
        return int(self.manifest["history_bars"])

    @property
    def input_length(self) -> int:
        return int(self.manifest["forecaster"]["input_length"])

    @property
    def n_clusters(self) -> int:
        return int(self.manifest["n_clusters"])

    @property
    def regime_names(self) -> tuple[str, ...]:
        """Descriptive name of each regime id (manifest regime_profiles[*].name, or computed from the profiles
        for bundles written before names: regimetry/naming.py)."""
        from regimetry.naming import manifest_names

        return manifest_names(self.manifest)

    def onnx_path(self, part: str) -> Path:
        return self.path / self.manifest["onnx"][part]["file"]


def load_bundle(path: str | Path, public_key: str | Path | None = None) -> Bundle:
    """Verify (and check its signature, given a public key), then load the plain-array parts of a bundle."""
    d = resolve_bundle_dir(path)
    m = verify_bundle(d, public_key)
    emb = m["embedding_scaler"]
    return Bundle(
        path=d,
        manifest=m,
        spec=FeatureSpec.from_dict(m["feature_spec"]),
        scaler=Scaler.from_dict(m["feature_scaler"]),
        emb_mean=np.asarray(emb["mean"], dtype=np.float64),
        emb_std=np.asarray(emb["std"], dtype=np.float64),
        centroids=np.asarray(m["centroids"], dtype=np.float64),
        classifier=KNNClassifier.load(d / m["classifier"]["file"]),
    )
