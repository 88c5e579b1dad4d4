"""The Kafka topics LearnTrack uses, created idempotently.

Runs in the CLI process (``learntrack topics create``, ``stack up``) and in tests.
``learntrack.activity`` is keyed by studentId (one student's events stay in order in
one partition); the dead-letter and alert topics have the same partition count.
Every topic gets a bounded ``retention.ms`` (the local broker holds data in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from learntrack.config import Settings
from learntrack.errors import LearnTrackError


@dataclass(frozen=True)
class TopicState:
    """What ``ensure_topics`` found or did for one topic."""

    name: str
    partitions: int
    action: str  # "created", "exists", "grown"


def topic_names(settings: Settings) -> list[str]:
    """The topics LearnTrack owns."""
    t = settings.topics
    return [t.activity, t.dlq, t.alerts]


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[TopicState]:
    """Create missing topics; add partitions where settings ask for more; idempotent."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    k = settings.kafka
    admin = AdminClient(k.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    states: list[TopicState] = []
    to_create = []
    for name in topic_names(settings):
        if name not in existing:
            to_create.append(
                NewTopic(
                    name,
                    num_partitions=k.partitions,
                    replication_factor=k.replication_factor,
                    config={"retention.ms": str(k.retention_ms)},
                )
            )
            continue
        have = len(existing[name].partitions)
        if have < k.partitions:
            for fut in admin.create_partitions(
                [NewPartitions(name, k.partitions)]
            ).values():
                fut.result(timeout_s)
            states.append(TopicState(name, k.partitions, "grown"))
        else:
            states.append(TopicState(name, have, "exists"))
    if to_create:
        for name, fut in admin.create_topics(to_create).items():
            try:
                fut.result(timeout_s)
                states.append(TopicState(name, k.partitions, "created"))
            except KafkaException as err:
                if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    msg = f"could not create topic {name}: {err}"
                    raise LearnTrackError(msg) from err
                states.append(TopicState(name, k.partitions, "exists"))
    order = {n: i for i, n in enumerate(topic_names(settings))}
    return sorted(states, key=lambda s: order[s.name])
