"""The Kafka topics LearnTrack uses, created idempotently.

Runs in the CLI process (``learntrack topics create``, ``stack up``) and in tests.
``learntrack.activity`` is keyed by studentId (one student's events stay in order in
one partition); the dead-letter and alert topics have the same partition count.
Every topic gets a bounded ``retention.ms``, so a local disk never fills up.
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


def create_topic(
    settings: Settings,
    name: str,
    partitions: int,
    retention_ms: int | None = None,
    timeout_s: float = 15.0,
) -> bool:
    """Create ``name`` with a bounded retention; True if created, False if it existed.

    The retention defaults to ``kafka.retention_ms``: no LearnTrack topic is
    unbounded.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    k = settings.kafka
    retention = str(retention_ms or k.retention_ms)
    topic = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=k.replication_factor,
        config={"retention.ms": retention},
    )
    admin = AdminClient(k.client_config())  # must outlive the future below
    future = admin.create_topics([topic])[name]
    try:
        future.result(timeout_s)
    except KafkaException as err:
        if err.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        msg = f"could not create topic {name}: {err}"
        raise LearnTrackError(msg) from err
    return True


def delete_topics(
    settings: Settings, names: list[str], timeout_s: float = 30.0
) -> list[str]:
    """Delete those of ``names`` that exist; returns them. Destructive."""
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    existing = admin.list_topics(timeout=10).topics
    doomed = [n for n in names if n in existing]
    if doomed:
        for fut in admin.delete_topics(doomed).values():
            fut.result(timeout_s)
        time.sleep(1.0)  # let the broker forget them before they are re-created
    return doomed


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[TopicState]:
    """Create missing topics; add partitions where settings ask for more; idempotent."""
    from confluent_kafka.admin import AdminClient, NewPartitions

    k = settings.kafka
    admin = AdminClient(k.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    states: list[TopicState] = []
    for name in topic_names(settings):
        if name not in existing:
            created = create_topic(settings, name, k.partitions, timeout_s=timeout_s)
            states.append(
                TopicState(name, k.partitions, "created" if created else "exists")
            )
            continue
        have = len(existing[name].partitions)
        if have < k.partitions:
            grow = admin.create_partitions([NewPartitions(name, k.partitions)])
            for fut in grow.values():
                fut.result(timeout_s)
            states.append(TopicState(name, k.partitions, "grown"))
        else:
            states.append(TopicState(name, have, "exists"))
    return states


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
    wanted = [*topic_names(settings), f"{settings.topics.dlq}.commits"]
    deleted = delete_topics(settings, wanted, timeout_s)
    ensure_topics(settings, timeout_s)
    return deleted


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every committed record of ``topic``, from the start to the end of each partition.

    For small topics and tests (the DLQ, test topics); reads ``read_committed``.

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
