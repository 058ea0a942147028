"""The serving side must work on a machine without TensorFlow: block it and import everything it uses."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    BLOCKED = ("tensorflow", "keras", "tf2onnx", "tf_keras")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_blocker_really_blocks():
    r = run_blocked("import tensorflow")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_shared_core_imports_without_tensorflow():
    r = run_blocked(
        """
        import regimetry.features, regimetry.classify, regimetry.bundle, regimetry.inference
        import regimetry.diagnostics, regimetry.scoring, regimetry.synthetic, regimetry.data
        import sys
        assert not any(m.split(".")[0] in ("tensorflow", "keras", "trainer") for m in sys.modules), sorted(sys.modules)
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def run_cli_blocked(*args: str) -> subprocess.CompletedProcess:
    """`regimetry ARGS` in a process where TensorFlow cannot be imported; fails if it got imported anyway."""
    return run_blocked(
        f"""
        import sys
        sys.argv = ["regimetry", *{list(args)!r}]
        from regimetry.cli import main
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert "tensorflow" not in sys.modules
        """
    )


def test_cli_starts_without_tensorflow():
    r = run_cli_blocked("--help")
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and "evaluate" in r.stdout


def test_evaluate_runs_on_onnx_runtime_only(tiny_bundle, tmp_path):
    out = tmp_path / "scores.json"
    r = run_cli_blocked("evaluate", "--bundle", str(tiny_bundle), "--data", "synthetic", "-o", str(out))
    assert r.returncode == 0, r.stderr
    import json

    scores = json.loads(out.read_text())
    assert {"psi", "jensen_shannon", "transition_shift", "ood_share"} <= set(scores["drift"])
    assert scores["next_regime"]["all_steps"]["persistence"]["n"] > 100


def test_operator_commands_start_without_tensorflow():
    r = run_blocked(
        """
        import sys
        import ops.cli, ops.demo, ops.replay, ops.tail
        import ops.event_report, ops.topics, ops.kafka, regimetry.audit
        from regimetry.cli import main
        for cmd in ("replay", "tail", "report-events", "topics", "demo"):
            sys.argv = ["regimetry", cmd, "--help"]
            try:
                main()
            except SystemExit as e:
                assert e.code in (0, None), (cmd, e.code)
        assert not any(m.split(".")[0] in ("tensorflow", "keras", "trainer.pipeline") for m in sys.modules)
        """
    )
    assert r.returncode == 0, r.stderr
    for option in ("--speed", "--transitions-only", "--since", "--bars-partitions", "--summary-json"):
        assert option in r.stdout
