"""The package lines hold: each part imports only the parts below it (every import statement, function-level
ones included, read from the sources with ast, so a lazy import cannot hide a crossing)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("regimetry", "connect", "worker", "archive", "ops", "devstack", "trainer")
# part -> the first-party parts it may import (besides itself)
ALLOWED = {
    "regimetry": set(),  # the light core: numpy/scipy/jsonschema/onnxruntime only
    "connect": set(),  # connection settings shared by the worker and the tools; owned by neither
    "worker": {"regimetry", "connect"},
    "archive": {"regimetry", "connect", "worker"},  # worker.validate: the worker's own bar checks, not a copy
    "ops": {"regimetry", "connect", "devstack"},  # devstack: `regimetry demo` starts the embedded stack
    "devstack": {"regimetry"},  # starts the worker as a process, never imports it
    "trainer": {"regimetry"},
}
NEVER_IN_SERVING = {"tensorflow", "keras", "tf2onnx", "sklearn", "pickle", "joblib"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def graph() -> dict[Path, set[str]]:
    return {p: imports_of(p) for part in PARTS for p in sorted((ROOT / part).rglob("*.py"))}


def test_every_part_is_scanned():
    parts = {p.relative_to(ROOT).parts[0] for p in graph()}
    assert parts == set(PARTS)


def test_no_import_crosses_the_package_lines():
    crossings = []
    for path, mods in graph().items():
        part = path.relative_to(ROOT).parts[0]
        for mod in mods & set(PARTS) - {part} - ALLOWED[part]:
            crossings.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not crossings, "\n".join(crossings)


def test_serving_parts_never_import_tensorflow_sklearn_or_pickle():
    found = [
        f"{path.relative_to(ROOT)} imports {mod}"
        for path, mods in graph().items()
        if path.relative_to(ROOT).parts[0] in ("regimetry", "connect", "worker", "archive", "ops")
        for mod in mods & NEVER_IN_SERVING
    ]
    assert not found, "\n".join(found)


def test_the_scan_sees_a_crossing(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from trainer.pipeline import train\n    import sklearn.metrics\n")
    assert imports_of(bad) == {"trainer", "sklearn"}
