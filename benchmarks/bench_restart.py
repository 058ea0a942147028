"""Worker restart after a SIGKILL, dynamic vs static group membership (a figure, not a test).

    python benchmarks/bench_restart.py [--bundle exported_models] [--session-timeout 10] [--runs 2]

Per run and membership: start a worker in a fresh group and time it to ready (partitions assigned), SIGKILL
it, start its replacement in the same group (static: under the same REGIMETRY_GROUP_INSTANCE_ID) and time that
to ready. With dynamic membership the replacement waits until the coordinator expires the dead member's
session; a static member takes its partitions back as a restart. Writes benchmarks/results/bench_restart.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from devstack.stack import start_stack, start_worker

RESULTS = Path(__file__).resolve().parent / "results" / "bench_restart.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default="exported_models")
    ap.add_argument("--session-timeout", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    bundle = str(Path(args.bundle).resolve())
    rows: dict[str, dict[str, list[float]]] = {m: {"fresh": [], "restart": []} for m in ("dynamic", "static")}
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp, start_stack(Path(tmp) / "stack") as stack:
        for run in range(args.runs):
            for mode in rows:
                extra = {"group_instance_id": f"bench-worker-{run}"} if mode == "static" else {}
                settings = dict(bundle=bundle, group_id=f"bench-restart-{mode}-{run}", log_level="warning", **extra)
                settings["session_timeout"] = args.session_timeout
                t0 = time.monotonic()
                first = start_worker(stack, Path(tmp), name=f"{mode}-{run}-a", timeout=180, **settings)
                rows[mode]["fresh"].append(time.monotonic() - t0)
                first.kill()
                t1 = time.monotonic()
                second = start_worker(stack, Path(tmp), name=f"{mode}-{run}-b", timeout=180, **settings)
                rows[mode]["restart"].append(time.monotonic() - t1)
                second.stop()
                print(
                    f"run {run + 1} {mode:8s} fresh start {rows[mode]['fresh'][-1]:5.1f} s   "
                    f"restart after SIGKILL {rows[mode]['restart'][-1]:5.1f} s",
                    flush=True,
                )
    summary = {
        "broker": "tansu (embedded)",
        "session_timeout_s": args.session_timeout,
        **{
            mode: {
                k: {"runs": [round(x, 2) for x in v], "median": round(statistics.median(v), 2)} for k, v in r.items()
            }
            for mode, r in rows.items()
        },
    }
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
