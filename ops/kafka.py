"""kafka-python clients built from the connection settings the worker reads too (connect/settings.py).

One translation of REGIMETRY_BROKER_URL and the SASL/TLS settings into kafka-python keyword arguments, so
`replay`, `tail`, `report-events` and `topics` authenticate exactly like the worker (which goes through
Faust/aiokafka with the same settings) and an operator configures a cluster once.
"""

from __future__ import annotations

from typing import Any

from connect.kafka import auth_kwargs, bootstrap_servers
from connect.settings import ConnectionSettings as Settings

__all__ = ["admin", "assign_all", "bootstrap_servers", "client_config", "consumer", "producer"]


def client_config(s: Settings) -> dict[str, Any]:
    """Connection keyword arguments shared by KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    cfg: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(s.broker_url), **auth_kwargs(s)}
    if "SSL" in cfg["security_protocol"]:
        cfg.update(
            ssl_cafile=s.kafka_ssl_cafile or None,
            ssl_certfile=s.kafka_ssl_certfile or None,
            ssl_keyfile=s.kafka_ssl_keyfile or None,
            ssl_check_hostname=True,
        )
    return cfg


def producer(s: Settings, **kwargs: Any):
    """A producer that waits for the leader's ack; small linger so paced replays still go out promptly."""
    from kafka import KafkaProducer

    return KafkaProducer(**client_config(s), **{"linger_ms": 5, "acks": 1, **kwargs})


def consumer(s: Settings, topic: str | None, from_beginning: bool, group: str | None = None, **kwargs: Any):
    """A consumer of one topic (or none, for manual assignment); without a group it commits nothing."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        *([topic] if topic else []),
        **client_config(s),
        group_id=group,
        enable_auto_commit=group is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **kwargs,
    )


def admin(s: Settings):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**client_config(s), request_timeout_ms=10_000)


def assign_all(consumer, topic: str, from_beginning: bool) -> list:
    """Read every partition of `topic` without a group, positioned now at its start or end.

    Positions are resolved before returning, so a caller that then says "following" really follows: nothing
    sent afterwards is skipped. (Some brokers report end offsets too low; a viewer then shows a few older
    records, which is harmless, whereas correctness-critical readers start from the beginning.)
    """
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise LookupError(f"topic {topic!r} does not exist (or has no partitions)")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
    for tp in tps:
        consumer.position(tp)
    return tps
