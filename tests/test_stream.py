"""The streaming fan-out end to end on the real stack, against the generator's truth.

Each test publishes a generated data set to its own topics and MongoDB database,
streams it, and checks every store with :mod:`learntrack.verify` (exact counts,
scores within a relative 1e-9). The kill -9 and cluster runs use a separate
``learntrack stream`` process, as users do.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from learntrack.config import Settings
from learntrack.stack.manager import Stack
from learntrack.streaming.job import StreamJob
from learntrack.streaming.kafka_source import checkpoint_offsets
from tests.helpers import assert_matches_truth, isolated, publish_data

pytestmark = [pytest.mark.stack, pytest.mark.spark]


def publish_dataset(settings: Settings, events: int, seed: int) -> dict[str, Any]:
    """Publish a generated data set; return its truth."""
    return publish_data(settings, events, seed)[1]


def _last_batch_records(spark: Any, settings: Settings) -> tuple[int, Any]:
    """The last committed batch's id and its exact raw records (from Kafka)."""
    from confluent_kafka import Consumer, TopicPartition

    offsets_dir = settings.checkpoint_dir / "stream" / "offsets"
    ids = sorted(int(p.name) for p in offsets_dir.iterdir() if p.name.isdigit())
    last = ids[-1]

    def source_offsets(batch: int) -> dict[str, int]:
        lines = (offsets_dir / str(batch)).read_text().splitlines()
        offsets = checkpoint_offsets(lines[2], settings.topics.activity)
        return {str(p): o for p, o in offsets.items()}

    end = source_offsets(last)
    start = source_offsets(last - 1) if last > 0 else dict.fromkeys(end, 0)
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": "replay",
            "enable.auto.commit": False,
        }
    )
    rows = []
    for p, stop in end.items():
        first = start.get(p, 0)
        if stop <= first:
            continue
        consumer.assign([TopicPartition(settings.topics.activity, int(p), first)])
        while True:
            msg = consumer.poll(10)
            assert msg is not None and msg.error() is None
            ts = dt.datetime.fromtimestamp(msg.timestamp()[1] / 1000, dt.UTC)
            offset = int(msg.offset() or 0)
            rows.append((msg.key(), msg.value(), msg.topic(), int(p), offset, ts))
            if offset >= stop - 1:
                break
    consumer.close()
    schema = (
        "key binary, value binary, topic string, partition int, offset long, "
        "timestamp timestamp"
    )
    return last, spark.createDataFrame(rows, schema)


def test_available_now_fills_every_store_exactly_and_replays_change_nothing(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    settings, _env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="1500"
    )
    job = StreamJob(settings, available_now=True, report=lambda _l: None)
    job.reset()  # a clean Redis, graph, lake and DLQ for this test
    data, truth = publish_data(settings, 5000, seed=11)
    reports = job.run(spark)
    assert len(reports) >= 3  # 5,100 records at <= 1,500 per batch
    # One Spark job a batch; the executor sinks ran inside it, so none took longer.
    assert all(set(r.steps) == {"clock", "job", "read", "parse"} for r in reports)
    assert all(r.steps["clock"] + r.steps["job"] <= r.seconds for r in reports)
    executor = {"mongo.activities", "lake", "mongo.students", "redis", "graph"}
    assert all(executor <= set(r.sinks) for r in reports)
    assert all(max(r.sinks[s] for s in executor) <= r.steps["job"] for r in reports)
    assert all(0 < r.freshness["p50"] <= r.freshness["p99"] for r in reports)
    assert sum(r.valid for r in reports) == 5000
    assert sum(r.invalid for r in reports) == truth["counts"]["malformed"] == 100
    assert_matches_truth(settings, truth, spark)

    # Replay the last batch with its exact records, as Spark does after a crash
    # inside foreachBatch: every store must be unchanged.
    batch_id, records = _last_batch_records(spark, settings)
    assert records.count() > 0
    replay = StreamJob(settings, available_now=True, report=lambda _l: None)
    replay.open_sinks()
    try:
        replay.process_batch(records, batch_id)
    finally:
        replay.close_sinks()
    assert replay.batches[0].valid + replay.batches[0].invalid == records.count()
    assert_matches_truth(settings, truth, spark)

    # A producer that re-sends (same eventIds, later batches): counted once.
    from learntrack.producers import ActivityProducer
    from learntrack.producers.generator import event_bytes

    with ActivityProducer(settings) as producer:
        for event in data.events[:3000]:
            producer.send_serialized(event[2], event_bytes(event))
            if event is data.events[100]:
                producer.send_serialized(
                    event[2], event_bytes(event)
                )  # twice in a batch
    again = StreamJob(settings, available_now=True, report=lambda _l: None).run(spark)
    assert sum(r.duplicates for r in again) == 3001
    assert_matches_truth(settings, truth, spark)


def test_recent_counts_match_the_events(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    from learntrack.clients import redis_client
    from learntrack.sinks.redis import recent_counts

    settings, _env = isolated(prefix, tmp_path)
    job = StreamJob(settings, available_now=True, report=lambda _l: None)
    job.reset()
    data, truth = publish_data(settings, 3000, seed=14)
    job.run(spark)
    busiest = max(truth["perStudent"], key=lambda s: truth["perStudent"][s]["total"])
    mine = sorted(e[0] for e in data.events if e[2] == busiest)
    as_of = dt.datetime.fromtimestamp(mine[len(mine) // 2] / 1000, dt.UTC)
    minute = int(as_of.timestamp() // 60)
    expected_hour = sum(1 for t in mine if minute - 60 < t // 60_000 <= minute)
    expected_day = sum(1 for t in mine if minute - 1440 < t // 60_000 <= minute)
    client = redis_client(settings)
    try:
        got = recent_counts(client, busiest, as_of)
    finally:
        client.close()
    assert got == {"lastHour": expected_hour, "lastDay": expected_day}
    assert 0 < expected_hour <= expected_day

    # The checkpoint is lost but the stream's state is not: refuse, say what to do.
    from learntrack.errors import LearnTrackError

    orphan = settings.model_copy(
        update={
            "spark": settings.spark.model_copy(
                update={"checkpoint_dir": tmp_path / "x"}
            )
        }
    )
    with pytest.raises(LearnTrackError, match="--reset"):
        StreamJob(orphan, report=lambda _l: None).start(spark)


def _stream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "learntrack.cli", "stream", "--available-now", *args]


# Crash and stop: tests/test_crash.py kills `learntrack stream` with kill -9
# at random moments, then stops it with SIGTERM (clean exit after the batch in
# flight), and checks every store, the lake, the alerts and the DLQ against the
# truth; it replaced the single-kill and SIGTERM tests that were here.


@pytest.mark.slow
def test_standalone_cluster_gives_the_same_result(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    stack.up(spark_cluster=True, report=lambda _m: None)
    settings, env = isolated(prefix, tmp_path)
    StreamJob(settings, report=lambda _l: None).reset()
    truth = publish_dataset(settings, 4000, seed=13)
    done = subprocess.run(
        _stream_cmd("--cluster"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "batch 0:" in done.stdout
    assert_matches_truth(settings, truth, spark)
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps(truth))
    verified = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "verify", "--truth", str(truth_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "NO" not in verified.stdout
