"""`regimetry train` and `regimetry evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from regimetry.console import console, fail, stage_progress


def _overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"--set takes KEY=VALUE (e.g. encoder.epochs=4), got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML training profile; defaults fill the rest."),
    data: Optional[str] = typer.Option(None, help="'eurusd', 'synthetic' or a CSV/parquet path."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Models root (default exported_models)."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    set_: list[str] = typer.Option([], "--set", help="Override one option, e.g. --set forecaster.name=stratum_attn"),
) -> None:
    """Train encoder, regimes and forecaster on historical bars and export an ONNX bundle."""
    from trainer.config import load_config

    ov = _overrides(set_)
    if data:
        ov["data"] = data
    if output:
        ov["output_dir"] = str(output)
    if seed is not None:
        ov["seed"] = seed
    try:
        cfg = load_config(config, ov)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    console.print(f"[bold]regimetry train[/] data={cfg.data} seed={cfg.seed} window={cfg.window_size} "
                  f"k={cfg.clustering.n_clusters} forecaster={cfg.forecaster.name}")
    with stage_progress() as progress:
        from trainer.pipeline import train
        from regimetry.data import BarDataError

        try:
            result = train(cfg, progress=progress)
        except BarDataError as exc:
            fail(str(exc))
    print_summary(result.summary, result.bundle_dir)


def print_summary(summary: dict, bundle_dir: Path | None = None) -> None:
    from rich.table import Table

    nr = summary.get("next_regime")
    if nr:
        t = Table(title="Next-regime forecast (held-out split when training)")
        t.add_column("model")
        for col in ("accuracy", "macro-F1", "acc. on changes", "F1 on changes"):
            t.add_column(col, justify="right")
        for name in ("forecaster", "persistence", "markov"):
            a, c = nr["all_steps"][name], nr["change_steps"][name]
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            t.add_row(name, fmt(a["accuracy"]), fmt(a["macro_f1"]), fmt(c["accuracy"]), fmt(c["macro_f1"]))
        console.print(t)
        style = "green" if nr["forecaster_beats_baselines"] else "yellow"
        console.print(f"[{style}]{nr['verdict']}[/]")
    if "forecaster" in summary:
        fe = summary["forecaster"]
        console.print(f"embedding forecast held out: MSE {fe['held_out']['mse']:.4f} (persistence "
                      f"{fe['persistence_held_out']['mse']:.4f}), cosine {fe['held_out']['cosine']:.3f}")
    cl = summary.get("clustering")
    if cl:
        console.print("regimes: " + ", ".join(f"{k} {v:.3f}" for k, v in cl.items() if isinstance(v, float)))
    if "planted_regimes" in summary:
        pr = summary["planted_regimes"]
        console.print(f"planted-regime recovery (ARI): regimetry {pr['ari_regimetry']:.3f}, Gaussian HMM "
                      f"{pr['ari_hmm'] if pr['ari_hmm'] is None else round(pr['ari_hmm'], 3)}")
    if bundle_dir:
        console.print(f"[bold green]bundle written:[/] {bundle_dir}")


def evaluate_cmd(
    bundle: Path = typer.Option(Path("exported_models"), help="Bundle folder or models root with CURRENT."),
    data: str = typer.Option("eurusd", help="'eurusd', 'synthetic' or a CSV/parquet path."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the scores as JSON here."),
) -> None:
    """Re-score a bundle on bars with ONNX Runtime only (no TensorFlow): regimes, forecast vs baselines, drift."""
    from regimetry.bundle import BundleError
    from regimetry.data import BarDataError
    from regimetry.scoring import score_bundle

    try:
        scores = score_bundle(bundle, data)
    except (BundleError, BarDataError) as exc:
        fail(str(exc))
    print_summary(scores)
    console.print("drift vs training baseline: " + ", ".join(f"{k} {v:.3f}" for k, v in scores["drift"].items()))
    if output:
        output.write_text(json.dumps(scores, indent=2))
        console.print(f"scores written to {output}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
