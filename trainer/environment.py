"""The software a model or a benchmark result was made with, against the versions constraints.txt pins.

A different numpy, TensorFlow or scikit-learn trains a different model from the same seed, so the committed
bundle and benchmark results reproduce only on the pinned stack: the manifest and the benchmarks' JSON record
``library_versions()``, and the benchmarks say which versions differ from the pins (``unpinned``).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the libraries that shape a trained model and the regime benchmark's figures (each pinned in constraints.txt)
LIBRARIES = (
    "numpy",
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "scipy",
    "hmmlearn",
    "jumpmodels",
    "pandas",
)


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``ml_dtypes`` == ``ML-dtypes``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def library_versions() -> dict[str, str]:
    """The installed version of each of LIBRARIES (absent ones left out), and Python's."""
    out = {}
    for pkg in LIBRARIES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def pinned_versions(path: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """constraints.txt's ``name==version`` lines, names normalised; {} outside a checkout."""
    pins = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (x.strip() for x in line.split("==", 1))
            pins[normalise(name)] = version
    return pins


def unpinned(found: dict[str, str], pins: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{library: (installed, pinned)} for every recorded library whose installed version is not its pin."""
    return {k: (v, pins[normalise(k)]) for k, v in found.items() if pins.get(normalise(k), v) != v}
