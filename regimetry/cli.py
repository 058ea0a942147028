"""The `regimetry` command. Each installed part registers its own sub-commands; a part that is not installed
(the worker image has no trainer/, a trainer image no worker/) is left out, so every command listed works.

Every command imports its heavy half (TensorFlow for the trainer, Faust/ONNX Runtime for the worker) only when
it runs, so `regimetry worker` or `regimetry replay` never load TensorFlow."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Market regimes: train, search, serve, watch.",
)

# Modules exposing register(app: typer.Typer), in help order; each must stay import-light.
COMMAND_MODULES = [
    "trainer.cli",
    "regimetry.evaluate_cli",
    "trainer.research_cli",
    "worker.cli",
    "archive.cli",
    "ops.cli",
]


def installed_parts() -> list[str]:
    """The command modules whose part (top-level package) is installed. A part that is present but fails to
    import (a bug, a missing dependency inside it) raises: only absence is silent."""
    out = []
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name.split(".")[0]:
                raise
            continue
        out.append(name)
    return out


def _register() -> None:
    for name in installed_parts():
        importlib.import_module(name).register(app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
