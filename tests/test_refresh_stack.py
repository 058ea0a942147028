"""Archive -> refresh -> the running worker switches model (issue 12): on the embedded stack, a worker serves
bars while the archiver keeps them; the refresher refits the locked profile from the archive and publishes;
the worker hot-reloads at a batch boundary. No bar loses its event, and a bar's events are byte-identical
however often it is delivered.
"""

from __future__ import annotations

import json
import shutil

import pytest
from research_helpers import shifted

pytestmark = pytest.mark.slow
TOPICS = {"bars-refresh": 2, "events-refresh": 2, "dlq-refresh": 1}


def test_archive_refresh_and_the_worker_switches_at_a_batch_boundary(stack, tiny_bundle, tmp_path):
    from fixtures_bundle import TINY
    from research_helpers import nested

    from devstack.kafka_kit import Collector, produce, series_messages
    from devstack.stack import create_topics, metric_value, metrics_text, start_archiver, start_worker, wait_until
    from regimetry.inference import RegimeModel
    from regimetry.synthetic import generate_bars
    from trainer import locked_profile
    from trainer import refresher as rs
    from trainer.config import from_dict

    create_topics(stack.bootstrap, TOPICS)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(tiny_bundle, models / tiny_bundle.name)
    (models / "CURRENT").write_text(tiny_bundle.name + "\n")
    base = generate_bars().bars  # what the tiny bundle was trained on
    profile = tmp_path / "locked_profile.yaml"
    locked_profile.write(locked_profile.lock(from_dict(nested(TINY)), base), profile)
    bars = shifted(base, 500)  # the feed has moved on: 500 bars dropped at the start, 500 new at the end
    msgs = series_messages(bars.symbol, bars.times, bars.values)
    cut = len(msgs) - 300
    history = RegimeModel(tiny_bundle).bundle.history_bars

    archive_dir = tmp_path / "archive"
    archiver = start_archiver(
        stack, tmp_path, name="refresh-archive", archive_dir=str(archive_dir), bars_topic="bars-refresh"
    )
    worker = start_worker(
        stack,
        tmp_path,
        name="refresh-worker",
        bundle=str(models),
        bars_topic="bars-refresh",
        events_topic="events-refresh",
        dlq_topic="dlq-refresh",
        group_id="refresh-worker",
        key_prefix="refresh",
        reload_interval=0.5,
        batch_size=64,
    )
    events = Collector(stack.bootstrap, "events-refresh")
    try:
        produce(stack.bootstrap, "bars-refresh", msgs[:cut])
        n_before = cut - history + 1
        events.wait_for(lambda v: len({e["bar_time"] for e in v}) >= n_before, 180, "events of the first bars")

        def archived() -> bool:
            return (metric_value(metrics_text(archiver.port), "regimetry_archive_bars_archived_total") or 0) >= cut

        wait_until(archived, 60, "the first bars archived")
        lines: list[dict] = []
        code = rs.run_once(
            profile, archive_dir, None, None, models, 0.0, 50, lambda ev, **kw: lines.append({"event": ev, **kw})
        )
        assert code == 0, lines
        published = next(x for x in lines if x["event"] == "published")
        new_version = published["model_version"]
        aligned = next(x for x in lines if x["event"] == "aligned")
        print(f"refresh from the archive: agreement {aligned.get('agreement')}, published {new_version}")
        assert (models / "CURRENT").read_text().strip() == new_version
        assert json.loads((models / new_version / "manifest.json").read_text())["data"]["source"].startswith(
            f"archive:{archive_dir}"
        )
        wait_until(lambda: "verified; switching" in worker.log.read_text(), 60, "the worker verified the new bundle")

        produce(stack.bootstrap, "bars-refresh", msgs[cut:])
        n_all = len(msgs) - history + 1
        got = events.wait_for(lambda v: len({e["bar_time"] for e in v}) >= n_all, 180, "events of every bar")
    finally:
        events.close()
        worker.stop()
        archiver.stop()

    raw: dict[int, set[bytes]] = {}
    for e in got:  # a bar delivered twice must give the very same event
        raw.setdefault(e["bar_time"], set()).add(json.dumps(e, sort_keys=True).encode())
    assert all(len(v) == 1 for v in raw.values()), "a bar with two different events"
    times = sorted(raw)
    assert times == bars.times[history - 1 :].tolist(), "one event per bar with a full window, none lost"
    by_time = {e["bar_time"]: e for e in got}
    versions = [by_time[t]["model_version"] for t in times]
    old_version = RegimeModel(tiny_bundle).bundle.version
    switch = versions.index(new_version)
    assert set(versions[:switch]) == {old_version} and set(versions[switch:]) == {new_version}
    assert switch >= cut - history + 1, "nothing before the publish was served by the new model"
    assert set(versions[cut - history + 1 :]) == {new_version}, "every bar after the publish: the new model"
