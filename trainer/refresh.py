"""`regimetry refresh`: refit a locked profile on new bars without changing what the regime ids mean.

Steps: read the locked profile and the new bars; run the bundle in force (the previous one) over the new bars
with ONNX Runtime to get its regime of every window; warm-start from that bundle where it allows
(trainer/warm_start.py: its scaler, encoder weights, geometry, centres, penalty and ids); train the profile
on the new bars with an align hook that
renumbers the new clusters to agree best with those labels (trainer/alignment.py); write the new bundle with
the mapping and agreement in manifest["alignment"]; append the regime changes of the new bars to a transition
log; move the CURRENT pointer only if the agreement is at least the threshold.

Made for cron: one JSON object per line on stdout (and in --log), nothing interactive, and exit codes that
say what happened:

    0  published (CURRENT now names the new bundle), or nothing to do (same profile on the same bars)
    2  bad input: unreadable profile/data, bad bars, bad options
    3  flagged: agreement below the threshold, or no way to measure it; the bundle is written, NOT published
    4  profile mismatch: the profile's feature hash or cluster count differs from the code or previous bundle
    5  training or export failed
    6  busy: another refresh holds the models root's lock (overlapping cron runs); nothing was done
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from regimetry import diagnostics as dg
from regimetry.bundle import MANIFEST, POINTER, BundleError, resolve_bundle_dir
from regimetry.data import BarSeries
from trainer import alignment
from trainer.clustering import Clustering

if TYPE_CHECKING:
    from trainer.locked_profile import LockedProfile

EXIT_PUBLISHED, EXIT_USAGE, EXIT_FLAGGED, EXIT_PROFILE, EXIT_FAILED, EXIT_BUSY = 0, 2, 3, 4, 5, 6
LOCK_FILE = ".refresh.lock"


class Busy(RuntimeError):
    """Another refresh is running on the same models root."""


@contextlib.contextmanager
def exclusive(models: Path):
    """Hold an advisory lock on the models root for the whole refresh, so overlapping cron runs cannot both
    train and race on CURRENT; the second one gives up at once. The OS releases it if the process dies."""
    models.mkdir(parents=True, exist_ok=True)
    with open(models / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another refresh holds {models / LOCK_FILE}") from None
        yield


Log = Callable[..., None]  # log(event, **fields)


@dataclass
class Previous:
    """The bundle in force: its manifest and, when it can run, its regime of every bar of the new data."""

    path: Path
    manifest: dict
    times: np.ndarray | None  # end-bar times it labelled
    labels: np.ndarray | None
    error: str | None = None  # why it could not label the new bars


@dataclass
class Outcome:
    status: str  # published | up_to_date | flagged
    exit_code: int
    model_version: str
    bundle_dir: Path | None
    alignment: dict | None
    changes_logged: int = 0


def find_previous(models: Path, explicit: Path | None) -> Path | None:
    """The previous bundle: the one named explicitly, else the models root's CURRENT, else none (first fit)."""
    if explicit is not None:
        return resolve_bundle_dir(explicit)
    if (models / POINTER).exists():
        return resolve_bundle_dir(models)
    return None


def label_with_previous(path: Path, series: BarSeries) -> Previous:
    manifest = json.loads((path / MANIFEST).read_text())
    try:
        from regimetry.inference import RegimeModel

        r = RegimeModel(path).run_series(series.values)
    except BundleError as exc:
        return Previous(path, manifest, None, None, str(exc))
    return Previous(path, manifest, series.times[r.offset + np.arange(len(r.regime))], r.regime)


