"""Topic creation on the real broker: idempotent, bounded retention, growth."""

from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from learntrack.config import Settings, get_settings
from learntrack.topics import ensure_topics

pytestmark = pytest.mark.stack


def _settings(prefix: str, partitions: int) -> Settings:
    return get_settings(
        topics={
            "activity": f"{prefix}.a",
            "dlq": f"{prefix}.a.dlq",
            "alerts": f"{prefix}.al",
        },
        kafka={"partitions": partitions, "retention_ms": 3_600_000},
    )


def test_ensure_topics_is_idempotent_and_bounded(
    settings: Settings, prefix: str
) -> None:
    cfg = _settings(prefix, 6)
    first = ensure_topics(cfg)
    assert [(s.name, s.partitions, s.action) for s in first] == [
        (f"{prefix}.a", 6, "created"),
        (f"{prefix}.a.dlq", 6, "created"),
        (f"{prefix}.al", 6, "created"),
    ]
    assert [s.action for s in ensure_topics(cfg)] == ["exists"] * 3
    admin = AdminClient(cfg.kafka.client_config())
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[f"{prefix}.a"].partitions) == 6
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{prefix}.a")
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "3600000"


def test_more_partitions_in_settings_grow_the_topic(
    settings: Settings, prefix: str
) -> None:
    ensure_topics(_settings(prefix, 2))
    grown = ensure_topics(_settings(prefix, 4))
    assert [(s.partitions, s.action) for s in grown] == [(4, "grown")] * 3
    admin = AdminClient(settings.kafka.client_config())
    assert len(admin.list_topics(timeout=10).topics[f"{prefix}.a"].partitions) == 4


def test_stack_up_created_the_default_topics(settings: Settings) -> None:
    admin = AdminClient(settings.kafka.client_config())
    topics = admin.list_topics(timeout=10).topics
    for name in ("learntrack.activity", "learntrack.activity.dlq", "learntrack.alerts"):
        assert name in topics
        assert len(topics[name].partitions) == settings.kafka.partitions


def test_cli_topics_create_prints_each_topic(settings: Settings) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "topics", "create"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("learntrack.activity", "learntrack.activity.dlq", "learntrack.alerts"):
        assert name in proc.stdout
    assert "exists" in proc.stdout


def test_reset_topics_empties_and_recreates_them(
    settings: Settings, prefix: str
) -> None:
    from confluent_kafka import Producer

    from learntrack.topics import reset_topics, topic_sizes

    cfg = _settings(prefix, 3)
    ensure_topics(cfg)
    producer = Producer(cfg.kafka.client_config())
    for i in range(20):
        producer.produce(cfg.topics.activity, key=f"k{i}", value=b"x")
    assert producer.flush(10) == 0
    assert topic_sizes(cfg)[cfg.topics.activity] == 20
    assert f"{prefix}.a" in reset_topics(cfg)
    sizes = topic_sizes(cfg)
    assert sizes == {f"{prefix}.a": 0, f"{prefix}.a.dlq": 0, f"{prefix}.al": 0}
