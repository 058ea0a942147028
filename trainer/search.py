"""Running a configuration search: train and score every candidate, resumably, in parallel where possible.

Each finished candidate is written to <output>/candidates/<id>.json (atomically, by the process that trained
it), so an interrupted search loses at most the candidates in flight: a rerun skips every id with a record
and retries failed ones. Ranking is recomputed from the stored metrics each time (trainer/scorecard.py).

Parallelism: with workers > 1, candidates run in spawned processes, each limiting TensorFlow to one op thread
so that N workers use about N cores instead of fighting over them. Candidates are trained without ONNX export
(pipeline.train(write_bundle=False)); the chosen one is trained for real afterwards from best_config.yaml.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import yaml

from trainer.scorecard import ScoreSpec, score
from trainer.search_spec import Candidate, SearchSpec, expand

OnDone = Callable[[dict, str], None]  # record, "trained" | "skipped" | "failed"


@dataclass
class SearchOutcome:
    ranking: list[dict]  # every candidate with a record, best first (failed ones last)
    trained: list[str]
    skipped: list[str]
    failed: list[str]
    invalid: list[dict]


def records_dir(output: Path) -> Path:
    return output / "candidates"


def metrics_of(summary: dict, cfg: dict) -> dict:
    """What the score and the ranking table need from a training summary."""
    cl = summary["clustering"]
    nr = summary["next_regime"]["all_steps"]
    out = {
        "n_clusters": cfg["clustering"]["n_clusters"],
        "silhouette": cl["silhouette"],
        "davies_bouldin": cl["davies_bouldin"],
        "share_entropy": cl["share_entropy"],
        "min_share": cl["min_share"],
        "stickiness": cl["stickiness"],
        "mean_duration_windows": cl["mean_duration"],
        "mean_duration_bars": cl["mean_duration"] * cfg["stride"],
        "forecaster_accuracy": nr["forecaster"]["accuracy"],
        "persistence_accuracy": nr["persistence"]["accuracy"],
    }
    val = (cl.get("penalty_selection") or {}).get("validation") or {}
    out["validation_eta2"] = val.get("eta2_coming_risk")
    out["validation_dwell_ratio"] = val.get("dwell_ratio")
    out["validation_refit_stability"] = val.get("refit_stability")
    out["penalty"] = cl.get("penalty")
    if "planted_regimes" in summary:
        out["planted_ari"] = summary["planted_regimes"].get("ari_regimetry")
    return out


def write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def run_candidate(candidate: dict, out_dir: str) -> dict:
    """Train one candidate (no export), write and return its record. Runs in a worker process or inline."""
    from trainer.config import from_dict
    from trainer.pipeline import train

    started = time.monotonic()
    record = {**candidate, "status": "ok", "metrics": None, "error": None}
    try:
        result = train(from_dict(candidate["config"]), write_bundle=False)
        record["metrics"] = metrics_of(result.summary, candidate["config"])
    except Exception as exc:  # a failed candidate is a result too: recorded, ranked last, retried on rerun
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    record["seconds"] = round(time.monotonic() - started, 2)
    record["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_json_atomic(Path(out_dir) / f"{candidate['id']}.json", record)
    return record


def single_thread_tensorflow() -> None:
    """Process initialiser: one op thread per TensorFlow process (must run before TensorFlow is imported)."""
    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = "1"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def load_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a torn or missing record means: not finished


def rank(records: list[dict], spec: ScoreSpec) -> list[dict]:
    """Records with their score, best composite first; failed candidates last in id order."""
    ok = [{**r, "score": score(r["metrics"], spec)} for r in records if r["status"] == "ok"]
    ok.sort(key=lambda r: (-r["score"]["composite"], r["id"]))
    bad = sorted((dict(r, score=None) for r in records if r["status"] != "ok"), key=lambda r: r["id"])
    return [{**r, "rank": i + 1} for i, r in enumerate(ok + bad)]


def run_search(
    spec: SearchSpec,
    on_start: Callable[[int, int], None] = lambda todo, done: None,
    on_done: OnDone = lambda record, how: None,
) -> SearchOutcome:
    """Train what is not finished yet, then rank everything and write the outputs."""
    candidates, invalid = expand(spec)
    rdir = records_dir(spec.output)
    rdir.mkdir(parents=True, exist_ok=True)
    finished: dict[str, dict] = {}
    todo: list[Candidate] = []
    for c in candidates:
        rec = load_record(rdir / f"{c.id}.json")
        if rec is not None and rec.get("status") == "ok":
            finished[c.id] = rec
        else:
            todo.append(c)
    on_start(len(todo), len(finished))
    for rec in finished.values():
        on_done(rec, "skipped")
    trained: list[str] = []  # candidate ids
    failed: list[str] = []

    def collect(rec: dict) -> None:
        finished[rec["id"]] = rec
        (trained if rec["status"] == "ok" else failed).append(rec["id"])
        on_done(rec, "trained" if rec["status"] == "ok" else "failed")

    if spec.workers <= 1 or len(todo) <= 1:
        for c in todo:
            collect(run_candidate(asdict(c), str(rdir)))
    else:
        with ProcessPoolExecutor(
            max_workers=min(spec.workers, len(todo)),
            mp_context=get_context("spawn"),
            initializer=single_thread_tensorflow,
        ) as pool:
            futures = [pool.submit(run_candidate, asdict(c), str(rdir)) for c in todo]
            try:
                for fut in as_completed(futures):
                    collect(fut.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    ranking = rank([finished[c.id] for c in candidates if c.id in finished], spec.score)
    write_outputs(spec, ranking)
    return SearchOutcome(ranking, trained, [c.id for c in candidates if c not in todo], failed, invalid)


def flat_row(r: dict) -> dict:
    row = {"rank": r["rank"], "id": r["id"], "status": r["status"], **r["params"]}
    row.update({f"score_{k}": round(v, 6) for k, v in (r["score"] or {}).items()})
    row.update({k: v for k, v in (r["metrics"] or {}).items()})
    return row


def write_outputs(spec: SearchSpec, ranking: list[dict]) -> None:
    """ranking.csv (every candidate), shortlist.json (the top ones, full configs) and best_config.yaml."""
    out = spec.output
    rows = [flat_row(r) for r in ranking]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "ranking.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    ok = [r for r in ranking if r["status"] == "ok"]
    shortlist = {
        "score": {
            "weights": spec.score.weights,
            "duration_scale": spec.score.duration_scale,
            "formula": "see trainer/scorecard.py",
        },
        "n_candidates": len(ranking),
        "shortlist": [
            {k: r[k] for k in ("rank", "id", "params", "score", "metrics", "config")} for r in ok[: spec.shortlist]
        ],
    }
    write_json_atomic(out / "shortlist.json", shortlist)
    if ok:
        (out / "best_config.yaml").write_text(
            f"# best of {len(ranking)} candidates (id {ok[0]['id']}, composite {ok[0]['score']['composite']:.4f})\n"
            + yaml.safe_dump(ok[0]["config"], sort_keys=False)
        )
