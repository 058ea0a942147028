"""The researcher's commands: `regimetry search`, `report`, `lock` and `refresh`.

Thin wrappers: parse options, call the module that does the work, print. Heavy imports (TensorFlow,
matplotlib, scikit-learn) happen inside the commands so `regimetry --help` stays instant.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import typer

from regimetry.console import console, fail


def search_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="search.yaml: base profile, grid, output, workers."),
    workers: int | None = typer.Option(None, help="Candidate processes at once (overrides the file)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder (overrides the file)."),
) -> None:
    """Train and score every configuration of a grid; rank them; write ranking.csv, shortlist.json and
    best_config.yaml. Rerun the same command to resume an interrupted search."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from trainer.search import run_search
    from trainer.search_spec import load_search

    try:
        spec = load_search(config)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if workers is not None:
        spec.workers = workers
    if output is not None:
        spec.output = output
    bar = Progress(
        TextColumn("[bold]candidates"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    )
    task: TaskID | None = None

    def on_start(todo: int, done: int) -> None:
        nonlocal task
        console.print(
            f"[bold]regimetry search[/] {todo + done} candidates: {done} already finished, {todo} to "
            f"train with {spec.workers} worker(s); records in {spec.output / 'candidates'}"
        )
        task = bar.add_task("", total=todo + done)

    def on_done(record: dict, how: str) -> None:
        style = {"trained": "green", "skipped": "dim", "failed": "red"}[how]
        assert task is not None, "on_start comes first"
        bar.update(task, advance=1, description=f"[{style}]{how}[/] {record['id']}")
        if how == "failed":
            console.print(f"[red]candidate {record['id']} failed:[/] {record['error'].splitlines()[0]}")

    with bar:
        outcome = run_search(spec, on_start, on_done)
    for bad in outcome.invalid:
        console.print(f"[yellow]skipped invalid combination[/] {bad['params']}: {bad['error']}")
    print_ranking(outcome.ranking, spec.shortlist)
    console.print(
        f"trained {len(outcome.trained)}, resumed {len(outcome.skipped)}, failed {len(outcome.failed)}; "
        f"wrote {spec.output / 'ranking.csv'}, {spec.output / 'shortlist.json'}"
        + (
            f", [bold]{spec.output / 'best_config.yaml'}[/]"
            if any(r["status"] == "ok" for r in outcome.ranking)
            else ""
        )
    )
    if not any(r["status"] == "ok" for r in outcome.ranking):
        fail("no candidate finished", code=1)


def print_ranking(ranking: list[dict], highlight: int) -> None:
    """Ranked table; only the gridded options that vary get a column (the fixed ones are listed above it)."""
    from rich.table import Table

    if not ranking:
        return
    params = list(ranking[0]["params"])
    varying = [p for p in params if len({str(r["params"][p]) for r in ranking}) > 1]
    fixed = ", ".join(f"{p}={ranking[0]['params'][p]}" for p in params if p not in varying)
    t = Table(
        title="Candidates ranked by composite score (trainer/scorecard.py)",
        caption=f"same for all: {fixed}" if fixed else None,
    )
    heads = [
        "#",
        "id",
        *[SHORT_HEADS.get(p, p) for p in varying],
        "score",
        "inform.",
        "stab.",
        "pers.",
        "steady",
        "sep.",
        "bal.",
        "bars",
    ]
    for col in heads:
        t.add_column(col, justify="left" if col == "id" else "right", no_wrap=True)
    for r in ranking:
        s, m = r["score"], r["metrics"]
        cells = [str(r["rank"]), r["id"], *[str(r["params"][p]) for p in varying]]
        if s is None:
            t.add_row(*cells, "[red]failed[/]")
            continue
        style = "bold green" if r["rank"] == 1 else ("" if r["rank"] <= highlight else "dim")
        t.add_row(
            *cells,
            f"{s['composite']:.3f}",
            f"{s['informative']:.3f}",
            f"{s['stability']:.3f}",
            f"{s['persistence']:.3f}",
            f"{s['steadiness']:.3f}",
            f"{s['separation']:.3f}",
            f"{s['balance']:.3f}",
            f"{m['mean_duration_bars']:.1f}",
            style=style,
        )
    console.print(t)
    console.print(
        "score = weighted informative (coming risk explained), stability (a refit finds the same "
        "regimes), persistence, steadiness (dwell out of the fit span), separation, balance; all "
        "measured on a validation span carved from the training windows; every metric in ranking.csv"
    )


SHORT_HEADS = {
    "window_size": "window",
    "embedding_dim": "emb.",
    "encoding_method": "pos. enc.",
    "encoding_style": "style",
    "n_clusters": "K",
}


def report_cmd(
    bundle: Path | None = typer.Option(None, help="Bundle folder or models root (default exported_models)."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Report a training config instead (trained without export)."
    ),
    data: str | None = typer.Option(
        None, help="Bars for a bundle: 'eurusd', 'synthetic' or a path (default: the bundle's training data)."
    ),
    output: Path = typer.Option(Path("reports"), "--output", "-o", help="Folder for report.md and the PNGs."),
    max_points: int = typer.Option(1500, help="Embeddings drawn in the t-SNE/UMAP maps (even subsample)."),
    umap: bool | None = typer.Option(None, "--umap/--no-umap", help="Draw UMAP (default: if installed)."),
    cost_bps: float = typer.Option(2.0, help="Regime-filter backtest: cost per unit of turnover, basis points."),
) -> None:
    """Figures (t-SNE/UMAP of embeddings, price with regime bands, transition matrix, shares, the regime filter
    against buy-and-hold) and report.md, with what each regime is worth on the held-out split."""
    from regimetry.bundle import BundleError
    from regimetry.data import BarDataError
    from trainer import report

    if bundle is not None and config is not None:
        fail("give --bundle or --config, not both")
    try:
        if config is not None:
            from trainer.config import load_config

            with console.status("training the configuration (no export)"):
                view = report.from_config(load_config(config))
        else:
            view = report.from_bundle(bundle or Path("exported_models"), data)
    except (BundleError, BarDataError, ValueError, OSError) as exc:
        fail(str(exc))
    with console.status("drawing figures"):
        files = report.write_report(view, output, max_points=max_points, umap=umap, cost_bps=cost_bps)
    for name, path in files.figures.items():
        console.print(f"  {name}: {path}")
    console.print(f"[bold green]report written:[/] {files.report}")


def lock_cmd(
    config: Path = typer.Option(Path("best_config.yaml"), "--config", "-c", help="The chosen training config."),
    data: str | None = typer.Option(None, help="Bars it was chosen on (default: the config's data)."),
    seed: int | None = typer.Option(None, help="Override the seed."),
    output: Path = typer.Option(Path("locked_profile.yaml"), "--output", "-o"),
) -> None:
    """Freeze a configuration into locked_profile.yaml: config + seed + data range + feature spec hash."""
    from regimetry.data import BarDataError
    from trainer import locked_profile
    from trainer.config import load_config
    from trainer.pipeline import load_training_data

    overrides = {k: v for k, v in (("data", data), ("seed", seed)) if v is not None}
    try:
        cfg = load_config(config, overrides)
        series, _ = load_training_data(cfg)
    except (ValueError, OSError, BarDataError) as exc:
        fail(str(exc))
    doc = locked_profile.lock(cfg, series)
    locked_profile.write(doc, output)
    d = doc["data"]
    console.print(
        f"[bold green]locked[/] {output}: seed {doc['seed']}, {d['symbol']} {d['n_bars']} bars "
        f"{d['start']} .. {d['end']}, feature spec {doc['feature_spec_hash'][:12]}"
    )


def json_logger(log_file: Path | None) -> Callable[..., None]:
    """log(event, **fields): one JSON object per line on stdout, appended to ``log_file`` as well."""

    def log(event: str, **fields) -> None:
        line = json.dumps(
            {"ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "event": event, **fields},
            default=str,
        )
        print(line, flush=True)
        if log_file is not None:
            with open(log_file, "a") as f:
                f.write(line + "\n")

    return log


def refresh_cmd(
    profile: Path = typer.Option(..., help="locked_profile.yaml (from `regimetry lock`)."),
    data: str = typer.Option(..., help="The new bars: CSV/parquet path (or a sample name)."),
    models: Path = typer.Option(Path("exported_models"), help="Models root holding CURRENT."),
    previous: Path | None = typer.Option(None, help="Align to this bundle instead of the one CURRENT names."),
    min_agreement: float = typer.Option(0.9, help="Publish only if at least this share of windows keep their id."),
    min_windows: int = typer.Option(50, help="Fewest windows labelled by both models to align on labels."),
    transitions: Path | None = typer.Option(
        None, help="Transition log (JSON lines; default <models>/transitions.jsonl)."
    ),
    log_file: Path | None = typer.Option(None, "--log", help="Also append the JSON log lines here."),
) -> None:
    """Refit the locked profile on new bars, align regime ids to the bundle in force, publish if they agree.

    Exit codes: 0 published or up to date; 2 bad input; 3 flagged (agreement below --min-agreement, bundle
    written but CURRENT not moved); 4 profile mismatch; 5 training failed; 6 another refresh is running.
    Logs are JSON lines on stdout."""
    from regimetry.data import resolve_data
    from trainer import refresh as rf

    code, _ = rf.run_guarded(
        profile,
        data,
        lambda: resolve_data(data),
        models,
        previous,
        min_agreement,
        min_windows,
        transitions or models / "transitions.jsonl",
        json_logger(log_file),
    )
    raise typer.Exit(code)


def refresher_cmd(
    profile: Path = typer.Option(..., envvar="REGIMETRY_REFRESH_PROFILE", help="locked_profile.yaml."),
    archive: Path = typer.Option(..., envvar="REGIMETRY_ARCHIVE_DIR", help="The bar archive (regimetry archive)."),
    symbol: str | None = typer.Option(
        None, envvar="REGIMETRY_REFRESH_SYMBOL", help="Symbol to refit on (default: the profile's)."
    ),
    models: Path = typer.Option(
        Path("exported_models"), envvar="REGIMETRY_REFRESH_MODELS", help="Models root holding CURRENT."
    ),
    every: str = typer.Option("24h", envvar="REGIMETRY_REFRESH_EVERY", help="Interval between runs (30m, 24h)."),
    window: str = typer.Option(
        "180d", envvar="REGIMETRY_REFRESH_WINDOW", help="Bars of the last WINDOW before the newest (or 'all')."
    ),
    min_agreement: float = typer.Option(0.9, envvar="REGIMETRY_REFRESH_MIN_AGREEMENT"),
    min_windows: int = typer.Option(50, envvar="REGIMETRY_REFRESH_MIN_WINDOWS"),
    metrics_host: str = typer.Option("127.0.0.1", envvar="REGIMETRY_REFRESH_METRICS_HOST"),
    metrics_port: int = typer.Option(9111, envvar="REGIMETRY_REFRESH_METRICS_PORT", help="0 = no /metrics."),
    once: bool = typer.Option(False, "--once", help="One run, then exit with its code."),
) -> None:
    """Refresh the locked profile from the bar archive on a schedule, with its outcome on /metrics.

    Each run is `regimetry refresh` on the archive's last WINDOW of bars (same exit codes, JSON log lines on
    stdout); SIGTERM ends the service between runs."""
    import signal
    import threading

    from trainer import refresher as rs

    try:
        interval = rs.parse_duration(every)
        span = None if window.strip().lower() == "all" else rs.parse_duration(window)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    metrics = rs.RefresherMetrics()
    if metrics_port:
        metrics.serve(metrics_host, metrics_port)

    def run() -> int:
        return rs.run_once(profile, archive, symbol, span, models, min_agreement, min_windows, rs.json_line, metrics)

    if once:
        raise typer.Exit(run())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rs.json_line("refresher_start", every_seconds=interval, window_seconds=span, archive=str(archive))
    try:
        rs.run_forever(interval, run, stop, rs.json_line)
    except KeyboardInterrupt:
        pass
    rs.json_line("refresher_stop")


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("report")(report_cmd)
    app.command("lock")(lock_cmd)
    app.command("refresh")(refresh_cmd)
    app.command("refresher")(refresher_cmd)
