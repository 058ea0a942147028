"""The worker's settings: the shared connection settings (connect/settings.py) plus the worker's own knobs.

One flat dataclass keeps every knob greppable; precedence and secret masking are connect.settings'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connect.settings import ConnectionSettings, SettingsError, load, mask_url

__all__ = ["Settings", "SettingsError", "load_settings", "mask_url"]


@dataclass(frozen=True, repr=False)
class Settings(ConnectionSettings):
    # Kafka consumer group. Short group timeouts: Tansu (and small clusters) rebalance in seconds instead of ~30 s.
    group_id: str = "regimetry-worker"
    session_timeout: float = 10.0
    rebalance_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    commit_interval: float = 1.0
    # Static group membership (Kafka's group.instance.id, KIP-345): a worker restarted under the same id takes
    # its partitions back at once instead of waiting out its dead predecessor's session timeout. Give each
    # worker its own stable id (a StatefulSet pod name, a compose service replica name); "" = dynamic
    group_instance_id: str = ""
    # Faust hard-codes 1500, which delays every bar ~450 ms on Tansu; 100 still cost an idle worker ~35 ms per bar
    # (p50), 10 costs ~10 ms. Real Kafka answers a fetch as soon as a record arrives: there this only bounds how
    # often an idle consumer polls (<= 100 fetches/s at 10)
    fetch_max_wait_ms: int = 10
    # Producer: events are sent at once (linger 0), a partition's events of a batch in one record batch of up
    # to this many bytes (Faust's default 16 KiB split a 1,024-event batch into ~40 record batches, each one
    # waiting for the previous to drain); below the broker's default 1 MiB message limit
    producer_batch_bytes: int = 524_288
    # Redis
    redis_retry_max_seconds: float = 5.0  # back-off cap while Redis is unreachable
    dedupe_window: int = 1024  # bars and events kept per symbol so a redelivery re-emits its event
    # Model and inference
    bundle: str = "exported_models"
    reload_interval: float = 10.0  # seconds between checks of the bundle's CURRENT pointer; 0 = no hot reload
    ort_threads: int = 1
    # No effect since event schema 2 (the jump decoder replaced the kNN classifier on the serving path); still
    # parsed so settings files and environments that set it keep starting (a warning says it is ignored)
    classify_threads: int = 1
    batch_size: int = 1024  # bars per micro-batch at most: per-batch costs (Redis calls per symbol) amortise
    # seconds a partial micro-batch may wait to fill (an opt-in upper bound; 0: a batch is whatever arrived while
    # the previous one was processed, so a lone bar is processed at once: worker/batching.py)
    batch_within: float = 0.0
    # Records go from Faust's consumer straight into the micro-batch buffer (worker/kafka_boundary.py); false
    # sends them through Faust's agent stream instead: slower, same results, an escape hatch
    direct_records: bool = True
    # Input checks
    max_payload_bytes: int = 4096
    max_future_seconds: int = 86_400  # any bar further ahead of the worker clock is dead-lettered
    # ...and a bar further ahead than this many of its symbol's bar spacings (the median of its stored bars'),
    # so a bad future bar can hold a symbol's real bars back (as out of order) for about that many bars at most;
    # 0 = only the bound above
    max_future_bars: float = 1.0
    # Per-symbol Redis state expires this long after the symbol's last write (0 = never): a symbol that stops
    # trading stops costing memory; one that comes back later refills its window (no event for history_bars - 1)
    state_ttl_seconds: int = 7_776_000
    # Symbols whose state this worker keeps as its own last write left it, so their next batch skips the Redis
    # read (worker/state_cache.py; the compare-and-set write still guards it); ~32 KB each at decoder memory 256
    # (~13 KB per 128 of memory, ~6 KB of bars), so ~130 MB at 4,096; 0 = always read
    state_cache_symbols: int = 4096
    # Also read every cached symbol and stop on any difference (a test and debugging aid: costs the read back)
    state_cache_verify: bool = False
    allowed_symbols: tuple[str, ...] = ()
    # Metrics and drift
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    drift_horizon: int = 2000
    ood_quantile: str = "q99"
    symbol_label_limit: int = 64  # regimetry_current_regime{symbol} series at most
    log_level: str = "info"
    audit_log: str = ""  # JSON-lines audit of model loads and version changes (regimetry.audit); "" = off
    # ed25519 public key (PEM file): serve only bundles whose manifest.sig it verifies (regimetry/signing.py)
    bundle_public_key: str = ""

    @property
    def faust_broker(self) -> str:
        url = self.broker_url
        return url if "://" in url else f"kafka://{url}"


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then the file named by REGIMETRY_SETTINGS, then REGIMETRY_* variables, then overrides."""
    return load(Settings, env, **overrides)
