"""Audit log of model loads: which bundle a worker served, from when, and when the version changed.

JSON lines, append-only, one record per load, so `grep`/`jq` answer "which model produced the events of
Tuesday?" without a database. The previous record's version is read back from the same file, so a restart
onto a new bundle is written as `model_changed` even though the process itself only ever loads once.
Several worker processes may share one file: each record is a single O_APPEND write (atomic for lines this
short on a local filesystem) followed by fsync.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

ROTATE_BYTES = 64 * 1024 * 1024  # a log this large is moved aside to <name>.1 before the next record


def last_record(path: Path) -> dict | None:
    """The last complete JSON line of the log (reads only the tail of a large file)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for raw in reversed(lines):
        try:
            doc = json.loads(raw)
        except ValueError:
            continue  # a torn or foreign line: skip it rather than lose the audit trail
        if isinstance(doc, dict):
            return doc
    return None


def model_load_record(manifest: dict, bundle_dir: Path, previous: dict | None, **context: Any) -> dict:
    """What one load is worth remembering: version, where from, the file digests it was verified against."""
    version = str(manifest["model_version"])
    prev_version = previous.get("model_version") if previous else None
    return {
        "ts": time.time(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "event": "model_loaded" if prev_version in (None, version) else "model_changed",
        "model_version": version,
        "previous_version": prev_version,
        "bundle_dir": str(bundle_dir),
        "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
        "files": manifest.get("files", {}),
        "feature_spec_hash": manifest.get("feature_spec_hash"),
        "created_at": manifest.get("created_at"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **context,
    }


def append(path: str | Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > ROTATE_BYTES:
        path.replace(path.with_name(path.name + ".1"))
    data = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def record_model_load(path: str | Path, manifest: dict, bundle_dir: Path, **context: Any) -> dict:
    """Append the record of loading `manifest` and return it (the worker's one hook)."""
    record = model_load_record(manifest, bundle_dir, last_record(Path(path)), **context)
    append(path, record)
    return record
