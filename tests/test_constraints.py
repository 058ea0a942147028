"""constraints.txt, the pinned numeric and training stack, stays installable and covers what shapes the results.

scripts/setup.sh installs with ``-c constraints.txt`` so that CI, a fresh machine and the next session train the
models the committed benchmark results came from. A pin outside pyproject.toml's range would make setup fail on
a fresh machine; a library the manifest and the benchmarks record but nobody pinned would let the figures drift.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from trainer.environment import LIBRARIES, pinned_versions

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for group in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in group if not r.startswith("regimetry-stream")]
    return reqs


def test_every_pin_is_inside_the_project_ranges():
    pins = {canonicalize_name(k): v for k, v in pinned_versions().items()}
    assert pins, "constraints.txt has no name==version line"
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {req}"
            )


def test_every_recorded_library_is_pinned():
    pins = {canonicalize_name(k) for k in pinned_versions()}
    missing = [lib for lib in LIBRARIES if canonicalize_name(lib) not in pins]
    assert not missing, f"recorded in the manifest and the benchmarks' JSON but not pinned: {missing}"


def test_setup_installs_with_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "constraints.txt" in setup and '"${pin[@]}"' in setup


def test_unpinned_names_each_library_off_its_pin_whatever_its_spelling():
    from trainer.environment import unpinned

    pins = {"ml-dtypes": "0.7.0", "numpy": "2.4.6"}
    assert unpinned({"ml_dtypes": "0.7.0", "numpy": "2.4.6", "python": "3.11.7"}, pins) == {}
    assert unpinned({"ML_dtypes": "0.8.0", "numpy": "2.4.6"}, pins) == {"ML_dtypes": ("0.8.0", "0.7.0")}
