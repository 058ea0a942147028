"""Archive throughput: how fast `regimetry archive` drains a backlog of bars into Parquet (a figure, not a test).

    python benchmarks/bench_archive.py [--bars 60000] [--symbols 20] [--runs 3]

Starts the embedded stack (Tansu + Redis), produces the bars into a topic of their own, then per run starts a
fresh archiver on an empty folder and times from its partitions being assigned to the last bar being written
(the lag gauge at 0 and every bar on disk). Prints bars/s per run and the median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from devstack.kafka_kit import interleave, produce, series_messages
from devstack.stack import create_topics, metric_value, metrics_text, start_archiver, start_stack, wait_until
from regimetry.synthetic import generate_bars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=60_000, help="bars in total")
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    per = args.bars // args.symbols
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        work = Path(tmp)
        with start_stack(work / "stack") as stack:
            create_topics(stack.bootstrap, {"bars-bench": args.partitions})
            streams = []
            for i in range(args.symbols):
                b = generate_bars(n_bars=per, seed=i, symbol=f"S{i:03d}").bars
                streams.append(series_messages(f"S{i:03d}", b.times, b.values))
            msgs = interleave(*streams)
            t0 = time.perf_counter()
            produce(stack.bootstrap, "bars-bench", msgs)
            print(f"produced {len(msgs)} bars of {args.symbols} symbols in {time.perf_counter() - t0:.1f} s")
            rates = []
            for run in range(args.runs):
                folder = work / f"archive-{run}"
                proc = start_archiver(
                    stack,
                    work,
                    name=f"archive-{run}",
                    archive_dir=str(folder),
                    bars_topic="bars-bench",
                    archive_group_id=f"bench-{run}",
                )
                start = time.perf_counter()

                def done(port: int = proc.port) -> bool:
                    text = metrics_text(port)
                    return (metric_value(text, "regimetry_archive_bars_archived_total") or 0) >= len(msgs)

                wait_until(done, 600, "every bar archived", interval=0.02)
                seconds = time.perf_counter() - start
                proc.stop()
                files = len(list(folder.glob("symbol=*/date=*/*.parquet")))
                rates.append(len(msgs) / seconds)
                print(f"run {run + 1}: {len(msgs)} bars in {seconds:.2f} s = {rates[-1]:,.0f} bars/s ({files} files)")
            print(f"median {statistics.median(rates):,.0f} bars/s over {args.runs} runs")


if __name__ == "__main__":
    main()
