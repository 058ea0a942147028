"""Helpers for the search/report/refresh tests: bar series on disk, shifted data, a permuted bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from regimetry.bundle import MANIFEST, manifest_digest, sha256_file, sha256_json
from regimetry.classify import KNNClassifier
from regimetry.data import BarSeries
from regimetry.synthetic import generate_bars, write_csv


def run_cli(args: list[str]):
    """Invoke the research commands (search, report, lock, refresh) in-process; returns click's Result."""
    import typer
    from typer.testing import CliRunner

    from trainer import research_cli

    app = typer.Typer()
    research_cli.register(app)
    return CliRunner().invoke(app, args)


def json_lines(text: str) -> list[dict]:
    """The JSON log lines of a refresh's stdout."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def nested(dotted: dict) -> dict:
    """{'encoder.epochs': 2} -> {'encoder': {'epochs': 2}} (what a YAML profile looks like)."""
    out: dict = {}
    for key, val in dotted.items():
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = val
    return out


def write_yaml(path: Path, value: dict) -> Path:
    path.write_text(yaml.safe_dump(value, sort_keys=False))
    return path


def shifted(series: BarSeries, shift: int, seed: int = 99) -> BarSeries:
    """The same bars minus the first ``shift``, plus ``shift`` new bars continuing from the last close/time:
    what a periodic refresh sees when it slides its training range forward."""
    step = int(series.times[1] - series.times[0])
    more = generate_bars(
        n_bars=shift, seed=seed, start_price=float(series.values[-1, 3]), start_time=int(series.times[-1]) + step
    ).bars
    return BarSeries(
        np.concatenate([series.times[shift:], more.times]),
        np.concatenate([series.values[shift:], more.values]),
        series.symbol,
    )


def csv_of(series: BarSeries, path: Path) -> Path:
    write_csv(series, str(path))
    return path


def permute_bundle(src: Path, dst_root: Path, perm: np.ndarray, cold: bool = False) -> Path:
    """A copy of a bundle whose regime id i is renamed perm[i] everywhere (classifier labels, centroids,
    profiles, baseline, regimes.csv), re-hashed and re-versioned: a previous model that numbered the same regimes
    differently. cold=True drops its encoder weights, so a refresh from it cannot warm-start."""
    perm = np.asarray(perm)
    m = json.loads((src / MANIFEST).read_text())
    version = m["model_version"] + "-perm" + "".join(map(str, perm)) + ("-cold" if cold else "")
    dst = dst_root / version
    shutil.copytree(src, dst)
    if cold:
        (dst / "encoder.weights.h5").unlink()
    clf = KNNClassifier.load(dst / "classifier.npz")
    KNNClassifier(clf.reference, perm[clf.labels], clf.n_classes, clf.k).save(dst / "classifier.npz")
    regimes_csv = dst / "regimes.csv"
    if regimes_csv.exists():  # bar_time,epoch,regime,confidence,split
        head, *rows = regimes_csv.read_text().splitlines()
        cells = [r.split(",") for r in rows]
        regimes_csv.write_text(
            "\n".join([head] + [",".join(c[:2] + [str(perm[int(c[2])])] + c[3:]) for c in cells]) + "\n"
        )
    inv = np.argsort(perm)  # new position j holds old regime inv[j]
    m["model_version"] = version
    m["centroids"] = [m["centroids"][i] for i in inv]
    m["regime_profiles"] = [{**m["regime_profiles"][i], "id": j} for j, i in enumerate(inv)]
    b = m["baseline"]
    b["cluster_distribution"] = [b["cluster_distribution"][i] for i in inv]
    b["transition_matrix"] = np.asarray(b["transition_matrix"])[np.ix_(inv, inv)].tolist()
    m["hashes"]["centroids"] = sha256_json(m["centroids"])
    m["files"] = {p.name: sha256_file(p) for p in sorted(dst.iterdir()) if p.name != MANIFEST}
    m["hashes"]["manifest"] = manifest_digest(m)
    (dst / MANIFEST).write_text(json.dumps(m, indent=2))
    (dst_root / "CURRENT").write_text(version + "\n")
    return dst
