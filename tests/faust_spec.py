"""A fixture for test modules that import faust in the pytest process.

Importing faust replaces its module with a lazy one whose ``__spec__`` is None; afterwards
``importlib.util.find_spec("faust")`` raises ValueError, which regimetry.cli's check for installed parts
catches as "faust not installed", so every later CLI test in the process would see the worker's commands as
missing. The fixture gives the module its spec back when the test module is done.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest


@pytest.fixture(autouse=True, scope="module")
def faust_keeps_its_spec():
    spec = importlib.util.find_spec("faust") if "faust" not in sys.modules else None
    yield
    module = sys.modules.get("faust")
    if spec is not None and module is not None and getattr(module, "__spec__", None) is None:
        module.__spec__ = spec