class Aligner:
    """The pipeline's align hook: renumber the new clusters onto the previous bundle's ids and say how well
    they agree. Records what it did in ``self.record`` (also returned into manifest["alignment"])."""

    def __init__(self, previous: Previous, series: BarSeries, min_agreement: float, min_windows: int):
        self.prev, self.series = previous, series
        self.min_agreement, self.min_windows = min_agreement, min_windows
        self.record: dict | None = None

    def overlap(self, end_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices of new windows the previous bundle labelled too, the previous labels of those windows)."""
        if self.prev.times is None or self.prev.labels is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.searchsorted(self.prev.times, end_time)
        pos = np.minimum(pos, len(self.prev.times) - 1)
        hit = self.prev.times[pos] == end_time
        return np.flatnonzero(hit), self.prev.labels[pos[hit]]

    def __call__(self, cl: Clustering, new: np.ndarray, end_time: np.ndarray) -> tuple[Clustering, dict]:
        """``new``: the new model's decoded regime of every window (before renumbering)."""
        k = len(cl.centroids)
        new = np.asarray(new, dtype=np.int64)
        idx, prev_lab = self.overlap(end_time)
        rec: dict = {
            "previous_model_version": self.prev.manifest["model_version"],
            "threshold": self.min_agreement,
            "n_windows": int(len(idx)),
        }
        if len(idx) >= self.min_windows:
            perm, agreement = alignment.match_labels(new[idx], prev_lab, k)
            prev_data = self.prev.manifest["data"]
            in_range = (end_time[idx] >= prev_data["start"]) & (end_time[idx] <= prev_data["end"])
            rec.update(
                method="window_labels",
                agreement=agreement,
                n_windows_in_previous_data=int(in_range.sum()),
                agreement_in_previous_data=float(np.mean(perm[new[idx]][in_range] == prev_lab[in_range]))
                if in_range.any()
                else None,
            )
        else:
            bar = np.searchsorted(self.series.times, end_time)
            ret = np.concatenate([[0.0], np.diff(np.log(self.series.values[:, 3]))])[bar]
            mine = alignment.profile_centroids(dg.regime_profiles(new, k, ret))
            theirs = alignment.profile_centroids(self.prev.manifest["regime_profiles"])
            a, b = alignment.standardise_together(mine, theirs)
            perm = alignment.match_centroids(a, b)
            rec.update(
                method="profile_centroids",
                agreement=None,
                reason=self.prev.error or f"only {len(idx)} windows labelled by both (< {self.min_windows})",
            )
        rec["mapping"] = {str(i): int(perm[i]) for i in range(k)}
        rec["identity"] = bool((perm == np.arange(k)).all())
        rec["flagged"] = rec["agreement"] is None or rec["agreement"] < self.min_agreement
        self.record = rec
        return alignment.permute_clustering(cl, perm), rec


def regime_changes(regimes: np.ndarray, end_time: np.ndarray, after: int | None) -> list[dict]:
    """Regime changes at bars later than ``after`` (epoch seconds; None = all)."""
    idx, before, to = dg.change_points(regimes)
    from regimetry.data import iso_utc as iso

    return [
        {"time": iso(end_time[i]), "epoch": int(end_time[i]), "from": int(b), "to": int(t)}
        for i, b, t in zip(idx, before, to)
        if after is None or end_time[i] > after
    ]


def append_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def point_current(models: Path, version: str) -> None:
    tmp = models / f".{POINTER}.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(models / POINTER)


