"""The producer SDK against the real local broker."""

from __future__ import annotations

import json
import socket
import threading
from collections import defaultdict

import pytest

from learntrack.config import Settings, get_settings
from learntrack.producers import (
    ActivityProducer,
    DeliveryError,
    DeliveryFailure,
    EventValidationError,
    QueueFullError,
)
from learntrack.topics import create_topic, read_topic

pytestmark = pytest.mark.stack


def event(i: int, student: str) -> dict[str, object]:
    return {
        "studentId": student,
        "courseId": "BD101",
        "action": "page_view",
        "timestamp": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "region": "EU",
    }


def test_send_n_consumes_exactly_n_with_keys_partitions_and_order(
    settings: Settings, prefix: str
) -> None:
    topic = f"{prefix}.activity"
    create_topic(settings, topic, 6)
    students = [f"S{i}" for i in range(40)]
    sent = []
    with ActivityProducer(settings, topic=topic) as producer:
        for i in range(1200):
            sent.append(producer.send(event(i, students[i % len(students)])))
    assert producer.delivered == 1200 and producer.failed == 0

    messages = read_topic(settings, topic)
    assert len(messages) == 1200
    values = [json.loads(m.value()) for m in messages]
    assert {v["eventId"] for v in values} == {str(e.eventId) for e in sent}
    partitions: dict[str, set[int]] = defaultdict(set)
    per_student: dict[str, list[str]] = defaultdict(list)
    for msg, value in sorted(
        zip(messages, values, strict=True),
        key=lambda mv: (mv[0].partition(), mv[0].offset()),
    ):
        assert msg.key().decode() == value["studentId"]
        partitions[value["studentId"]].add(msg.partition())
        per_student[value["studentId"]].append(value["timestamp"])
    # One student -> one partition, and their events in the order sent.
    assert all(len(p) == 1 for p in partitions.values())
    assert len({next(iter(p)) for p in partitions.values()}) > 1  # keys spread out
    for timestamps in per_student.values():
        assert timestamps == sorted(timestamps)


def test_invalid_event_raises_naming_the_field_and_sends_nothing(
    settings: Settings, prefix: str
) -> None:
    topic = f"{prefix}.activity"
    create_topic(settings, topic, 1)
    with ActivityProducer(settings, topic=topic) as producer:
        with pytest.raises(EventValidationError, match="region"):
            producer.send({**event(0, "S1"), "region": "MOON"})
        with pytest.raises(EventValidationError, match=r"event #2: action"):
            producer.send_many(
                [event(0, "S1"), event(1, "S2"), {**event(2, "S3"), "action": "x"}]
            )
        assert producer.sent == 0
    assert read_topic(settings, topic) == []


def test_threads_share_one_producer(settings: Settings, prefix: str) -> None:
    topic = f"{prefix}.activity"
    create_topic(settings, topic, 3)
    with ActivityProducer(settings, topic=topic) as producer:

        def work(t: int) -> None:
            for i in range(250):
                producer.send(event(i, f"T{t}-{i % 5}"))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert producer.sent == producer.delivered == 1000
    assert len(read_topic(settings, topic)) == 1000


def _dead_broker_settings() -> Settings:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on this port: every delivery must fail, visibly.
    return get_settings(
        kafka={"port": port},
        producer={"delivery_timeout_ms": 1500, "queue_full_timeout_s": 0.3},
    )


def test_delivery_failure_is_surfaced_when_the_broker_is_down() -> None:
    seen: list[DeliveryFailure] = []
    producer = ActivityProducer(_dead_broker_settings(), on_error=seen.append)
    producer.send(event(0, "S1"))
    producer.send(event(1, "S2"))
    with pytest.raises(DeliveryError) as info:
        producer.flush(15)
    assert info.value.total == 2
    assert producer.failed == 2 and producer.delivered == 0
    assert {f.key for f in seen} == {"S1", "S2"}
    # The failure carries the exact payload, eventId included, for a safe re-send.
    assert all(f.value and b'"eventId"' in f.value for f in seen)
    assert (
        "timed out" in seen[0].reason.lower() or "transport" in seen[0].reason.lower()
    )
    producer.close()  # failures already reported: closing does not raise again


def test_full_local_queue_waits_then_raises_a_named_error() -> None:
    producer = ActivityProducer(
        _dead_broker_settings(), config={"queue.buffering.max.messages": 50}
    )
    with pytest.raises(QueueFullError, match="local queue full"):
        for i in range(51):
            producer.send(event(i, "S1"))
    with pytest.raises(DeliveryError):
        producer.close(10)
