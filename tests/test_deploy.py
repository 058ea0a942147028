"""The production stack's files, tested without a Docker engine.

Static checks: every file parses; promtool accepts the config and rules and the alert unit tests pass; compose
service names, ports, mounts and REGIMETRY_* variables agree with the worker's settings, Prometheus and Grafana.
Live checks on the embedded stack: every metric the dashboard or an alert queries is exported by a running
worker, and a real Prometheus (Debian's, on loopback) scrapes that worker and answers queries about it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from deploy_helpers import (
    COMPOSE,
    DASHBOARD,
    GRAFANA_DIR,
    PROM_DIR,
    ROOT,
    alert_rules,
    compose,
    dashboard,
    dashboard_exprs,
    embedded_prometheus_config,
    interpolate,
    load_yaml,
    promtool,
    queried_metrics,
    service_env,
)

from worker.settings import Settings, load_settings

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
needs_prometheus = pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian prometheus not installed")
REGIMETRY_SERVICES = ("topics", "worker", "archive", "refresher")


def code_env_names() -> set[str]:
    """REGIMETRY_* names the code reads: one per Settings field, plus literal names in the sources."""
    from archive.settings import ArchiveSettings

    names = {f"REGIMETRY_{f.name.upper()}" for cls in (Settings, ArchiveSettings) for f in fields(cls)}
    for folder in ("regimetry", "connect", "worker", "archive", "ops", "trainer"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](REGIMETRY_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


# -- parsing -----------------------------------------------------------------------------------------------
def test_every_deployment_file_parses():
    for path in [COMPOSE, *PROM_DIR.glob("*.yml"), *GRAFANA_DIR.rglob("*.yml")]:
        assert isinstance(load_yaml(path), dict), path
    d = dashboard()
    assert d["uid"] and d["title"] == "Regime drift"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_panels_fit_the_grid_without_overlapping():
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    kinds = {p["type"] for p in dashboard()["panels"]}
    assert kinds <= {"row", "stat", "table", "timeseries", "state-timeline"}


def test_promtool_accepts_config_and_rules_and_alert_unit_tests_pass():
    for args in (
        ("check", "config", str(PROM_DIR / "prometheus.yml")),
        ("check", "rules", str(PROM_DIR / "alerts.yml")),
        ("test", "rules", str(PROM_DIR / "alerts.test.yml")),
    ):
        r = promtool(*args)
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    assert "SUCCESS" in promtool("test", "rules", str(PROM_DIR / "alerts.test.yml")).stdout


def test_promtool_really_rejects_a_broken_rule(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"alert": "X", "expr": "rate(regimetry_bars_consumed_total[5m]"}]}]}
        )
    )
    assert promtool("check", "rules", str(bad)).returncode != 0


# -- compose agrees with the code --------------------------------------------------------------------------
def test_compose_regimetry_variables_are_read_by_the_code():
    known = code_env_names()
    for name in REGIMETRY_SERVICES:
        env = service_env(compose()["services"][name])
        unknown = sorted(k for k in env if k.startswith("REGIMETRY_") and k not in known)
        assert not unknown, f"service {name} sets variables nothing reads: {unknown}"


def test_worker_service_settings_load_and_point_at_the_other_services():
    c = compose()
    services = c["services"]
    env = service_env(services["worker"], {"REDIS_PASSWORD": "pw"})
    s = load_settings(env=env)  # parses every value with the worker's own types
    assert s.redis_password == "pw"
    assert s.metrics_host == "0.0.0.0", (
        "a metrics endpoint on 127.0.0.1 cannot be scraped from the Prometheus container"
    )
    broker_host, broker_port = s.broker_url.split("://")[1].split(":")
    assert (
        broker_host in services
        and f"INTERNAL://{broker_host}:{broker_port}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert s.redis_url.split("//")[1].split(":")[0] in services
    assert "--requirepass" in services["redis"]["command"] and "--appendonly" in services["redis"]["command"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["worker"]["volumes"]}
    assert s.bundle in mounts, "the bundle path must be the shared models volume"
    assert mounts[s.bundle] in c["volumes"] and any(
        v.startswith(f"{mounts[s.bundle]}:") for v in services["trainer"]["volumes"]
    )
    assert Path(s.audit_log).parent.as_posix() in mounts, "the audit log must live on a volume"
    assert (s.bars_topic, s.events_topic, s.dlq_topic) == ("bars", "regime-events", "bars-dlq")
    assert services["trainer"]["profiles"] == ["train"]


def test_kafka_service_is_a_single_kraft_node_with_a_valid_cluster_id():
    import base64

    kafka = compose()["services"]["kafka"]
    env = service_env(kafka)
    assert kafka["image"].startswith("${KAFKA_IMAGE:-apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node == str(env["KAFKA_NODE_ID"]) and voter.split(":")[1] in env["KAFKA_LISTENERS"]
    raw = base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")
    assert len(env["CLUSTER_ID"]) == 22 and len(raw) == 16
    assert base64.urlsafe_b64encode(raw).decode().rstrip("=") == env["CLUSTER_ID"], (
        "no stray bits in the last character"
    )
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", (
        "topics come from the topics service, with their partition counts"
    )


def test_topics_service_creates_what_the_worker_consumes():
    from ops.topics import TOPIC_ENV

    services = compose()["services"]
    topics_env, worker_env = service_env(services["topics"]), service_env(services["worker"])
    assert services["topics"]["command"] == ["regimetry", "topics"]
    for key in ("REGIMETRY_BROKER_URL", "REGIMETRY_BARS_TOPIC", "REGIMETRY_EVENTS_TOPIC", "REGIMETRY_DLQ_TOPIC"):
        assert topics_env[key] == worker_env[key]
    assert set(TOPIC_ENV) <= set(topics_env) and int(topics_env["REGIMETRY_BARS_PARTITIONS"]) >= 1
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_the_worker_service_on_its_metrics_port():
    services = compose()["services"]
    s = load_settings(env=service_env(services["worker"]))
    job = next(
        j for j in load_yaml(PROM_DIR / "prometheus.yml")["scrape_configs"] if j["job_name"] == "regimetry-worker"
    )
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and "worker" in services
    assert sd["port"] == s.metrics_port and str(s.metrics_port) in map(str, services["worker"]["expose"])
    from archive.settings import load_archive_settings

    a = load_archive_settings(env=service_env(services["archive"]))
    archive_job = next(
        j for j in load_yaml(PROM_DIR / "prometheus.yml")["scrape_configs"] if j["job_name"] == "regimetry-archive"
    )
    assert archive_job["static_configs"][0]["targets"] == [f"archive:{a.archive_metrics_port}"]
    assert str(a.archive_metrics_port) in map(str, services["archive"]["expose"])
    assert a.archive_metrics_host == "0.0.0.0" and a.archive_group_id != s.group_id  # its own consumer group
    assert any(v.split(":")[1] == a.archive_dir for v in services["archive"]["volumes"])
    ref_env = service_env(services["refresher"])
    ref_job = next(
        j for j in load_yaml(PROM_DIR / "prometheus.yml")["scrape_configs"] if j["job_name"] == "regimetry-refresher"
    )
    assert ref_job["static_configs"][0]["targets"] == [f"refresher:{ref_env['REGIMETRY_REFRESH_METRICS_PORT']}"]
    assert ref_env["REGIMETRY_ARCHIVE_DIR"] == a.archive_dir  # reads what the archive writes
    mounts = {v.split(":")[1]: v for v in services["refresher"]["volumes"]}
    assert mounts[a.archive_dir].endswith(":ro") and ref_env["REGIMETRY_REFRESH_MODELS"] in mounts
    prom = services["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prom["volumes"]}
    assert mounts["./deploy/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    for rules in load_yaml(PROM_DIR / "prometheus.yml")["rule_files"]:
        assert (PROM_DIR / rules).exists()


def test_grafana_provisioning_matches_mounts_and_dashboard():
    services = compose()["services"]
    graf = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in graf["volumes"]}
    ds = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    host, port = urllib.parse.urlsplit(ds["url"]).netloc.split(":")
    assert host in services and f"{port}:{port}" in services["prometheus"]["ports"][0]
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "regimetry.yml")["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert (
        graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        == f"{provider['options']['path']}/{DASHBOARD.name}"
    )
    uids = {p["datasource"]["uid"] for p in dashboard()["panels"] if "datasource" in p}
    uids |= {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}
    assert interpolate(graf["ports"][0]) == "3000:3000"


def test_drift_alarms_are_annotated_charted_and_alerted():
    """The alarm counter drives a dashboard annotation (on every panel), a panel of its own and an alert (whose
    promtool unit test is in alerts.test.yml)."""
    d = dashboard()
    notes = [a for a in d["annotations"]["list"] if "regimetry_drift_alarms_total" in a.get("expr", "")]
    assert len(notes) == 1 and notes[0]["enable"] and re.search(r"increase\(|changes\(", notes[0]["expr"])
    assert any("regimetry_drift_alarms_total" in t["expr"] for p in d["panels"] for t in p.get("targets", []))
    rule = next(r for r in alert_rules() if r.get("alert") == "RegimeDriftAlarm")
    assert "regimetry_drift_alarms_total" in rule["expr"]
    assert "RegimeDriftAlarm" in (PROM_DIR / "alerts.test.yml").read_text()


def test_dockerfiles_keep_tensorflow_out_of_the_worker_image():
    worker = (ROOT / "docker" / "worker.Dockerfile").read_text()
    trainer = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert 'pip install ".[worker,archive]"' in worker
    instructions = "\n".join(ln for ln in worker.splitlines() if not ln.lstrip().startswith("#"))
    assert not re.search(r"tensorflow|\.\[[^\]]*train", instructions), (
        "the worker image must not install the train extra"
    )
    assert 'pip install ".[train]"' in trainer
    for text in (worker, trainer):
        for src in re.findall(r"^COPY (?:--\S+ )*(\S+(?: \S+)*) \S+$", text, re.M):
            for part in src.split():
                assert (ROOT / part).exists(), f"COPY source {part} missing"
    assert 'CMD ["regimetry", "worker"]' in worker
    s = load_settings(env=service_env(compose()["services"]["worker"]))
    assert f"EXPOSE {s.metrics_port}" in worker


def test_every_dashboard_and_alert_query_is_valid_promql(tmp_path):
    exprs = [e.replace("$__rate_interval", "1m").replace("$symbol", ".*") for e in dashboard_exprs()]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(exprs) >= 15


# -- against a running worker ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fed_worker(stack, worker, model, fresh_symbols):
    """The session worker after events for two symbols and one dead letter of this module."""
    from helpers import series

    from devstack.kafka_kit import interleave, produce, series_messages
    from devstack.stack import metric_value, metrics_text, wait_until

    history = model.bundle.history_bars
    *served, malformed = fresh_symbols(3)
    data = {s: series(s, history + 30, seed=300 + i) for i, s in enumerate(served)}
    before = metric_value(metrics_text(worker.port), "regimetry_events_emitted_total") or 0.0
    dead_before = metric_value(
        metrics_text(worker.port), "regimetry_bars_dead_lettered_total", {"reason": "malformed_json"}
    )
    produce(
        stack.bootstrap,
        "bars",
        interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
        + [(malformed.encode(), b"{not json")],
    )
    wait_until(
        lambda: metric_value(metrics_text(worker.port), "regimetry_events_emitted_total") >= before + 2 * 31,
        90,
        f"events of {served} emitted",
    )
    wait_until(
        lambda: (
            metric_value(metrics_text(worker.port), "regimetry_bars_dead_lettered_total", {"reason": "malformed_json"})
            >= dead_before + 1
        ),
        30,
        "malformed message dead-lettered",
    )
    return worker


@pytest.mark.slow
def test_every_queried_metric_is_exported_by_a_running_worker(fed_worker, service_metrics):
    """... or by the archive or the refresher (their panels and alerts)."""
    from prometheus_client.parser import text_string_to_metric_families

    from devstack.stack import metrics_text

    exported = {
        s.name
        for port in (fed_worker.port, *service_metrics.values())
        for fam in text_string_to_metric_families(metrics_text(port))
        for s in fam.samples
    }
    wanted = queried_metrics(dashboard_exprs() + [r["expr"] for r in alert_rules()])
    assert {
        "regimetry_drift_psi",
        "regimetry_bars_consumed_total",
        "regimetry_end_to_end_latency_seconds_bucket",
        "regimetry_current_regime",
        "regimetry_bars_dead_lettered_total",
    } <= wanted
    missing = sorted(wanted - exported)
    assert not missing, f"queried but exported by none of the services: {missing}"


@pytest.mark.slow
def test_worker_image_healthcheck_passes_against_a_ready_worker(fed_worker):
    """The HEALTHCHECK command of docker/worker.Dockerfile, run as written (port swapped) on a live worker."""
    text = (ROOT / "docker" / "worker.Dockerfile").read_text()
    cmd = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (python -c .+)$", text, re.M).group(1)
    code = re.fullmatch(r'python -c "(.+)"', cmd).group(1)
    s = load_settings(env=service_env(compose()["services"]["worker"]))
    assert f"127.0.0.1:{s.metrics_port}/metrics" in code
    import sys

    ok = subprocess.run([sys.executable, "-c", code.replace(f":{s.metrics_port}/", f":{fed_worker.port}/")], timeout=30)
    assert ok.returncode == 0
    from devstack.stack import free_port

    down = subprocess.run(
        [sys.executable, "-c", code.replace(f":{s.metrics_port}/", f":{free_port()}/")], capture_output=True, timeout=30
    )
    assert down.returncode != 0, "the healthcheck must fail when nothing answers"


def prom_query(port: int, query: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]


@pytest.fixture(scope="module")
def service_metrics():
    """The archive's and the refresher's real metrics (their own registries and HTTP servers, in-process, as
    the services serve them): {job name: port}."""
    from archive.service import ArchiveMetrics
    from devstack.stack import free_port
    from trainer.refresher import RefresherMetrics

    servers, ports = [], {}
    for job, metrics in (("regimetry-archive", ArchiveMetrics()), ("regimetry-refresher", RefresherMetrics())):
        ports[job] = free_port()
        servers.append(metrics.serve("127.0.0.1", ports[job]))
    yield ports
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def prometheus(fed_worker, service_metrics, tmp_path_factory):
    """Debian's prometheus on a free loopback port, scraping the session worker, and the archive's and the
    refresher's metrics, every second."""
    from devstack.stack import Process, free_port, wait_until

    assert Path(PROMETHEUS).exists(), "Debian prometheus is required: bash scripts/setup.sh installs it"
    work = tmp_path_factory.mktemp("prometheus")
    rules = work / "alerts.yml"
    rules.write_text((PROM_DIR / "alerts.yml").read_text())
    cfg = work / "prometheus.yml"
    others = {job: [f"127.0.0.1:{port}"] for job, port in service_metrics.items()}
    cfg.write_text(yaml.safe_dump(embedded_prometheus_config([f"127.0.0.1:{fed_worker.port}"], rules, others=others)))
    assert promtool("check", "config", str(cfg)).returncode == 0
    port = free_port()
    log = work / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    p = Process("prometheus", proc, log, port)
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200,
            60,
            "prometheus ready",
        )
        yield p
    finally:
        p.stop()


