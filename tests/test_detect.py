"""Multi-region detection: the detector's logic, then the real stream and stores.

The pure tests drive :class:`learntrack.streaming.detect.Detector` directly. The
stack tests publish to their own topics, run ``StreamJob`` for real (detection
runs inside its batches)
and read the alerts back from MongoDB, Redis, the graph and the alerts topic.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st

from learntrack.clients import mongo_client, redis_client
from learntrack.config import Settings
from learntrack.errors import LearnTrackError
from learntrack.evaluate import evaluate, evaluate_stored, percentile
from learntrack.producers import ActivityProducer
from learntrack.sinks import redis as redis_names
from learntrack.sinks.alerts import ALERTS, alert_doc, alert_sinks
from learntrack.sinks.graph import multi_region
from learntrack.stack.manager import Stack
from learntrack.streaming.detect import Detector, _closest_elsewhere, alert_id
from learntrack.streaming.job import StreamJob
from learntrack.topics import ensure_topics, read_topic
from tests.helpers import (
    assert_matches_truth,
    dataset,
    isolated,
    publish_data,
    publish_records,
    run_cli,
)

MIN = 60_000
W = 30 * MIN
T0 = 1_795_000_000_000  # 2026-11-19, in ms


def fresh() -> dict[str, list[Any]]:
    return {"events": [], "alerts": []}


def ev(minute: float, region: str, eid: str) -> tuple[int, str, str, int]:
    ts = T0 + int(minute * MIN)
    return (ts, region, eid, ts + 1000)


# -- the detector's logic (pure) ------------------------------------------------------
def test_two_regions_inside_the_window_alert_once_outside_never() -> None:
    d = Detector(W, 5 * MIN)
    state = fresh()
    rows = d.step("s1", state, [ev(0, "EU", "a"), ev(12, "US", "b")], 0)
    assert len(rows) == 1
    row = rows[0]
    assert row[0] == alert_id("s1", "a", "b") == alert_id("s1", "b", "a")
    assert row[1:9] == (
        "s1", "impossible_travel", "a", T0, "EU", "b", T0 + 12 * MIN, "US",
    )  # fmt: skip
    assert row[9] == T0 + 12 * MIN + 1000  # ingest time of the later event

    far = fresh()
    assert d.step("s2", far, [ev(0, "EU", "a"), ev(31, "US", "b")], 0) == []


def test_out_of_order_arrival_across_batches_is_still_caught() -> None:
    d = Detector(W, 5 * MIN)
    state = fresh()
    # The later event arrives first, in its own batch; the earlier one next batch.
    assert d.step("s", state, [ev(20, "US", "late-region")], 0) == []
    rows = d.step("s", state, [ev(18, "EU", "home")], T0 + 10 * MIN)
    assert [(r[3], r[6], r[2]) for r in rows] == [
        ("home", "late-region", "concurrent_sessions")
    ]


def test_duplicates_and_one_episode_give_one_alert_a_new_episode_another() -> None:
    d = Detector(W, 5 * MIN)
    state = fresh()
    batch = [ev(0, "EU", "a"), ev(3, "US", "b"), ev(4, "EU", "c"), ev(5, "US", "d")]
    assert len(d.step("s", state, batch, 0)) == 1
    assert d.step("s", state, [ev(3, "US", "b")], 0) == []  # re-sent event
    rows = d.step("s", state, [ev(120, "EU", "e"), ev(125, "US", "f")], 0)
    assert [(r[3], r[6]) for r in rows] == [("e", "f")]


def test_state_is_pruned_behind_the_watermark_and_expires() -> None:
    d = Detector(W, 5 * MIN)
    state = fresh()
    d.step("s", state, [ev(0, "EU", "a"), ev(10, "US", "b")], 0)
    assert len(state["events"]) == 2
    expiry = d.expires_at(state, T0)
    assert expiry == T0 + 10 * MIN + W + 1
    d.step("s", state, [], T0 + 45 * MIN)  # watermark - W = minute 15
    assert state == {"events": [], "alerts": []}
    assert d.expires_at(state, T0 + 45 * MIN) > T0 + 45 * MIN


def _closest_by_scan(
    seen: list[tuple[int, str, str, int]], ts: int, region: str
) -> tuple[int, str, str, int] | None:
    """The reference: scan every stored event (what the binary search replaces)."""
    best = None
    for other in seen:
        if other[1] == region or abs(ts - other[0]) > W:
            continue
        if best is None or (abs(ts - other[0]), other[2]) < (
            abs(ts - best[0]),
            best[2],
        ):
            best = other
    return best


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.integers(0, 240),
            st.sampled_from(["EU", "US", "AF"]),
            st.integers(0, 10**6),
        ),
        max_size=40,
        unique_by=lambda e: e[2],  # an eventId is one event: one time, one region
    ),
    st.integers(0, 240),
    st.sampled_from(["EU", "US", "AF"]),
)
def test_the_binary_search_finds_what_a_full_scan_finds(
    stored: list[tuple[int, str, int]], minute: int, region: str
) -> None:
    seen = [ev(m, r, f"e{n:07d}") for m, r, n in stored]
    by_region: dict[str, list[tuple[int, str, str, int]]] = {}
    for e in sorted(seen):
        by_region.setdefault(e[1], []).append(e)
    ts = T0 + minute * MIN
    assert _closest_elsewhere(by_region, region, ts, W) == _closest_by_scan(
        seen, ts, region
    )


def test_evaluation_figures_are_computed_from_alerts_and_truth() -> None:
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)

    def alert(sid: str, kind: str, first: str, lag_s: float) -> dict[str, Any]:
        return {
            "alertId": str(uuid.uuid4()), "studentId": sid, "kind": kind,
            "timestamp": now, "ingestedAt": now,
            "detectedAt": now + dt.timedelta(seconds=lag_s),
            "first": {"eventId": first}, "second": {"eventId": "x"},
        }  # fmt: skip

    truth = {
        "anomalies": [
            {"studentId": "a", "kind": "impossible_travel", "homeEventId": "h1",
             "foreignEventIds": ["f1"]},
            {"studentId": "b", "kind": "concurrent_sessions", "homeEventId": "h2",
             "foreignEventIds": ["f2"]},
        ]
    }  # fmt: skip
    alerts = [
        alert("a", "impossible_travel", "h1", 1.0),
        alert("z", "impossible_travel", "q", 3.0),
    ]
    report = evaluate(alerts, truth)
    assert (report.precision, report.recall) == (0.5, 0.5)
    assert report.kind_agreement == 1.0
    assert report.evidence_matches == 1
    assert report.missed == ["b"]
    assert report.false_students == ["z"]
    assert report.latency_s["p50"] == 1.0
    assert report.latency_s["max"] == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0], 50) == 2.0


# -- the real stream -------------------------------------------------------------------


def _stored_alerts(settings: Settings) -> list[dict[str, Any]]:
    with mongo_client(settings) as client:
        return list(client[settings.mongo.database][ALERTS].find({}))


def _check_cli(
    truth: dict[str, Any], anomalous: set[str], tmp_path: Path, env: dict[str, str]
) -> None:
    """`eval fraud` and `query multi-region` on the stored alerts and graph.

    The CLI runs as a subprocess given this test's settings as ``env``.
    """

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env)

    truth_file = tmp_path / "truth.json"
    truth_file.write_bytes(orjson.dumps(truth))
    done = cli("eval", "fraud", "--truth", str(truth_file))
    assert done.returncode == 0, done.stderr
    assert "100.00%" in done.stdout
    assert "detection latency p99" in done.stdout
    done = cli("query", "multi-region", "--window", "30m", "--json")
    assert done.returncode == 0, done.stderr
    listed = {row["studentId"] for row in json.loads(done.stdout)}
    assert listed == anomalous
    # A window shorter than every injected gap finds fewer (or no) students.
    done = cli("query", "multi-region", "--window", "1s", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) < len(anomalous)
    done = cli("query", "multi-region", "--window", "soon")
    assert done.returncode == 2  # noqa: PLR2004
    assert done.stderr.count("\n") == 1 and "invalid duration" in done.stderr
    missing = str(tmp_path / "nope.json")
    done = cli("eval", "fraud", "--truth", missing)
    assert done.returncode == 2  # noqa: PLR2004
    assert "no such file" in done.stderr
    not_truth = tmp_path / "other.json"
    not_truth.write_text("[1, 2]")
    done = cli("eval", "fraud", "--truth", str(not_truth))
    assert done.returncode == 2  # noqa: PLR2004
    assert done.stderr.count("\n") == 1 and "not a truth file" in done.stderr


@pytest.mark.stack
@pytest.mark.spark
@pytest.mark.usefixtures("stack")
def test_stream_alerts_equal_the_anomalies_in_every_store_and_the_cli_reports_them(
    spark: Any,
    prefix: str,
    tmp_path: Path,
) -> None:
    settings, env = isolated(prefix, tmp_path)
    job = StreamJob(settings, available_now=True, report=lambda _l: None)
    job.reset()
    data, truth = publish_data(settings, 6000, seed=21)
    job.run(spark)
    assert job.alerts_written > 0
    assert_matches_truth(settings, truth, spark)  # includes the alert checks

    report = evaluate_stored(settings, truth)
    assert report.recall == 1.0
    assert report.precision == 1.0
    assert report.evidence_matches == report.true_alerts

    # Counted in Redis per student, linked in the graph to student and evidence.
    docs = _stored_alerts(settings)
    one = docs[0]
    with redis_client(settings) as r:
        assert r.sismember(redis_names.student_alerts_key(one["studentId"]), one["_id"])
    anomalous = {a["studentId"] for a in truth["anomalies"]}
    from learntrack.clients import graph_driver

    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        record = session.run(
            "MATCH (x:Alert {alertId: $id})-[:CONCERNS]->(s:Student) "
            "MATCH (x)-[:EVIDENCE]->(a:Activity)<-[:PERFORMED]-(s) "
            "RETURN s.studentId AS sid, collect(a.eventId) AS events",
            id=one["_id"],
        ).single()
    assert record is not None
    assert record["sid"] == one["studentId"]
    assert sorted(record["events"]) == sorted(
        [one["first"]["eventId"], one["second"]["eventId"]]
    )

    # The investigation query over the graph finds the same students.
    found = multi_region(settings, 1800)
    assert {row["studentId"] for row in found} == anomalous
    assert all(e["gapS"] <= 1800 for row in found for e in row["evidence"])
    assert all(len(row["regions"]) >= 2 for row in found)  # noqa: PLR2004

    _check_cli(truth, anomalous, tmp_path, env)

    # Losing the checkpoint while alerts are stored is refused (the alert topic's
    # markers are keyed by batch id): restore it, or --reset.
    from learntrack.sinks.alerts import ALERTS

    orphan_dir = tmp_path / "orphan"
    orphan = settings.model_copy(
        update={
            "spark": settings.spark.model_copy(update={"checkpoint_dir": orphan_dir})
        }
    )
    with mongo_client(settings) as client:
        client[settings.mongo.database]["students"].update_many(
            {}, {"$unset": {"streamBatch": ""}}
        )
        assert client[settings.mongo.database][ALERTS].count_documents({}) > 0
    with pytest.raises(LearnTrackError, match="checkpoint"):
        StreamJob(orphan, report=lambda _l: None).start(spark)


@pytest.mark.stack
@pytest.mark.spark
def test_out_of_order_events_in_separate_batches_are_still_caught(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    settings, _env = isolated(prefix, tmp_path)
    StreamJob(settings, report=lambda _l: None).reset()
    ensure_topics(settings)
    base = dt.datetime(2026, 11, 19, 9, tzinfo=dt.UTC)

    def send(student: str, minutes: float, region: str) -> str:
        eid = str(uuid.uuid4())
        event = {
            "eventId": eid, "studentId": student, "courseId": "c1",
            "action": "page_view", "region": region,
            "timestamp": (base + dt.timedelta(minutes=minutes)).isoformat(),
        }  # fmt: skip
        with ActivityProducer(settings) as producer:
            producer.send(event)
        return eid

    def run() -> StreamJob:
        job = StreamJob(settings, available_now=True, report=lambda _l: None)
        job.run(spark)
        return job

    student = f"{prefix}-ooo"
    # First batch: the later event (11:58, ASIA) and another student's 12:00.
    foreign = send(student, 178, "ASIA")
    send(f"{prefix}-other", 180, "EU")
    assert run().alerts_written == 0
    # A later batch: the earlier event (11:55, EU) arrives after it, within the
    # allowed lateness (1 h behind the newest event time seen).
    home = send(student, 175, "EU")
    assert run().alerts_written == 1

    (alert,) = _stored_alerts(settings)
    assert alert["studentId"] == student
    assert (alert["first"]["eventId"], alert["second"]["eventId"]) == (home, foreign)
    assert alert["kind"] == "concurrent_sessions"
    assert alert["gapSeconds"] == 180.0  # noqa: PLR2004
    assert alert["regions"] == ["ASIA", "EU"]


def _stream_cmd() -> list[str]:
    return [sys.executable, "-m", "learntrack.cli", "stream", "--available-now"]


@pytest.mark.stack
@pytest.mark.spark
@pytest.mark.slow
def test_kill_9_right_after_alerts_are_written_replays_without_duplicates(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    settings, env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="3000"
    )
    StreamJob(settings, report=lambda _l: None).reset()
    _data, truth = publish_data(settings, 12_000, seed=22)
    proc = subprocess.Popen(
        _stream_cmd(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        # Alerts written, the detection batch not yet committed: the replay window.
        if line.startswith("alerts batch"):
            break
        assert time.monotonic() < deadline, "no alerts batch:\n" + "".join(lines)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    before = {d["_id"] for d in _stored_alerts(settings)}
    assert before

    done = subprocess.run(
        _stream_cmd(), env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = {d["_id"] for d in _stored_alerts(settings)}
    assert before <= after
    topic_ids = [
        orjson.loads(m.value())["alertId"]
        for m in read_topic(settings, settings.topics.alerts)
    ]
    assert sorted(topic_ids) == sorted(after)  # each alert published once
    assert_matches_truth(settings, truth, spark)


@pytest.mark.stack
def test_alert_sinks_repeat_a_batch_harmlessly(stack: Stack, prefix: str) -> None:
    settings, _env = isolated(prefix, Path("/nonexistent"))
    ensure_topics(settings)
    # Recent: the hourly alert sets expire 30 days after their hour.
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    ms = int(now.timestamp() * 1000)
    row = {
        "alertId": alert_id(f"{prefix}-s", "e1", "e2"), "studentId": f"{prefix}-s",
        "kind": "impossible_travel", "firstEventId": "e1", "firstMs": ms - 600_000,
        "firstRegion": "EU", "secondEventId": "e2", "secondMs": ms,
        "secondRegion": "US", "ingestedMs": ms + 500,
    }  # fmt: skip
    sinks = alert_sinks(settings, writer_id=prefix)
    for sink in sinks.values():
        sink.reset()
        sink.open()
    try:
        for attempt in range(2):  # the same batch twice: a replay
            doc = alert_doc(row, now + dt.timedelta(seconds=attempt))
            for sink in sinks.values():
                sink.write_batch(7, [doc])
    finally:
        for sink in sinks.values():
            sink.close()
    stored = _stored_alerts(settings)
    assert len(stored) == 1
    assert stored[0]["detectedAt"] == now  # the first write's time stays
    assert stored[0]["gapSeconds"] == 600.0  # noqa: PLR2004
    assert stored[0]["regions"] == ["EU", "US"]
    with redis_client(settings) as r:
        assert r.scard(redis_names.ALL_ALERTS) == 1
        assert r.scard(redis_names.hour_alerts_key(f"{now:%Y%m%d%H}")) == 1
    assert len(read_topic(settings, settings.topics.alerts)) == 1


@pytest.mark.stack
@pytest.mark.spark
def test_a_partition_behind_in_event_time_is_not_made_late(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    """A capped backlog drains partitions at different event times.

    150 students over a day in 400-record batches: one partition ran two hours
    behind the others, and one watermark for all partitions (newest event time
    anywhere minus the 1 h lateness) made its anomaly late: 1 of 2 alerted. Each
    partition's own watermark alerts both.
    """
    from learntrack.producers.generator import build_truth, delivery_stream

    settings, _env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="400"
    )
    StreamJob(settings, report=lambda _l: None).reset()
    data = dataset(settings, 6000, seed=22, bad_ratio=0.01)
    truth = build_truth(data)
    assert len(truth["anomalies"]) == 2  # noqa: PLR2004
    publish_records(settings, list(delivery_stream(data)))
    StreamJob(settings, available_now=True, report=lambda _l: None).run(spark)
    report = evaluate_stored(settings, truth)
    assert (report.recall, report.precision) == (1.0, 1.0)
    assert_matches_truth(settings, truth, spark)


@pytest.mark.stack
def test_the_event_clock_is_per_partition_and_fixed_per_batch(
    stack: Stack, prefix: str
) -> None:
    from learntrack.streaming.detect import EventClock

    settings, _env = isolated(prefix, Path("/nonexistent"))
    clock = EventClock(settings)  # lateness 1 h
    hour = 3_600_000
    with redis_client(settings) as r:
        r.delete(redis_names.DETECT_CLOCK)
        assert clock.watermarks(r, 0) == {}
        clock.advance(r, {0: 10 * hour, 1: 3 * hour})
        assert clock.watermarks(r, 1) == {0: 9 * hour, 1: 2 * hour}
        # Batch 1 replayed after more time went by: the same watermarks.
        clock.advance(r, {0: 12 * hour})
        assert clock.watermarks(r, 1) == {0: 9 * hour, 1: 2 * hour}
        # The next batch moves on; a newest time that goes back moves nothing.
        clock.advance(r, {0: 5 * hour, 1: 4 * hour})
        assert clock.watermarks(r, 2) == {0: 11 * hour, 1: 3 * hour}
        r.delete(redis_names.DETECT_CLOCK)
