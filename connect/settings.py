"""Kafka and Redis connection settings from the environment (REGIMETRY_*) and an optional settings file.

The worker (worker/settings.py) and the operator tools (ops/) read the same variables, so one environment
configures both: the worker's Settings extends ConnectionSettings with its own knobs, and the tools load
ConnectionSettings alone. Precedence is defaults < settings file < environment < explicit overrides, so a
container can ship a file and an operator can still override one value. Secrets (Redis password, SASL
password, a password inside a URL) never reach repr or `redacted()`, which is what gets logged.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

ENV_PREFIX = "REGIMETRY_"
SETTINGS_FILE_ENV = "REGIMETRY_SETTINGS"
SECRET_FIELDS = frozenset({"redis_password", "kafka_sasl_password"})


class SettingsError(ValueError):
    """A setting that cannot be parsed; the message names the variable."""


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    # Kafka
    broker_url: str = "kafka://127.0.0.1:9092"
    bars_topic: str = "bars"
    events_topic: str = "regime-events"
    dlq_topic: str = "bars-dlq"
    drift_topic: str = "regime-drift"  # drift alarms (regimetry/schemas/drift_alarm.schema.json)
    transitions_topic: str = "regime-transitions"  # regime changes (regimetry/schemas/regime_transition.schema.json)
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    startup_timeout: float = 30.0  # seconds the broker and Redis may take to answer at start (then exit 3 / 4)
    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = ""
    redis_tls: bool = False
    redis_tls_cafile: str = ""
    # true: REGIMETRY_REDIS_URL names nodes of a Redis Cluster (one or more seeds, `redis://h1:6379;redis://h2:6379`)
    # and the worker speaks the cluster protocol (redis.asyncio.cluster.RedisCluster); false: a single Redis
    redis_cluster: bool = False
    key_prefix: str = "regimetry"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.redacted().items())})"

    def redacted(self) -> dict[str, Any]:
        """All settings with secrets masked: safe for logs."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in SECRET_FIELDS:
            out[name] = "***" if out[name] else ""
        for name in ("redis_url", "broker_url"):
            out[name] = mask_url(out[name])
        return out


S = TypeVar("S", bound=ConnectionSettings)


_URL_START = re.compile(r"(?=\b[A-Za-z][A-Za-z0-9+.-]*://)")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^:/@]*):(.*)@([^@]*)$", re.S)


def mask_url(url: str) -> str:
    """redis://user:secret@host -> redis://user:***@host (a password may live in the URL too).

    The password runs to the LAST '@' of its URL: a raw '@' inside it (which clients accept) must not leave
    its tail in the log. Several URLs in one setting (`kafka://b1;kafka://b2`) are masked one by one."""
    out = []
    for piece in _URL_START.split(url):
        m = _USERINFO.match(piece)
        out.append(f"{m.group(1)}{m.group(2)}:***@{m.group(4)}" if m else piece)
    return "".join(out)


def _parse(name: str, kind: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return tuple(raw) if kind == tuple[str, ...] else raw
    try:
        if kind is bool:
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind == tuple[str, ...]:
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        return raw
    except ValueError:
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {getattr(kind, '__name__', kind)}"
        ) from None


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SettingsError(f"settings file {path} (from {SETTINGS_FILE_ENV}) does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of setting names to values")
    return data


def load(cls: type[S], env: dict[str, str] | None = None, strict: bool = True, **overrides: Any) -> S:
    """Defaults, then the file named by REGIMETRY_SETTINGS, then REGIMETRY_* variables, then overrides.

    strict: a key of the settings file that is not a field of ``cls`` is an error (the worker's own load, so a
    typo is caught); the operator tools load ConnectionSettings with strict=False from the worker's file."""
    env = dict(os.environ if env is None else env)
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    if env.get(SETTINGS_FILE_ENV):
        for k, v in _read_file(Path(env[SETTINGS_FILE_ENV])).items():
            if k not in known:
                if strict:
                    raise SettingsError(f"unknown setting {k!r} in {env[SETTINGS_FILE_ENV]}")
                continue
            values[k] = _parse(k, hints[k], v)
    for name in known:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _parse(name, hints[name], raw)
    return replace(cls(**values), **overrides)


def load_connection_settings(env: dict[str, str] | None = None, **overrides: Any) -> ConnectionSettings:
    """The connection half of the worker's settings, for tools that talk to the same Kafka and Redis."""
    return load(ConnectionSettings, env, strict=False, **overrides)
