"""The habits CI keeps: ruff (lint and format) and mypy on the packages, configured in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def ruff() -> str:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: bash scripts/setup.sh installs the dev extra")
    return exe


def test_ruff_lint_passes():
    r = run(ruff(), "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = run(ruff(), "format", "--check", ".")
    assert r.returncode == 0, "run `ruff format .`:\n" + r.stdout + r.stderr


def test_mypy_passes_on_the_packages():
    r = run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
