"""The `regimetry` command. Each sub-command imports its heavy half (trainer or worker) only when run, so
`regimetry replay` or `regimetry worker` never load TensorFlow."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Market regimes: train, serve, watch.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
