"""`regimetry evaluate`, and the score tables it shares with `regimetry train`.

Part of the core because it needs only ONNX Runtime: it works on a worker-only install (no TensorFlow, no
scikit-learn, no trainer/), which tests/test_import_light.py checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from regimetry.console import console, fail


def _f3(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def print_next_regime(nr: dict) -> None:
    """The next-regime table: each candidate's accuracy and macro-F1 on all steps, its change detection
    (precision, recall, F1) and its accuracy on the change steps; then the verdict and the notes."""
    from rich.table import Table

    t = Table(title="Next-regime forecast (held-out split when training)")
    t.add_column("model")
    for col in ("accuracy", "macro-F1", "change prec.", "change recall", "change F1", "acc. on changes"):
        t.add_column(col, justify="right")
    names = nr.get("candidates") or [
        n for n in ("forecaster", "persistence", "markov", "flat_next") if n in nr["all_steps"]
    ]
    for name in names:
        a, c = nr["all_steps"][name], nr["change_steps"][name]
        cd = (nr.get("change_detection") or {}).get(name) or {}
        t.add_row(
            name,
            _f3(a["accuracy"]),
            _f3(a["macro_f1"]),
            _f3(cd.get("precision")),
            _f3(cd.get("recall")),
            _f3(cd.get("f1")),
            _f3(c["accuracy"]),
        )
    console.print(t)
    if "change_detection" in nr:
        cd = nr["change_detection"]["forecaster"]
        console.print(
            f"{nr['all_steps']['forecaster']['n']} steps, {cd['actual_changes']} regime changes; the "
            f"forecaster called {cd['predicted_changes']} changes ({cd['true_positives']} right, "
            f"{cd['false_alarms']} false alarms, {cd['wrong_regime']} to the wrong regime)"
        )
    absent = nr.get("absent_regimes") or {}
    for subset, regs in absent.items():
        if regs:
            console.print(
                f"absent regime(s) on {subset.replace('_', ' ')}: {', '.join(map(str, regs))} "
                "(never the true next regime there; left out of macro-F1)"
            )
    if nr.get("markov_equals_persistence"):
        sticky = " (sticky transition matrix: every row's argmax is the diagonal)" if nr.get("markov_sticky") else ""
        console.print(f"markov equals persistence on every step{sticky}")
    style = "green" if nr["forecaster_beats_baselines"] else "yellow"
    console.print(f"[{style}]{nr['verdict']}[/]")


def print_summary(summary: dict, bundle_dir: Path | None = None) -> None:
    nr = summary.get("next_regime")
    if nr:
        print_next_regime(nr)
    if "forecaster" in summary:
        fe = summary["forecaster"]
        console.print(
            f"embedding forecast held out: MSE {fe['held_out']['mse']:.4f} (persistence "
            f"{fe['persistence_held_out']['mse']:.4f}), cosine {fe['held_out']['cosine']:.3f}"
        )
    cl = summary.get("clustering")
    if cl:
        console.print("regimes: " + ", ".join(f"{k} {v:.3f}" for k, v in cl.items() if isinstance(v, float)))
    if "planted_regimes" in summary:
        pr = summary["planted_regimes"]
        console.print(
            f"planted-regime recovery (ARI): regimetry {pr['ari_regimetry']:.3f}, Gaussian HMM "
            f"{pr['ari_hmm'] if pr['ari_hmm'] is None else round(pr['ari_hmm'], 3)}"
        )
    if "universe" in summary:
        print_universe(summary["universe"])
    if bundle_dir:
        console.print(f"[bold green]bundle written:[/] {bundle_dir}")


def print_universe(uni: dict) -> None:
    """A universe's held-out figures, per symbol and pooled (training_summary.json's "universe")."""
    from rich.table import Table

    def f(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    table = Table(title="held out, per symbol and pooled")
    for col in ("symbol", "windows", "eta2 next |r|", "mean dwell", "change F1 forecaster", "persistence acc"):
        table.add_column(col)
    rows = [*uni["per_symbol"].items(), ("pooled", uni["pooled"])]
    for name, r in rows:
        nr = r.get("next_regime") or {}
        table.add_row(
            name,
            str(r["n_held_out_windows"]),
            f(r["held_out_next_abs_return_eta2"]),
            f"{r['held_out_mean_dwell']:.1f}",
            f((nr.get("change_f1") or {}).get("forecaster")),
            f((nr.get("accuracy") or {}).get("persistence")),
        )
    console.print(table)


def print_evaluation_header(scores: dict) -> None:
    """Where the scored bars come from, the bundle's training period beside them, the in-sample warning and
    the regime shares / mean dwell of the scored windows beside the training ones."""
    from rich.table import Table

    d, tr = scores["data"], scores["bundle_training"]
    if d.get("bundle_own_data"):
        console.print(
            f"[bold magenta]--data bundle: scoring on the bundle's OWN data, {d['source']!r} "
            f"({d['symbol']}), the bars it was trained on[/]"
        )
    console.print(
        f"[bold]data[/] {d['source']} ({d['symbol']}, {d['n_bars']} bars): scored windows ending "
        f"{d['first_window_end']} .. {d['last_window_end']} ({d['n_events']} windows, {d['n_steps']} "
        f"steps; {d['n_warmup_bars']} warm-up bars before"
        + (f"; --start {d['start']}" if d.get("start") else "")
        + (f" --end {d['end']}" if d.get("end") else "")
        + ")"
    )
    console.print(
        f"[bold]bundle[/] {scores['model_version']} trained on {tr.get('source')} ({tr.get('symbol')}): "
        f"bars {tr.get('start')} .. {tr.get('end')}, training windows up to {tr.get('train_end')}, "
        f"held out after"
    )
    warn = (scores.get("training_overlap") or {}).get("warning")
    if warn:
        console.print(f"[bold yellow]warning:[/] {warn}")
    rg = scores.get("regimes")
    if rg:
        t = Table(title=f"Regimes: scored windows vs the bundle's training windows ({rg['unit']})")
        for col in ("regime", "share scored", "share training", "mean dwell scored", "mean dwell training"):
            t.add_column(col, justify="right")
        sc, trn = rg["scored"], rg["training"]
        for i, share in enumerate(sc["shares"]):
            t.add_row(
                str(i),
                _f3(share),
                _f3(trn["shares"][i] if i < len(trn["shares"]) else None),
                f"{sc['mean_duration'][i]:.1f}" if share > 0 else "-",
                "-"
                if i >= len(trn["mean_duration"]) or trn["mean_duration"][i] is None
                else f"{trn['mean_duration'][i]:.1f}",
            )
        console.print(t)


def evaluate_cmd(
    bundle: Path = typer.Option(Path("exported_models"), help="Bundle folder or models root with CURRENT."),
    data: str | None = typer.Option(
        None,
        help="Required: 'eurusd', 'synthetic', a CSV/parquet path, or "
        "'bundle' = the bars the bundle was trained on (in-sample).",
    ),
    start: str | None = typer.Option(
        None,
        help="Score windows ending at or after this time: ISO date/time "
        "(UTC unless an offset is given) or epoch seconds. Warm-up "
        "bars before it are read, not scored.",
    ),
    end: str | None = typer.Option(
        None,
        help="Score windows ending at or before this time (a bare date "
        "means the end of that day); no bar after it is read.",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the scores as JSON here."),
) -> None:
    """Re-score a bundle on bars with ONNX Runtime only (no TensorFlow): regimes, forecast vs baselines
    (persistence, Markov, flat-next), drift."""
    from regimetry.bundle import BundleError
    from regimetry.data import BarDataError
    from regimetry.evaluation import DATA_REQUIRED, score_bundle

    if data is None or not data.strip():
        fail(DATA_REQUIRED)
    try:
        scores = score_bundle(bundle, data, start, end)
    except (BundleError, BarDataError) as exc:
        fail(str(exc))
    print_evaluation_header(scores)
    print_summary(scores)
    console.print("drift vs training baseline: " + ", ".join(f"{k} {v:.3f}" for k, v in scores["drift"].items()))
    if output:
        output.write_text(json.dumps(scores, indent=2))
        console.print(f"scores written to {output}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
