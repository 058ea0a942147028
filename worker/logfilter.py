"""Rate-limit the Kafka client's repeated warning and error lines.

Why: while the broker is away (a restart, a network cut) aiokafka logs the same few errors from several
loggers every ~100 ms: ~80 lines per second against the embedded broker. That buries the lines an operator
needs ("partitions assigned" once it is back) and fills disks. Each distinct message template of each logger
passes at most once per interval; a later line says how many were held back, so nothing disappears without
a trace. Informational lines are never held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

KAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.consumer",
    "aiokafka.producer.sender",
    "aiokafka.producer.producer",
)
REPEAT_INTERVAL = 5.0  # seconds


class RepeatFilter(logging.Filter):
    """Lets one WARNING+ record per (logger, message template) through per `interval` seconds."""

    def __init__(self, interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._passed: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # aiokafka logs from Faust's consumer thread too

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            if record.levelno >= logging.WARNING:
                last = self._passed.get(key)
                if last is not None and now - last < self.interval:
                    self._held[key] = self._held.get(key, 0) + 1
                    return False
                self._passed[key] = now
            # the count of held-back lines rides on the next line that passes once their interval is over
            # (an INFO such as "Discovered coordinator" when the broker is back, or the error again)
            due = [k for k in self._held if now - self._passed[k] >= self.interval or k == key]
            held = sum(self._held.pop(k) for k in due)
        if held:
            record.msg = f"{record.msg} [{held} repeated Kafka client warnings/errors held back]"
        return True


def limit_kafka_log_repeats(interval: float = REPEAT_INTERVAL) -> RepeatFilter:
    """Attach one RepeatFilter to every aiokafka logger (a logger's filters see only its own records)."""
    f = RepeatFilter(interval)
    for name in KAFKA_LOGGERS:
        logging.getLogger(name).addFilter(f)
    return f
