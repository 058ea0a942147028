"""`regimetry refresher`: the periodic refresh as a service, reading its bars from the archive.

Every ``every`` seconds: the last ``window`` of the profile's symbol from the bar archive (regimetry/bar_archive.py,
written by `regimetry archive`), then one refresh exactly as `regimetry refresh` runs it (trainer/refresh.py:
warm start, alignment, publish only above the agreement threshold, the models root's lock held throughout).
Workers pick up a published CURRENT by hot reload. Its outcome goes to Prometheus, so a flagged or failing
refresh raises an alert instead of a line in a cron mail nobody reads:

    regimetry_refresh_runs_total{outcome}             published | up_to_date | flagged | failed
    regimetry_refresh_last_run_timestamp_seconds      when the last run ended
    regimetry_refresh_last_success_timestamp_seconds  when a run last published or found nothing to do
    regimetry_refresh_last_exit_code                  0 ok, 3 flagged, else failed (trainer/refresh.py)
    regimetry_refresh_last_agreement                  share of windows keeping their id (NaN if not measured)
    regimetry_refresh_model_info{model_version}       1 for the bundle CURRENT names
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from regimetry.data import BarDataError, BarSeries

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '24h', '180d' (or plain seconds) -> seconds."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h or 180d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def archive_window(archive: Path, symbol: str, window: float | None, now: float | None = None) -> BarSeries:
    """The symbol's archived bars of the last ``window`` seconds before its newest bar (all if None)."""
    from regimetry.bar_archive import read_archive
    from regimetry.data import validate_bars

    held = read_archive(archive, [symbol])
    if symbol not in held:
        raise BarDataError(f"the archive {archive} holds no bars of {symbol!r}")
    times, values = held[symbol]
    if window is not None:
        newest = times[-1] if now is None else now
        keep = times > newest - window
        times, values = times[keep], values[keep]
    validate_bars(times, values, f"archive:{archive}#{symbol}")
    return BarSeries(times, values, symbol)


class RefresherMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        r = self.registry = CollectorRegistry()
        self.runs = Counter("regimetry_refresh_runs_total", "Refresh runs by outcome", ["outcome"], registry=r)
        self.last_run = Gauge("regimetry_refresh_last_run_timestamp_seconds", "When the last run ended", registry=r)
        self.last_success = Gauge(
            "regimetry_refresh_last_success_timestamp_seconds",
            "When a run last published or found nothing to do",
            registry=r,
        )
        self.exit_code = Gauge("regimetry_refresh_last_exit_code", "Exit code of the last run", registry=r)
        self.agreement = Gauge(
            "regimetry_refresh_last_agreement", "Share of windows keeping their regime id (last run)", registry=r
        )
        self.model = Gauge(
            "regimetry_refresh_model_info", "1 for the bundle CURRENT names", ["model_version"], registry=r
        )
        for outcome in ("published", "up_to_date", "flagged", "failed"):
            self.runs.labels(outcome=outcome)
        self.agreement.set(math.nan)

    def serve(self, host: str, port: int):
        """Serve /metrics on a daemon thread; returns (server, thread) so a caller may shut it down."""
        from prometheus_client import start_http_server

        return start_http_server(port, host, registry=self.registry)

    def record(self, code: int, outcome, models: Path) -> None:
        from trainer.refresh import EXIT_FLAGGED

        status = outcome.status if outcome is not None else ("flagged" if code == EXIT_FLAGGED else "failed")
        self.runs.labels(outcome=status).inc()
        now = time.time()
        self.last_run.set(now)
        self.exit_code.set(code)
        if status in ("published", "up_to_date"):
            self.last_success.set(now)
        agreement = ((outcome.alignment or {}) if outcome is not None else {}).get("agreement")
        self.agreement.set(math.nan if agreement is None else float(agreement))
        self.model.clear()
        pointer = models / "CURRENT"
        if pointer.exists():
            self.model.labels(model_version=pointer.read_text().strip()).set(1)


def run_once(
    profile: Path,
    archive: Path,
    symbol: str | None,
    window: float | None,
    models: Path,
    min_agreement: float,
    min_windows: int,
    log: Callable[..., None],
    metrics: RefresherMetrics | None = None,
) -> int:
    """One refresh from the archive; returns its exit code (trainer/refresh.py)."""
    from trainer import refresh as rf

    try:
        sym = symbol or _profile_symbol(profile)
    except BarDataError as exc:
        log("error", exit_code=rf.EXIT_USAGE, message=str(exc))
        if metrics is not None:
            metrics.record(rf.EXIT_USAGE, None, models)
        return rf.EXIT_USAGE
    data = f"archive:{archive}#{sym}"
    code, outcome = rf.run_guarded(
        profile,
        data,
        lambda: archive_window(archive, sym, window),
        models,
        None,
        min_agreement,
        min_windows,
        models / "transitions.jsonl",
        log,
    )
    if metrics is not None:
        metrics.record(code, outcome, models)
    return code


def _profile_symbol(profile: Path) -> str:
    import yaml

    try:
        doc = yaml.safe_load(Path(profile).read_text()) or {}
    except OSError as exc:
        raise BarDataError(f"cannot read the locked profile {profile}: {exc}") from None
    symbol = ((doc.get("data") or {}).get("symbol")) if isinstance(doc, dict) else None
    if not symbol:
        raise BarDataError(f"{profile} names no symbol; pass --symbol")
    return str(symbol)


def run_forever(every: float, once: Callable[[], int], stop: threading.Event, log: Callable[..., None]) -> None:
    """Run ``once`` now and then every ``every`` seconds (measured from each start) until ``stop`` is set."""
    while not stop.is_set():
        started = time.monotonic()
        code = once()  # every failure is an exit code (run_once / trainer.refresh.run_guarded)
        log("next_run", in_seconds=round(max(every - (time.monotonic() - started), 0.0), 1), last_exit_code=code)
        stop.wait(max(every - (time.monotonic() - started), 0.0))


def json_line(event: str, **fields) -> None:
    print(json.dumps({"event": event, "time": time.time(), **fields}, default=str), flush=True)
