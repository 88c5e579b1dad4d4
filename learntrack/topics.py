"""The Kafka topics LearnTrack uses, created idempotently.

Runs in the CLI process (``learntrack topics create``, ``stack up``) and in tests.
``learntrack.activity`` is keyed by studentId (one student's events stay in order in
one partition); the dead-letter and alert topics have the same partition count.
Every topic gets a bounded ``retention.ms`` (the local broker holds data in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def topic_sizes(settings: Settings) -> dict[str, int]:
    """Records currently held per LearnTrack topic (high - low watermark, summed)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": "learntrack-sizes"}
    )
    sizes: dict[str, int] = {}
    try:
        meta = consumer.list_topics(timeout=10).topics
        for name in topic_names(settings):
            total = 0
            for p in meta.get(name).partitions if name in meta else []:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=10
                )
                total += high - low
            sizes[name] = total
    finally:
        consumer.close()
    return sizes


def reset_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Delete LearnTrack's topics (and the DLQ writer's markers), then recreate them.

    Destructive: every record in them is gone. Used by demos and tests.
    """
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    existing = admin.list_topics(timeout=10).topics
    wanted = [*topic_names(settings), f"{settings.topics.dlq}.commits"]
    names = [n for n in wanted if n in existing]
    if names:
        for fut in admin.delete_topics(names).values():
            fut.result(timeout_s)
        time.sleep(1.0)
    ensure_topics(settings, timeout_s)
    return names


def read_committed(
    settings: Settings, topic: str, timeout_s: float = 10.0
) -> list[Any]:
    """Every committed record of ``topic`` (read_committed; for small topics: DLQ).

    Offsets are not a record count on a transactional topic: commit markers take
    offsets too. Runs in the CLI process and tests.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"learntrack-read-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    records: list[Any] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        while len(done) < len(parts):
            msg = consumer.poll(timeout_s)
            if msg is None:
                msg_text = f"timed out reading {topic}"
                raise LearnTrackError(msg_text)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    done.add(int(msg.partition() or 0))
                    continue
                raise LearnTrackError(f"reading {topic}: {err}")
            records.append(msg)
    finally:
        consumer.close()
    return records
