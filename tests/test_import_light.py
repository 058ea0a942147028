"""The serving side must work on a machine without TensorFlow, scikit-learn or the trainer (the worker image,
`EXTRAS=worker,dev`): those are made absent in a subprocess and everything the serving side uses is imported
and run."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    BLOCKED = ("tensorflow", "keras", "tf2onnx", "tf_keras", "sklearn", "trainer")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BLOCKED:  # as if not installed: the error an absent package raises
                raise ModuleNotFoundError(f"No module named {top!r} (blocked in this test)", name=top)
    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_blocker_really_blocks():
    for mod in ("tensorflow", "sklearn.metrics", "trainer.cli"):
        r = run_blocked(f"import {mod}")
        assert r.returncode != 0 and "blocked" in r.stderr, mod


def test_shared_core_imports_without_tensorflow():
    r = run_blocked(
        """
        import regimetry.features, regimetry.classify, regimetry.bundle, regimetry.inference
        import regimetry.diagnostics, regimetry.scoring, regimetry.synthetic, regimetry.data
        import sys
        assert not any(m.split(".")[0] in ("tensorflow", "keras", "sklearn", "trainer") for m in sys.modules), sorted(
            sys.modules
        )
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def run_cli_blocked(*args: str) -> subprocess.CompletedProcess:
    """`regimetry ARGS` with TensorFlow, scikit-learn and trainer/ absent; fails if any got imported anyway."""
    return run_blocked(
        f"""
        import sys
        sys.argv = ["regimetry", *{list(args)!r}]
        from regimetry.cli import main
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert not {{"tensorflow", "sklearn", "trainer"}} & {{m.split(".")[0] for m in sys.modules}}
        """
    )


EVERY_COMMAND_HELP = textwrap.dedent(
    """
    import sys
    from typer.main import get_command
    from regimetry import cli
    cli._register()
    group = get_command(cli.app)
    names = sorted(group.commands)
    print("COMMANDS", " ".join(names))
    for name in names:
        try:
            group.main([name, "--help"], prog_name="regimetry", standalone_mode=False)
        except SystemExit as e:
            assert e.code in (0, None), (name, e.code)
"""
)


def test_cli_lists_only_the_parts_installed():
    r = run_cli_blocked("--help")
    assert r.returncode == 0, r.stderr
    for present in ("evaluate", "worker", "predict", "replay", "tail", "topics", "demo"):
        assert present in r.stdout, present
    for absent in ("train ", "search", "refresh", "lock "):  # trainer/ is not installed here
        assert f"│ {absent}" not in r.stdout, absent


def test_every_listed_command_has_working_help_without_the_trainer():
    r = run_blocked(
        EVERY_COMMAND_HELP
        + "\nassert not {'tensorflow', 'sklearn', 'trainer'} & set(map(lambda m: m.split('.')[0], sys.modules))\n"
    )
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("COMMANDS", 1)[1].split("\n", 1)[0].split()
    assert {"evaluate", "worker", "predict", "replay", "tail", "report-events", "topics", "demo"} <= set(listed)
    assert "train" not in listed
    assert r.stdout.count("Usage: regimetry") == len(listed)
    for option in ("--speed", "--transitions-only", "--since", "--bars-partitions", "--summary-json"):
        assert option in r.stdout


def test_every_command_has_working_help_with_every_part():
    r = subprocess.run([sys.executable, "-c", EVERY_COMMAND_HELP], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("COMMANDS", 1)[1].split("\n", 1)[0].split()
    assert {"train", "search", "lock", "refresh", "report", "evaluate", "worker"} <= set(listed)
    assert r.stdout.count("Usage: regimetry") == len(listed)


def test_a_broken_part_is_not_mistaken_for_an_absent_one():
    r = run_blocked(
        """
        import sys, importlib.abc
        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "worker.cli":
                    raise ModuleNotFoundError("No module named 'faust'", name="faust")
        sys.meta_path.insert(0, Broken())
        from regimetry import cli
        try:
            cli.installed_parts()
        except ModuleNotFoundError as e:
            print("raised", e.name)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "raised faust" in r.stdout


def test_evaluate_runs_on_onnx_runtime_only(tiny_bundle, tmp_path):
    out = tmp_path / "scores.json"
    r = run_cli_blocked("evaluate", "--bundle", str(tiny_bundle), "--data", "synthetic", "-o", str(out))
    assert r.returncode == 0, r.stderr
    import json

    scores = json.loads(out.read_text())
    assert {"psi", "jensen_shannon", "transition_shift", "ood_share"} <= set(scores["drift"])
    assert scores["next_regime"]["all_steps"]["persistence"]["n"] > 100


def test_a_part_without_its_dependency_is_unlisted_and_says_what_to_install():
    """trainer/ present (a source checkout) but TensorFlow absent: `train` is not listed, and naming it says
    which extra installs it instead of a traceback."""
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top in ("tensorflow", "keras", "tf2onnx"):
                    raise ModuleNotFoundError(f"No module named {top!r} (blocked)", name=top)
        sys.meta_path.insert(0, Block())
        from regimetry import cli
        sys.argv = ["regimetry", *sys.argv[1:]]
        cli.main()
        """
    )
    listed = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "│ evaluate" in listed.stdout and "│ train " not in listed.stdout and "│ refresh " not in listed.stdout
    named = subprocess.run([sys.executable, "-c", code, "train", "--data", "x"], capture_output=True, text=True)
    assert named.returncode == 2
    assert "needs tensorflow" in named.stderr and "regimetry-stream[train]" in named.stderr
