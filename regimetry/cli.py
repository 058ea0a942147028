"""The `regimetry` command. Each installed part registers its own sub-commands; a part that is not installed
(the worker image has no trainer/) or lacks its heavy dependency (TensorFlow for the trainer) is not listed, so
every command `regimetry --help` shows works; naming one of its commands anyway says what to install.

Every command imports its heavy half (TensorFlow for the trainer, Faust/ONNX Runtime for the worker) only when
it runs, so `regimetry worker` or `regimetry replay` never load TensorFlow."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Market regimes: train, search, serve, watch.",
)

# (module exposing register(app: typer.Typer), distributions it needs to run, the extra that installs them), in
# help order; each module must stay import-light.
COMMAND_MODULES = [
    ("trainer.cli", ("tensorflow",), "train"),
    ("regimetry.evaluate_cli", ("onnxruntime",), "worker"),
    ("trainer.research_cli", ("tensorflow",), "train"),
    ("worker.cli", ("faust", "onnxruntime"), "worker"),
    ("archive.cli", ("aiokafka", "pyarrow"), "archive"),
    ("ops.cli", ("kafka",), "worker"),
    ("regimetry.signing_cli", ("cryptography",), "worker"),
]


def _present(name: str) -> bool:
    if sys.modules.get(name) is not None:  # imported already (faust replaces its module: no __spec__ to find)
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):  # a parent package missing, or blocked
        return False


def installed_parts() -> list[str]:
    """The command modules whose part (top-level package) and dependencies are installed. A part that is
    present but fails to import (a bug, a missing dependency inside it) raises: only absence is silent."""
    return [name for name, needs, _ in COMMAND_MODULES if _usable(name, needs)]


def _usable(name: str, needs: tuple[str, ...]) -> bool:
    if not all(_present(n) for n in needs):
        return False
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0]:
            raise
        return False
    return True


def _register() -> None:
    for name, needs, extra in COMMAND_MODULES:
        if _usable(name, needs):
            importlib.import_module(name).register(app)
        elif _present(name.split(".")[0]):  # the part is there, its dependency is not: say so when named
            _register_missing(name, needs, extra)


def _register_missing(name: str, needs: tuple[str, ...], extra: str) -> None:
    """Hidden stand-ins for the commands of a part whose dependencies are missing."""
    scratch = typer.Typer()
    try:
        importlib.import_module(name).register(scratch)
    except ModuleNotFoundError:
        return
    missing = ", ".join(n for n in needs if not _present(n))
    for info in scratch.registered_commands:
        command = info.name or (info.callback.__name__ if info.callback else "")

        def stand_in(command: str = command) -> None:
            typer.echo(
                f"regimetry {command}: needs {missing}, not installed here: pip install 'regimetry-stream[{extra}]' "
                f"(or EXTRAS={extra},... bash scripts/setup.sh)",
                err=True,
            )
            raise typer.Exit(2)

        app.command(command, hidden=True, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})(
            _ignore_arguments(stand_in)
        )


def _ignore_arguments(fn):
    def wrapper(ctx: typer.Context) -> None:
        fn()

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
