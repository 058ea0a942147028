"""Reading the deployment files the way their consumers do (compose, Prometheus, Grafana), for tests/test_deploy.py,
and starting Debian's prometheus on loopback against an embedded worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "regime-drift.json"
METRIC = re.compile(r"\b(regimetry_[a-z0-9_]+)\b")
COMPOSE_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?([-?])([^}]*))?\}")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def compose() -> dict:
    return load_yaml(COMPOSE)


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error} with the given environment (defaults otherwise)."""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, default = m.groups()
        return env.get(name, default if op == "-" else f"<{name}>")

    return COMPOSE_VAR.sub(sub, str(value))


def service_env(service: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    return {k: interpolate(v, env) for k, v in (service.get("environment") or {}).items()}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    """Every query of the dashboard: its panels' targets and its annotation queries."""
    d = dashboard()
    panels = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    return panels + [a["expr"] for a in d.get("annotations", {}).get("list", []) if "expr" in a]


def alert_rules() -> list[dict]:
    return [r for g in load_yaml(PROM_DIR / "alerts.yml")["groups"] for r in g["rules"]]


def queried_metrics(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def embedded_prometheus_config(
    targets: list[str], rules: Path, interval: str = "1s", others: dict[str, list[str]] | None = None
) -> dict:
    """The repository's prometheus.yml with the worker job scraping `targets` instead of Docker DNS, and the
    jobs named in `others` (archive, refresher) scraping the targets given for them; other jobs dropped."""
    cfg = load_yaml(PROM_DIR / "prometheus.yml")
    cfg["global"].update(scrape_interval=interval, evaluation_interval=interval)
    cfg["rule_files"] = [str(rules)]
    jobs = []
    for job in cfg["scrape_configs"]:
        if job["job_name"] == "regimetry-worker":
            job = {k: v for k, v in job.items() if k != "dns_sd_configs"}
            job.update(scrape_interval=interval, static_configs=[{"targets": targets}])
            jobs.append(job)
        elif job["job_name"] in (others or {}):
            jobs.append({**job, "scrape_interval": interval, "static_configs": [{"targets": others[job["job_name"]]}]})
    cfg["scrape_configs"] = jobs
    return cfg
