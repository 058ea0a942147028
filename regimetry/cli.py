"""The `regimetry` command. Each part registers its own sub-commands; every command imports its heavy half
(TensorFlow for the trainer, Faust/ONNX Runtime for the worker) only when it runs, so `regimetry worker` or
`regimetry replay` never load TensorFlow."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Market regimes: train, search, serve, watch.",
)

# Modules exposing register(app: typer.Typer); each must stay import-light.
COMMAND_MODULES = ["trainer.cli", "worker.cli", "regimetry.ops.cli", "trainer.research_cli"]


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
