"""Nothing the embedded stack starts outlives the Python process that started it (issue 14, defect 7): a test
or the demo that fails on any path, or is interrupted before a child was handed to anything that would stop
it, still leaves no Redis, Tansu or worker behind (devstack.stack: every child is killed at exit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import gone

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ending", ["raise RuntimeError('a failing test')", "raise KeyboardInterrupt"])
def test_children_die_with_the_process_that_started_them(tmp_path, ending):
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from devstack.stack import start_redis
        proc = start_redis(Path({str(tmp_path)!r}))
        print(proc.pid, flush=True)
        {ending}
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pid = int(done.stdout.split()[0])
    assert done.returncode != 0 and gone(pid), f"redis-server {pid} outlived its parent: {done.stderr[-500:]}"