@pytest.mark.slow
@needs_prometheus
def test_real_prometheus_scrapes_drift_and_throughput(prometheus, fed_worker):
    from devstack.stack import wait_until

    def scraped() -> dict | None:
        psi = prom_query(prometheus.port, 'regimetry_drift_psi{job="regimetry-worker"}')["result"]
        bars = prom_query(prometheus.port, 'sum(regimetry_bars_consumed_total{job="regimetry-worker"})')["result"]
        if psi and bars and float(bars[0]["value"][1]) > 0:
            return {"psi": float(psi[0]["value"][1]), "bars": float(bars[0]["value"][1])}
        return None

    got = wait_until(scraped, 60, "prometheus holds the worker's drift gauge and throughput counter", interval=0.5)
    assert got["psi"] >= 0.0 and got["bars"] >= 2 * 30
    up = prom_query(prometheus.port, 'up{job="regimetry-worker"}')["result"]
    assert [float(r["value"][1]) for r in up] == [1.0]


@pytest.mark.slow
@needs_prometheus
def test_real_prometheus_loads_the_alerts_and_answers_every_dashboard_query(prometheus, fed_worker):
    from devstack.stack import wait_until

    def groups() -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{prometheus.port}/api/v1/rules", timeout=5) as r:
            return json.loads(r.read())["data"]["groups"]

    loaded = wait_until(groups, 30, "rule groups loaded")
    assert {r["name"] for g in loaded for r in g["rules"]} == {r["alert"] for r in alert_rules()}
    assert all(r["health"] != "err" for g in loaded for r in g["rules"]), loaded
    # Every panel's query runs; the ones on gauges and counters return series once scraped.
    wait_until(lambda: prom_query(prometheus.port, "regimetry_regime_share")["result"], 30, "regime shares scraped")
    for job in ("regimetry-archive", "regimetry-refresher"):  # scraped on their own schedule: wait for each
        wait_until(lambda j=job: prom_query(prometheus.port, f'up{{job="{j}"}} == 1')["result"], 30, f"{job} up")
    for expr in dashboard_exprs():
        data = prom_query(prometheus.port, expr.replace("$__rate_interval", "1m").replace("$symbol", ".*"))
        if not re.search(r"rate\(|increase\(|histogram_quantile", expr):  # need two scrapes first
            assert data["result"], f"no series for dashboard query {expr}"
