"""`regimetry demo` end to end, with TensorFlow blocked: embedded broker, Redis and worker start, a slice of the
EURUSD sample is replayed, the summary is right, and every process the demo started is gone afterwards, also
when the demo is interrupted with Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import BLOCKER, gone

pytestmark = pytest.mark.slow
BARS = 250


def demo_process(*args: str) -> subprocess.Popen:
    code = BLOCKER + textwrap.dedent(f"""
        import sys
        sys.argv = ["regimetry", "demo", *{list(args)!r}]
        from regimetry.cli import main
        try:
            main()
        finally:
            assert "tensorflow" not in sys.modules
        """)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )


def started_pids(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)\)|worker pid (\d+)", text) for p in p if p]


def test_demo_runs_end_to_end_and_cleans_up(tmp_path):
    from ops.demo import BAD_BARS_EXPECTED
    from regimetry.bundle import load_bundle

    out = tmp_path / "summary.json"
    proc = demo_process("--bars", str(BARS), "--summary-json", str(out), "--show", "all")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    s = json.loads(out.read_text())
    bundle = load_bundle(Path(__file__).resolve().parents[1] / "exported_models")
    expected = BARS - bundle.history_bars + 1
    assert s["model_version"] == bundle.version
    assert s["events"] == s["expected_events"] == expected
    assert s["batch_reference_agreement"] == {"equal": expected, "of": expected}
    assert s["dlq"] == BAD_BARS_EXPECTED
    assert set(s["drift"]) == {"psi", "js", "transition_shift", "hit_rate", "mean_confidence", "ood_share"}
    assert abs(sum(s["regime_shares"].values()) - 1.0) < 1e-9
    # fewer events than the worker's drift horizon: its gauges cover exactly the events the demo received
    assert s["drift_horizon_events"] == expected
    assert s["whole_run"]["psi"] == pytest.approx(s["drift"]["psi"], abs=1e-9)
    assert s["whole_run"]["js"] == pytest.approx(s["drift"]["js"], abs=1e-9)
    # --show all printed one line per event; transitions counted from the events themselves
    event_lines = [ln for ln in stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+EURUSD", ln)]
    assert len(event_lines) == expected
    assert s["transitions"] == sum("<-" in ln for ln in event_lines)
    # every event row names its regime as the bundle does; the summary's share table too
    names = bundle.regime_names
    assert s["regime_names"] == {str(i): n for i, n in enumerate(names)}
    for ln in event_lines:
        rid = int(re.search(r"EURUSD\s+(\d+) ", ln).group(1))
        assert f" {rid} {names[rid]} " in ln, ln
    table = stdout.splitlines()
    assert all(any(f" {i} " in ln and f" {n} " in ln for ln in table) for i, n in enumerate(names)), stdout
    assert "regimetry demo: summary" in stdout and "dead letters by reason" in stdout
    assert [r["event"] for r in s["audit_log"]] == ["model_loaded"] and s["audit_log"][0][
        "model_version"
    ] == bundle.version
    for name, pid in s["processes"].items():
        assert gone(pid), f"{name} (pid {pid}) still running after the demo"


def test_demo_stops_everything_on_ctrl_c(tmp_path):
    proc = demo_process("--bars", "5000", "--rate", "50", "--workdir", str(tmp_path / "work"))
    seen = ""
    deadline = time.monotonic() + 120
    try:
        while "started worker pid" not in seen:  # wait for the condition, with a deadline
            assert time.monotonic() < deadline, seen
            line = proc.stderr.readline()
            assert line or proc.poll() is None, seen
            seen += line
        pids = started_pids(seen)
        assert len(pids) == 3, seen
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in started_pids(seen):  # whatever happened above, nothing the demo started outlives the test
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, rest[-2000:]
    assert "interrupted" in rest
    assert all(gone(pid) for pid in pids), pids
