"""`regimetry topics`: create the worker's topics (bars, regime-events, regime-drift, regime-transitions,
bars-dlq) if they do not exist.

docker-compose runs it once before the worker starts; it is the same code against any cluster, so an operator
can create the topics on an existing Kafka with the same REGIMETRY_* settings the worker uses. Partition counts
come from REGIMETRY_*_PARTITIONS (the bars partition count caps how many worker processes share the load);
regime-drift and regime-transitions get as many partitions as regime-events (they are keyed by symbol too).
"""

from __future__ import annotations

from dataclasses import dataclass

from connect.settings import ConnectionSettings as Settings

# Environment variables read by `regimetry topics` (besides the worker's own settings), with defaults.
TOPIC_ENV = {
    "REGIMETRY_BARS_PARTITIONS": 6,
    "REGIMETRY_EVENTS_PARTITIONS": 6,
    "REGIMETRY_DLQ_PARTITIONS": 1,
    "REGIMETRY_REPLICATION_FACTOR": 1,
}


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int


def plan(s: Settings, bars: int, events: int, dlq: int) -> list[TopicPlan]:
    return [
        TopicPlan(s.bars_topic, bars),
        TopicPlan(s.events_topic, events),
        TopicPlan(s.drift_topic, events),
        TopicPlan(s.transitions_topic, events),
        TopicPlan(s.dlq_topic, dlq),
    ]


def ensure_topics(s: Settings, topics: list[TopicPlan], replication: int = 1, timeout: float = 60.0) -> dict[str, int]:
    """Create missing topics, wait until their metadata shows every partition; returns name -> partitions.

    Retries while the broker is still starting (compose starts this next to Kafka). Existing topics are left
    as they are, even with another partition count: changing partitions would move keys between partitions.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from devstack.stack import wait_until
    from ops.kafka import admin

    client = wait_until(lambda: admin(s), timeout, "Kafka answering the admin client", interval=1.0)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(t.name, t.partitions, replication) for t in topics if t.name not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:  # another initialiser won the race: fine
                pass

        def visible() -> dict[str, int]:
            found = {d["topic"]: len(d["partitions"]) for d in client.describe_topics([t.name for t in topics])}
            ok = all(found.get(t.name, 0) >= (1 if t.name in existing else t.partitions) for t in topics)
            return found if ok else {}

        return wait_until(visible, timeout, f"topics {[t.name for t in topics]} visible")
    finally:
        client.close()
