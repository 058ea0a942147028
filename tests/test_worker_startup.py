"""Start-up checks: the worker refuses a bundle it cannot trust, with a clear message and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker.app import EXIT_BAD_BUNDLE


def start(bundle: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "REGIMETRY_BUNDLE": str(bundle),
        "REGIMETRY_METRICS_PORT": "0",
        "REGIMETRY_BROKER_URL": "kafka://127.0.0.1:1",
        "REGIMETRY_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    return subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / tiny_bundle.name))


def test_refuses_tampered_file(bundle_copy):
    with open(bundle_copy / "forecaster.onnx", "ab") as f:
        f.write(b"\0")
    r = start(bundle_copy)
    assert r.returncode == EXIT_BAD_BUNDLE
    assert "refusing to start" in r.stderr and "sha256 of forecaster.onnx" in r.stderr


def test_refuses_missing_file(bundle_copy):
    (bundle_copy / "classifier.npz").unlink()
    r = start(bundle_copy)
    assert r.returncode == EXIT_BAD_BUNDLE and "classifier.npz" in r.stderr and "missing" in r.stderr


def test_refuses_an_edited_manifest(bundle_copy):
    """A changed scaler mean under the same model version would serve wrong regimes: refused with exit 2."""
    path = bundle_copy / "manifest.json"
    m = json.loads(path.read_text())
    m["feature_scaler"]["mean"][1] += 0.001
    path.write_text(json.dumps(m))
    r = start(bundle_copy)
    assert r.returncode == EXIT_BAD_BUNDLE and "modified after export" in r.stderr


def test_refuses_other_feature_spec(bundle_copy):
    path = bundle_copy / "manifest.json"
    m = json.loads(path.read_text())
    m["feature_spec"]["momentum"] = m["feature_spec"].get("momentum", 10) + 1
    path.write_text(json.dumps(m))
    r = start(bundle_copy)
    assert r.returncode == EXIT_BAD_BUNDLE and "feature spec hash" in r.stderr


def test_unreachable_broker_gives_clear_error_and_exit_code(tiny_bundle):
    """No broker at start: retried with back-off for REGIMETRY_STARTUP_TIMEOUT, then exit 3 with one clear
    line for the supervisor; the Redis password in the URL never reaches the output."""
    from worker.preflight import EXIT_BROKER_UNREACHABLE

    env = {
        **os.environ,
        "REGIMETRY_BUNDLE": str(tiny_bundle),
        "REGIMETRY_METRICS_PORT": "0",
        "REGIMETRY_STARTUP_TIMEOUT": "2",
        "REGIMETRY_BROKER_URL": "kafka://127.0.0.1:1",
        "REGIMETRY_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0",
    }
    r = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_BROKER_UNREACHABLE, r.stderr[-2000:]
    assert "Kafka broker kafka://127.0.0.1:1 unreachable after" in r.stderr
    assert "not reachable yet" in r.stderr  # the retries are logged
    assert "hunter2" not in r.stderr + r.stdout
