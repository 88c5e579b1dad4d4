"""Helpers for tests that talk to the real broker: unique topics, read-all."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from learntrack.config import Settings


def create_topic(settings: Settings, name: str, partitions: int = 6) -> None:
    """Create a test topic with a bounded retention."""
    admin = AdminClient(settings.kafka.client_config())
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config={"retention.ms": "3600000"})]
    )
    for fut in futures.values():
        fut.result(15)


def read_all(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every message of ``topic`` from offset 0 to the end of each partition."""
    import time

    admin = AdminClient(settings.kafka.client_config())
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"test-read-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    parts = sorted(meta.partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    done: set[int] = set()
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(done) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    done.add(int(msg.partition() or 0))
                    continue
                raise RuntimeError(error)
            messages.append(msg)
    finally:
        consumer.close()
    assert len(done) == len(parts), "did not reach the end of every partition"
    return messages