def refresh(
    profile: LockedProfile,
    data: str,
    series: BarSeries,
    models: Path,
    previous: Path | None = None,
    min_agreement: float = 0.9,
    min_windows: int = 50,
    transitions: Path | None = None,
    log: Log = lambda event, **kw: None,
) -> Outcome:
    """Refit ``profile`` (a LockedProfile) on ``series`` (read from ``data``); see the module docstring."""
    from trainer.locked_profile import ProfileMismatch
    from trainer.pipeline import model_version, train
    from trainer.warm_start import WarmStart

    cfg = profile.config
    cfg.data, cfg.output_dir, cfg.set_current = data, str(models), False
    version = model_version(cfg, series)
    prev_dir = find_previous(models, previous)
    prev = None
    warm = None
    if prev_dir is not None:
        prev_warm = (json.loads((prev_dir / MANIFEST).read_text()).get("warm_start") or {}).get("from")
        same = {version} | ({model_version(cfg, series, prev_warm)} if prev_warm else set())
        if prev_dir.name in same:
            log("up_to_date", model_version=version, reason="same profile on the same bars as the bundle in force")
            return Outcome("up_to_date", EXIT_PUBLISHED, version, prev_dir, None)
        prev = label_with_previous(prev_dir, series)
        if int(prev.manifest["n_clusters"]) != cfg.clustering.n_clusters:
            raise ProfileMismatch(
                f"previous bundle {prev_dir.name} has {prev.manifest['n_clusters']} regimes, the "
                f"profile {cfg.clustering.n_clusters}: ids cannot be aligned"
            )
        log(
            "previous",
            model_version=prev.manifest["model_version"],
            labelled_windows=None if prev.labels is None else int(len(prev.labels)),
            error=prev.error,
        )
        try:  # warm start: keep the previous scaler, encoder weights, geometry, centres, penalty and ids
            warm = WarmStart.from_bundle(prev_dir)
            version = model_version(cfg, series, warm.source)
            log("warm_start", source=warm.source)
        except (ValueError, BundleError) as exc:
            log("cold_start", reason=str(exc))
    aligner = Aligner(prev, series, min_agreement, min_windows) if prev else None

    def progress(stage: str, step: int, total: int, message: str = "") -> None:
        if step == total:
            log("stage", stage=stage, message=message)

    result = train(cfg, progress=progress, series=series, align=aligner, warm=warm)
    record = aligner.record if aligner else None
    flagged = bool(record and record["flagged"])
    log("aligned", model_version=version, **(record or {"method": "none", "reason": "no previous bundle"}))
    if record is not None and flagged:
        log(
            "flagged",
            model_version=version,
            bundle=str(result.bundle_dir),
            reason="agreement below threshold" if record["agreement"] is not None else "agreement not measurable",
            current=None if prev is None else prev.manifest["model_version"],
        )
        return Outcome("flagged", EXIT_FLAGGED, version, result.bundle_dir, record)
    changes = regime_changes(result.regimes, result.end_time, prev.manifest["data"]["end"] if prev else None)
    if transitions is not None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        append_jsonl(
            transitions, [{"logged_at": stamp, "model_version": version, "symbol": series.symbol, **c} for c in changes]
        )
    point_current(models, version)
    log("published", model_version=version, bundle=str(result.bundle_dir), regime_changes=len(changes))
    return Outcome("published", EXIT_PUBLISHED, version, result.bundle_dir, record, len(changes))


def run_guarded(
    profile_path: Path,
    data: str,
    load_series: Callable[[], BarSeries],
    models: Path,
    previous: Path | None,
    min_agreement: float,
    min_windows: int,
    transitions: Path | None,
    log: Log,
) -> tuple[int, Outcome | None]:
    """One refresh as `regimetry refresh` and the refresher service run it: every failure becomes an exit code
    and one JSON log line (the schedule needs a code and a line, not a traceback alone); (exit code, outcome)."""
    from regimetry.data import BarDataError
    from trainer import locked_profile

    def stop(code: int, message: str) -> tuple[int, None]:
        log("error", exit_code=code, message=message)
        return code, None

    try:
        prof = locked_profile.load(profile_path)
    except locked_profile.ProfileMismatch as exc:
        return stop(EXIT_PROFILE, str(exc))
    except locked_profile.ProfileError as exc:
        return stop(EXIT_USAGE, str(exc))
    try:
        series = load_series()
    except BarDataError as exc:
        return stop(EXIT_USAGE, str(exc))
    log("start", profile=str(profile_path), data=data, bars=len(series), symbol=series.symbol, models=str(models))
    try:
        with exclusive(models):
            outcome = refresh(prof, data, series, models, previous, min_agreement, min_windows, transitions, log)
    except Busy as exc:
        return stop(EXIT_BUSY, str(exc))
    except locked_profile.ProfileMismatch as exc:
        return stop(EXIT_PROFILE, str(exc))
    except BundleError as exc:
        return stop(EXIT_USAGE, str(exc))
    except Exception as exc:
        return stop(EXIT_FAILED, f"{type(exc).__name__}: {exc}")
    return outcome.exit_code, outcome
