"""`regimetry train` (its score tables are regimetry/evaluate_cli.py's, shared with `regimetry evaluate`)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from regimetry.console import console, fail, stage_progress
from regimetry.evaluate_cli import print_summary


def _overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"--set takes KEY=VALUE (e.g. encoder.epochs=4), got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def name_from_data(data: str) -> str:
    """Bundle name for bars given by --data: 'eurusd', 'synthetic', or the file's stem made folder-safe."""
    d = str(data).strip()
    if d.lower() == "eurusd":
        return "eurusd"
    if d.lower().startswith("synthetic"):
        return "synthetic"
    stem = re.sub(r"[^a-z0-9._-]+", "-", Path(d).stem.lower()).strip("-._")[:100]
    return stem or "bars"


def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML training profile; defaults fill the rest."),
    data: list[str] = typer.Option(
        [],
        help="'eurusd', 'goog', 'btcusd', 'sp500', 'synthetic', a CSV/parquet path (a 'symbol' column makes one "
        "series per symbol), a folder of them, archive:DIR or archive:DIR#SYMBOL; repeat it or give a comma list "
        "to train one model on a universe of symbols.",
    ),
    symbols: str | None = typer.Option(
        None, help="Comma list: train on these symbols of --data only (e.g. EURUSD,GOOG); default every one."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Models root (default exported_models)."),
    seed: int | None = typer.Option(None, help="Random seed."),
    name: str | None = typer.Option(
        None,
        help="Bundle name prefix (NAME-<hash>); default: from the data "
        "when --data is given (file stem, 'synthetic'), else the profile's.",
    ),
    set_: list[str] = typer.Option([], "--set", help="Override one option, e.g. --set forecaster.name=stratum_attn"),
) -> None:
    """Train encoder, regimes and forecaster on historical bars and export an ONNX bundle."""
    from trainer.config import TrainConfig, load_config

    ov = _overrides(set_)
    if data:
        ov["data"] = ",".join(d.strip() for d in data if d.strip())
    if symbols:
        ov["symbols"] = [x.strip() for x in symbols.split(",") if x.strip()]
    if output:
        ov["output_dir"] = str(output)
    if seed is not None:
        ov["seed"] = seed
    if name is not None:
        ov["name"] = name
    try:
        cfg = load_config(config, ov)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if name is None and data and "name" not in ov and cfg.name == TrainConfig().name:
        # the default name says 'eurusd'; a bundle trained on other bars must not be called that
        cfg.name = name_from_data(cfg.data)
    if not NAME_RE.match(str(cfg.name)):
        fail(
            f"bundle name {cfg.name!r} must be 1-100 characters of letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it becomes the bundle's folder name)"
        )
    console.print(
        f"[bold]regimetry train[/] name={cfg.name} data={cfg.data} seed={cfg.seed} window={cfg.window_size} "
        f"k={cfg.clustering.n_clusters} forecaster={cfg.forecaster.name}"
    )
    with stage_progress() as progress:
        from regimetry.data import BarDataError
        from trainer.pipeline import train

        try:
            result = train(cfg, progress=progress)
        except BarDataError as exc:
            fail(str(exc))
        except ValueError as exc:  # a symbol too short for one window, too few windows in all
            if not str(exc).startswith(("only ", "no training window")) and "too few for one window" not in str(exc):
                raise
            fail(str(exc))
    print_summary(result.summary, result.bundle_dir)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
