"""Each sink on its real server: replays change nothing, late events stay late."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from learntrack.clients import graph_driver, mongo_client, redis_client
from learntrack.config import Settings, get_settings
from learntrack.errors import RetryableSinkError
from learntrack.sinks.alerts import GraphAlertSink
from learntrack.sinks.dlq import DeadLetterSink
from learntrack.sinks.graph import GraphSink, delete_nodes
from learntrack.sinks.mongo import (
    MongoActivitySink,
    MongoStudentSink,
    activity_summary,
)
from learntrack.sinks.redis import PREFIX, RedisScoreSink
from learntrack.topics import ensure_topics, read_topic

pytestmark = pytest.mark.stack

T1 = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_every_sink_reports_healthy(settings: Settings) -> None:
    for sink in (
        MongoActivitySink(settings),
        MongoStudentSink(settings),
        RedisScoreSink(settings),
        GraphSink(settings),
    ):
        status = sink.status()
        assert status.healthy, status


def test_mongo_activities_tell_a_replay_from_a_resent_event(
    settings: Settings, prefix: str
) -> None:
    cfg = get_settings(mongo={"database": prefix})
    row = {
        "eventId": f"{prefix}-e1",
        "studentId": "S1",
        "courseId": "C1",
        "action": "page_view",
        "timestamp": T1,
        "region": "EU",
    }
    with MongoActivitySink(cfg) as sink:
        assert sink.write_and_find_earlier(4, [row]) == (1, [])
        assert sink.write_and_find_earlier(4, [row]) == (0, [])  # replay of batch 4
        assert sink.write_and_find_earlier(7, [row]) == (0, [row["eventId"]])  # re-sent
    with mongo_client(cfg) as client:
        assert client[prefix]["activities"].count_documents({}) == 1
        client.drop_database(prefix)


def student(sid: str, last: dt.datetime, region: str, total: int) -> dict[str, Any]:
    return {
        "studentId": sid,
        "total": total,
        "actions": {"page_view": total},
        "lastAt": last,
        "lastRegion": region,
        "lastCourse": "C1",
    }


def test_mongo_students_fenced_and_late_events_do_not_overwrite(
    settings: Settings, prefix: str
) -> None:
    cfg = get_settings(mongo={"database": prefix})
    with MongoStudentSink(cfg) as sink:
        sink.write_batch(1, [student("S1", T2, "US", 3)])
        sink.write_batch(1, [student("S1", T2, "US", 3)])  # replay: no change
        sink.write_batch(2, [student("S1", T1, "EU", 2)])  # late event, older time
    with mongo_client(cfg) as client:
        # A registered student the stream has not seen: the profile stays.
        client[prefix]["students"].insert_one({"studentId": "S2", "name": "Ada"})
    with MongoStudentSink(cfg) as sink:
        sink.write_batch(3, [student("S2", T1, "EU", 1)])
    with mongo_client(cfg) as client:
        doc = client[prefix]["students"].find_one({"studentId": "S1"})
        profile = client[prefix]["students"].find_one({"studentId": "S2"})
        client.drop_database(prefix)
    assert profile is not None and profile["name"] == "Ada"
    assert profile["activity"]["total"] == 1 and profile["streamBatch"] == 3
    assert doc is not None
    activity = doc["activity"]
    assert activity["total"] == 5
    assert activity["byAction"] == {"page_view": 5}
    assert activity["last"]["region"] == "US"
    assert activity["lastAt"].replace(tzinfo=dt.UTC) == T2
    assert activity_summary(activity)["lastRegion"] == "US"
    assert activity_summary(activity)["lastCourse"] == "C1"
    # A document from before ``last`` existed, then updated by the new sink: a
    # newer event moves lastAt and ``last`` together; a late one only sets ``last``.
    old = {"total": 1, "lastAt": T1, "lastRegion": "EU", "lastCourse": "C0"}
    assert activity_summary(old)["lastRegion"] == "EU"
    newer = {**old, "lastAt": T2, "last": {"at": T2, "region": "US", "course": "C1"}}
    assert activity_summary(newer)["lastRegion"] == "US"
    early = T1 - dt.timedelta(hours=1)
    late = {**old, "last": {"at": early, "region": "US", "course": "C1"}}
    assert activity_summary(late)["lastRegion"] == "EU"


def redis_row(sid: str, anchor: float) -> dict[str, Any]:
    return {
        "studentId": sid,
        "total": 2,
        "actions": {"quiz_attempt": 2},
        "anchor": anchor,
        "courseAnchors": {"C9": anchor},
        "minutes": {29_000_000: 2},
        "lastAt": "2026-11-20T10:00:00.000Z",
    }


def test_redis_replay_with_other_chunking_changes_nothing(
    settings: Settings, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import learntrack.sinks.redis as redis_sink

    cfg = get_settings(redis={"db": 3})
    RedisScoreSink(cfg).reset()
    rows = [redis_row(f"{prefix}-{i}", 1.5 + i) for i in range(7)]
    with RedisScoreSink(cfg) as sink:
        monkeypatch.setattr(redis_sink, "CHUNK", 3)
        assert sink.write_batch(10, rows) == 7
        monkeypatch.setattr(redis_sink, "CHUNK", 2)  # a replay chunked differently
        assert sink.write_batch(10, list(reversed(rows))) == 0
        assert sink.write_batch(11, rows[:1]) == 1
    client = redis_client(cfg)
    try:
        board = dict(client.zrange(f"{PREFIX}lb:global", 0, -1, withscores=True))
        assert board[f"{prefix}-0".encode()] == pytest.approx(3.0)
        assert board[f"{prefix}-6".encode()] == pytest.approx(7.5)
        assert client.hget(f"{PREFIX}student:{prefix}-3", "total") == b"2"
        course = client.zscore(f"{PREFIX}lb:course:C9", f"{prefix}-0")
        assert course == pytest.approx(3.0)
    finally:
        client.flushdb()
        client.close()


def test_graph_fenced_and_late_events_keep_the_last_region(
    settings: Settings, prefix: str
) -> None:
    sid = f"{prefix}-S"

    def row(last: dt.datetime, region: str) -> dict[str, Any]:
        return {
            "studentId": sid,
            "lastRegion": region,
            "lastAt": iso(last),
            "regions": [
                {"code": region, "count": 1, "first": iso(last), "last": iso(last)}
            ],
            "activities": [
                {"eventId": f"{sid}-{region}", "action": "login", "courseId": "C1",
                 "timestamp": iso(last), "region": region}
            ],
        }  # fmt: skip

    with GraphSink(settings) as sink:
        assert sink.write_batch(1, [row(T2, "US")]) == 1
        assert sink.write_batch(1, [row(T2, "US")]) == 0  # replay
        assert sink.write_batch(2, [row(T1, "EU")]) == 1  # late event
    query = (
        "MATCH (s:Student {studentId: $sid})-[a:ACCESSED_FROM]->(r:Region) "
        "RETURN s.lastRegion AS last, r.code AS code, a.count AS n ORDER BY code"
    )
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        rows = session.run(query, sid=sid).data()
        acts = session.run(
            "MATCH (:Student {studentId: $sid})-[:PERFORMED]->(a)-[:IN_REGION]->(r) "
            "RETURN a.eventId AS e, r.code AS code ORDER BY e",
            sid=sid,
        ).data()
        session.run(
            "MATCH (s:Student {studentId: $sid}) OPTIONAL MATCH (s)-[:PERFORMED]->(a) "
            "DETACH DELETE s, a",
            sid=sid,
        ).consume()
    assert rows == [
        {"last": "US", "code": "EU", "n": 1},
        {"last": "US", "code": "US", "n": 1},
    ]
    assert acts == [{"e": f"{sid}-EU", "code": "EU"}, {"e": f"{sid}-US", "code": "US"}]


def test_graph_writers_racing_on_new_students_retry_and_make_each_node_once(
    settings: Settings, prefix: str
) -> None:
    """The fan-out's graph sink and the alert sink MERGE the same new nodes at once.

    The local graph server's MERGE is not atomic with its unique index: one of two
    concurrent creators gets a ConstraintError. That must come out retryable (the
    stream retries it), never fatal, and each node must exist once.
    """
    ids = [f"{prefix}-S{i:03d}" for i in range(300)]
    access = [
        {"studentId": sid, "lastRegion": "EU", "lastAt": iso(T1),
         "regions": [{"code": "EU", "count": 1, "first": iso(T1), "last": iso(T1)}],
         "activities": [{"eventId": f"{sid}-E", "action": "login", "courseId": "C1",
                         "timestamp": iso(T1), "region": "EU"}]}
        for sid in ids
    ]  # fmt: skip
    alerts = [
        {"alertId": f"{sid}-A", "studentId": sid, "kind": "impossible_travel",
         "regions": ["EU", "US"], "timestamp": T2, "gapSeconds": 7200.0,
         "detectedAt": T2,
         "first": {"eventId": f"{sid}-E", "timestamp": T1, "region": "EU"},
         "second": {"eventId": f"{sid}-F", "timestamp": T2, "region": "US"}}
        for sid in ids
    ]  # fmt: skip
    retried: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(sink: GraphSink | GraphAlertSink, rows: list[dict[str, Any]]) -> None:
        with sink:
            start.wait()
            for _attempt in range(20):
                try:
                    sink.write_batch(1, rows)
                    return
                except RetryableSinkError as err:
                    retried.append(str(err))
                except BaseException as err:  # noqa: BLE001 - asserted below
                    failures.append(err)
                    return

    threads = [
        threading.Thread(target=writer, args=(GraphSink(settings), access)),
        threading.Thread(target=writer, args=(GraphAlertSink(settings), alerts)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    count = "RETURN count(n) AS nodes, count(DISTINCT n.{0}) AS ids"
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        found = [
            session.run(
                f"MATCH (n:{label}) WHERE n.{key} STARTS WITH $p " + count.format(key),
                p=prefix,
            ).single()
            for label, key in (
                ("Student", "studentId"),
                ("Activity", "eventId"),
                ("Alert", "alertId"),
            )
        ]
        session.run(
            "MATCH (n) WHERE n.studentId STARTS WITH $p OR n.eventId STARTS WITH $p "
            "OR n.alertId STARTS WITH $p DETACH DELETE n",
            p=prefix,
        ).consume()
    assert failures == [], f"after {len(retried)} retries: {failures}"
    assert [(f["nodes"], f["ids"]) for f in found] == [
        (300, 300),
        (600, 600),
        (300, 300),
    ]


def test_dlq_batches_are_written_once_even_by_a_new_writer(
    settings: Settings, prefix: str
) -> None:
    cfg = get_settings(topics={"dlq": f"{prefix}.dlq", "activity": f"{prefix}.a",
                               "alerts": f"{prefix}.al"})  # fmt: skip
    ensure_topics(cfg)
    bad = [
        {"key": b"S1", "raw": b"{not json", "reason": "event: Invalid JSON",
         "topic": "t", "partition": 0, "offset": 5, "kafkaTimestamp": T1},
        {"key": None, "raw": b"\xff\xfe", "reason": "event: Invalid JSON",
         "topic": "t", "partition": 1, "offset": 9, "kafkaTimestamp": T1},
    ]  # fmt: skip
    with DeadLetterSink(cfg, writer_id=prefix) as sink:
        assert sink.write_batch(3, bad) == 2
        assert sink.write_batch(3, bad) == 0
    with DeadLetterSink(cfg, writer_id=prefix) as again:  # after a restart
        assert again.write_batch(3, bad) == 0
        assert again.write_batch(4, bad[:1]) == 1
    records = read_topic(cfg, cfg.topics.dlq)
    values = sorted(r.value() or b"" for r in records)
    assert values == sorted([b"\xff\xfe", b"{not json", b"{not json"])
    headers = dict(records[0].headers() or [])
    assert headers["reason"] == b"event: Invalid JSON"
    assert {"source.partition", "source.offset", "batch"} <= set(headers)


def test_graph_reset_deletes_in_chunks_until_none_is_left(
    settings: Settings, prefix: str
) -> None:
    """``delete_nodes``: chunked, retried transactions (what every graph reset uses).

    One DETACH DELETE over a large graph failed on the local server with a
    transient "concurrent change" error and stopped the bench; each chunk is now
    a managed transaction the driver re-runs.
    """
    label = f"{prefix.capitalize()}Node"
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        session.run(
            f"UNWIND range(1, 2500) AS i CREATE (n:{label} {{i: i}})-[:NEXT]->"
            f"(m:{label} {{i: -i}})"
        ).consume()
        assert delete_nodes(session, label, chunk=1000) == 5000  # 6 chunks
        left = session.run(f"MATCH (n:{label}) RETURN count(n) AS n").single()
        assert left is not None and left["n"] == 0
        assert delete_nodes(session, label) == 0  # nothing left: one empty chunk
