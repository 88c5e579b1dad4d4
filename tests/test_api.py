"""The query service and its CLI on the real local stack.

FastAPI's TestClient drives the app over the real stores (MongoDB, Redis, Kafka,
Cassandra, the graph); one test starts ``learntrack api`` as a real uvicorn server.
Each test writes its data with the real sinks into its own MongoDB database, a Redis
database of its own (flushed before and after), its own Kafka topic and its own
Cassandra keyspace, so the rankings and orderings asserted are exact.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import strategies as st

from learntrack.api.app import create_app
from learntrack.cli import main
from learntrack.clients import cassandra_session, mongo_client, redis_client
from learntrack.config import Settings, get_settings
from learntrack.scoring import anchored, score_at
from learntrack.sinks.mongo import MongoActivitySink, MongoStudentSink
from learntrack.sinks.redis import PREFIX, RedisScoreSink
from learntrack.topics import create_topic, delete_topics, read_topic
from tests.helpers import wait_until_answers

pytestmark = pytest.mark.stack

REDIS_DB = 9  # the API tests' own Redis database on the test stack
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
_batches = itertools.count(1)


# -- fixtures -------------------------------------------------------------------
@pytest.fixture
def cfg(settings: Settings, prefix: str) -> Iterator[Settings]:
    """Settings pointing at this test's own database, Redis db and keyspace."""
    test_settings = get_settings(
        mongo={"database": prefix},
        redis={"db": REDIS_DB},
        cassandra={"keyspace": prefix},
        topics={"activity": f"{prefix}.activity"},
    )
    r = redis_client(test_settings)
    r.flushdb()
    yield test_settings
    r.flushdb()
    r.close()
    with mongo_client(test_settings) as client:
        client.drop_database(prefix)


@pytest.fixture
def env(cfg: Settings, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Settings:
    """The same isolation for code that builds its settings (the CLI)."""
    monkeypatch.setenv("LEARNTRACK_MONGO__DATABASE", prefix)
    monkeypatch.setenv("LEARNTRACK_REDIS__DB", str(REDIS_DB))
    monkeypatch.setenv("LEARNTRACK_CASSANDRA__KEYSPACE", prefix)
    monkeypatch.setenv("LEARNTRACK_TOPICS__ACTIVITY", f"{prefix}.activity")
    return cfg


@pytest.fixture
def client(cfg: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as test_client:
        yield test_client


def read_headers(cfg: Settings) -> dict[str, str]:
    assert cfg.api.read_key is not None
    return {"X-API-Key": cfg.api.read_key.get_secret_value()}


def write_headers(cfg: Settings) -> dict[str, str]:
    assert cfg.api.write_key is not None
    return {"X-API-Key": cfg.api.write_key.get_secret_value()}


# -- writing test data with the real sinks -----------------------------------------
def event(
    student: str,
    course: str,
    at: dt.datetime,
    action: str = "quiz_attempt",
    region: str = "EU",
) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "studentId": student,
        "courseId": course,
        "action": action,
        "timestamp": at,
        "region": region,
        "sessionId": f"{student}-s",
    }


def seed(cfg: Settings, events: list[dict[str, Any]]) -> None:
    """Write ``events`` as the stream would: activities, summaries, scores."""
    batch = next(_batches)
    with MongoActivitySink(cfg) as sink:
        sink.write_batch(batch, events)
    half_life = cfg.scoring.half_life_s
    students: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e["timestamp"]):
        weight = cfg.scoring.weights.get(e["action"], 0.0)
        s = students.setdefault(
            e["studentId"],
            {
                "studentId": e["studentId"],
                "total": 0,
                "actions": {},
                "anchor": 0.0,
                "courseAnchors": {},
                "minutes": {},
            },
        )
        s["total"] += 1
        s["actions"][e["action"]] = s["actions"].get(e["action"], 0) + 1
        contribution = anchored(weight, e["timestamp"], half_life)
        s["anchor"] += contribution
        courses = s["courseAnchors"]
        courses[e["courseId"]] = courses.get(e["courseId"], 0.0) + contribution
        minute = int(e["timestamp"].timestamp()) // 60
        s["minutes"][minute] = s["minutes"].get(minute, 0) + 1
        s["lastAt"] = e["timestamp"]
        s["lastRegion"] = e["region"]
        s["lastCourse"] = e["courseId"]
    with MongoStudentSink(cfg) as sink:
        sink.write_batch(batch, list(students.values()))
    rows = [
        {**s, "lastAt": s["lastAt"].isoformat().replace("+00:00", "Z")}
        for s in students.values()
    ]
    with RedisScoreSink(cfg) as sink:
        sink.write_batch(batch, rows)


def profile(student: str, **fields: Any) -> dict[str, Any]:
    return {
        "studentId": student,
        "name": f"Name {student}",
        "email": f"{student.lower()}@example.org",
        "speciality": "Data Science",
        "studentLevel": "L2",
        "progress": 12.5,
        "lastUpdated": dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
        **fields,
    }


def add_profiles(cfg: Settings, *profiles: dict[str, Any]) -> None:
    from learntrack.producers.generator import upsert_profiles

    upsert_profiles(cfg, list(profiles))


def alert(
    student: str, at: dt.datetime, kind: str = "impossible_travel"
) -> dict[str, Any]:
    alert_id = f"{student}-{int(at.timestamp())}"
    first = at - dt.timedelta(minutes=10)
    return {
        "_id": alert_id,
        "alertId": alert_id,
        "studentId": student,
        "kind": kind,
        "regions": ["EU", "US"],
        "first": {"eventId": str(uuid.uuid4()), "timestamp": first, "region": "EU"},
        "second": {"eventId": str(uuid.uuid4()), "timestamp": at, "region": "US"},
        "gapSeconds": 600.0,
        "timestamp": at,
        "detectedAt": at + dt.timedelta(seconds=3),
    }


# -- auth -----------------------------------------------------------------------
def test_keys_missing_wrong_or_read_only_are_refused(
    client: TestClient, cfg: Settings, prefix: str, topic: str
) -> None:
    sid = f"{prefix}-s1"
    add_profiles(cfg, profile(sid))
    path = f"/students/{sid}"
    assert client.get(path).status_code == 401
    assert client.get(path).headers["www-authenticate"] == "ApiKey"
    assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get(path, headers={"X-API-Key": "é".encode()}).status_code == 401
    assert client.get(path, headers=read_headers(cfg)).status_code == 200
    assert client.get(path, headers=write_headers(cfg)).status_code == 200  # reads too

    body = {"progress": 50}
    assert client.patch(path, json=body).status_code == 401
    refused = client.patch(path, json=body, headers=read_headers(cfg))
    assert refused.status_code == 403
    assert (
        client.post("/activities", json=[], headers=read_headers(cfg)).status_code
        == 403
    )
    assert client.post("/activities", json=[]).status_code == 401
    with mongo_client(cfg) as mongo:
        doc = mongo[prefix]["students"].find_one({"studentId": sid})
    assert doc is not None and doc["progress"] == 12.5  # nothing was written

    assert client.get("/health").status_code == 200  # no key needed


def test_app_refuses_to_start_without_keys(cfg: Settings) -> None:
    from learntrack.errors import ConfigError

    unkeyed = cfg.model_copy(
        update={"api": cfg.api.model_copy(update={"write_key": None})}
    )
    with pytest.raises(ConfigError, match="LEARNTRACK_API__WRITE_KEY"):
        create_app(unkeyed)


# -- activities -----------------------------------------------------------------
def test_latest_activities_newest_first_with_limits(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    sid, other = f"{prefix}-s1", f"{prefix}-s2"
    events = [
        event(sid, f"{prefix}-c{i % 3}", NOW - dt.timedelta(minutes=7 * i))
        for i in range(25)
    ]
    events.append(event(other, f"{prefix}-c0", NOW))
    seed(cfg, events)
    newest_first = [e["eventId"] for e in events[:25]]  # i=0 is the newest
    h = read_headers(cfg)

    got = client.get(f"/students/{sid}/activities", headers=h)
    assert got.status_code == 200
    body = got.json()
    assert body["studentId"] == sid
    assert [a["eventId"] for a in body["activities"]] == newest_first[:20]
    first = body["activities"][0]
    assert first["courseId"] == f"{prefix}-c0"
    assert first["action"] == "quiz_attempt"
    assert first["sessionId"] == f"{sid}-s"
    assert dt.datetime.fromisoformat(first["timestamp"]) == NOW

    five = client.get(f"/students/{sid}/activities?limit=5", headers=h).json()
    assert [a["eventId"] for a in five["activities"]] == newest_first[:5]
    hundred = client.get(f"/students/{sid}/activities?limit=100", headers=h).json()
    assert [a["eventId"] for a in hundred["activities"]] == newest_first
    for bad in ("0", "101", "-1", "abc", "99999999999999999999999"):
        response = client.get(f"/students/{sid}/activities?limit={bad}", headers=h)
        assert response.status_code == 422, bad


def test_unknown_and_odd_student_ids(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    h = read_headers(cfg)
    for path in ("", "/activities", "/engagement"):
        missing = client.get(f"/students/{prefix}-nobody{path}", headers=h)
        assert missing.status_code == 404, path
        assert missing.json() == {"detail": f"unknown student '{prefix}-nobody'"}
        for odd in ("a b", "$where", "{}", "x" * 65, "é", "'; DROP"):
            response = client.get(f"/students/{quote(odd, safe='')}{path}", headers=h)
            assert response.status_code == 422, (odd, path)
    assert client.get("/students/a%2Fb", headers=h).status_code == 404
    # A profile without activity is a known student with no activities.
    add_profiles(cfg, profile(f"{prefix}-new"))
    empty = client.get(f"/students/{prefix}-new/activities", headers=h)
    assert empty.status_code == 200
    assert empty.json()["activities"] == []


# -- profiles -------------------------------------------------------------------
def test_patch_changes_only_the_given_fields_and_sets_last_updated(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    sid = f"{prefix}-s1"
    add_profiles(cfg, profile(sid))
    seed(cfg, [event(sid, "C1", NOW - dt.timedelta(hours=1))])
    with mongo_client(cfg) as mongo:
        before = mongo[prefix]["students"].find_one({"studentId": sid}, {"_id": 0})
    assert before is not None

    started = dt.datetime.now(dt.UTC)
    response = client.patch(
        f"/students/{sid}",
        json={"progress": 70, "email": "new.mail@example.org"},
        headers=write_headers(cfg),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["progress"] == 70
    assert body["email"] == "new.mail@example.org"
    assert body["activity"]["total"] == 1

    with mongo_client(cfg) as mongo:
        after = mongo[prefix]["students"].find_one({"studentId": sid}, {"_id": 0})
    assert after is not None
    assert after["progress"] == 70
    assert after["email"] == "new.mail@example.org"
    assert after["lastUpdated"] >= started.replace(microsecond=0)
    assert after["lastUpdated"] <= dt.datetime.now(dt.UTC)
    untouched = {k: v for k, v in before.items() if k not in {"progress", "email"}}
    assert {k: after[k] for k in untouched if k != "lastUpdated"} == {
        k: v for k, v in untouched.items() if k != "lastUpdated"
    }
    assert set(after) == set(before)

    shown = client.get(f"/students/{sid}", headers=read_headers(cfg)).json()
    assert shown["name"] == f"Name {sid}"
    assert shown["progress"] == 70
    assert dt.datetime.fromisoformat(shown["lastUpdated"]) == after["lastUpdated"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"progress": 101},
        {"progress": -0.5},
        {"progress": "lots"},
        {"email": "not-an-email"},
        {"name": ""},
        {"name": None},
        {"studentLevel": "x" * 21},
        {"activity": {"total": 0}},
        {"progress": 10, "nickname": "x"},
        [1, 2],
        "progress",
    ],
)
def test_patch_refuses_invalid_bodies(
    client: TestClient, cfg: Settings, prefix: str, body: Any
) -> None:
    sid = f"{prefix}-s1"
    add_profiles(cfg, profile(sid))
    response = client.patch(f"/students/{sid}", json=body, headers=write_headers(cfg))
    assert response.status_code == 422, response.text
    with mongo_client(cfg) as mongo:
        doc = mongo[prefix]["students"].find_one({"studentId": sid})
    assert doc is not None and doc["progress"] == 12.5


def test_patch_of_unknown_student_is_404_and_writes_nothing(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    response = client.patch(
        f"/students/{prefix}-ghost", json={"progress": 5}, headers=write_headers(cfg)
    )
    assert response.status_code == 404
    with mongo_client(cfg) as mongo:
        assert mongo[prefix]["students"].count_documents({}) == 0
    garbled = client.patch(
        f"/students/{prefix}-ghost",
        content=b"{not json",
        headers={**write_headers(cfg), "Content-Type": "application/json"},
    )
    assert garbled.status_code == 422


def test_student_known_only_from_the_activity_log(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    sid = f"{prefix}-s1"
    with MongoActivitySink(cfg) as sink:
        sink.write_batch(next(_batches), [event(sid, "C1", NOW)])
    shown = client.get(f"/students/{sid}", headers=read_headers(cfg))
    assert shown.status_code == 200
    assert shown.json()["name"] is None
    patched = client.patch(
        f"/students/{sid}", json={"name": "Late Profile"}, headers=write_headers(cfg)
    )
    assert patched.status_code == 200
    with mongo_client(cfg) as mongo:
        docs = list(mongo[prefix]["students"].find({"studentId": sid}, {"_id": 0}))
    assert [(d["studentId"], d["name"]) for d in docs] == [(sid, "Late Profile")]


# -- engagement and leaderboards --------------------------------------------------
def test_engagement_agrees_with_redis(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    sid, rival = f"{prefix}-s1", f"{prefix}-s2"
    c1, c2 = f"{prefix}-c1", f"{prefix}-c2"
    events = [
        event(sid, c1, NOW - dt.timedelta(minutes=5)),
        event(sid, c1, NOW - dt.timedelta(minutes=30), "video_play"),
        event(sid, c2, NOW - dt.timedelta(hours=3), "assignment_submit"),
        event(sid, c2, NOW - dt.timedelta(days=3)),
        # The rival scores more: sid ranks second.
        *[event(rival, c1, NOW - dt.timedelta(minutes=m)) for m in range(1, 6)],
    ]
    seed(cfg, events)
    r = redis_client(cfg)
    try:
        r.sadd(f"{PREFIX}alerts:student:{sid}", "a1", "a2")
        response = client.get(f"/students/{sid}/engagement", headers=read_headers(cfg))
        assert response.status_code == 200, response.text
        body = response.json()
        as_of = dt.datetime.fromisoformat(body["asOf"])
        half_life = cfg.scoring.half_life_s
        anchor = r.zscore(f"{PREFIX}lb:global", sid)
        assert body["score"] == pytest.approx(score_at(anchor, as_of, half_life))
        assert body["rank"] == r.zrevrank(f"{PREFIX}lb:global", sid) + 1 == 2
        for course in (c1, c2):
            course_anchor = r.zscore(f"{PREFIX}lb:course:{course}", sid)
            assert body["courses"][course] == pytest.approx(
                score_at(course_anchor, as_of, half_life)
            )
        assert set(body["courses"]) == {c1, c2}
    finally:
        r.close()
    expected = sum(
        score_at(anchored(cfg.scoring.weights[e["action"]], e["timestamp"], half_life),
                 as_of, half_life)
        for e in events if e["studentId"] == sid
    )  # fmt: skip
    assert body["score"] == pytest.approx(expected)
    assert body["recent"] == {"lastHour": 2, "lastDay": 3}
    assert body["totalEvents"] == 4
    assert body["alerts"] == 2


def test_known_student_without_score_has_no_rank(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    add_profiles(cfg, profile(f"{prefix}-quiet"))
    body = client.get(
        f"/students/{prefix}-quiet/engagement", headers=read_headers(cfg)
    ).json()
    assert body["score"] == 0.0
    assert body["rank"] is None
    assert body["courses"] == {}
    assert body["recent"] == {"lastHour": 0, "lastDay": 0}


def test_leaderboards_rank_by_decayed_score(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    course, other = f"{prefix}-c1", f"{prefix}-c2"
    students = [f"{prefix}-s{i}" for i in range(6)]
    events = []
    for i, sid in enumerate(students):
        # Student i has i + 1 quiz attempts in `course`; s0 also a lot elsewhere.
        events += [
            event(sid, course, NOW - dt.timedelta(minutes=m)) for m in range(i + 1)
        ]
    events += [
        event(students[0], other, NOW - dt.timedelta(minutes=m)) for m in range(20)
    ]
    seed(cfg, events)
    add_profiles(cfg, profile(students[5], name="Top Student"))
    h = read_headers(cfg)

    board = client.get(f"/leaderboard?course={course}&limit=3", headers=h).json()
    assert board["course"] == course
    assert [e["studentId"] for e in board["entries"]] == students[5:2:-1]
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3]
    assert board["entries"][0]["name"] == "Top Student"
    assert board["entries"][1]["name"] is None
    scores = [e["score"] for e in board["entries"]]
    assert scores == sorted(scores, reverse=True)

    overall = client.get("/leaderboard", headers=h).json()
    assert overall["course"] is None
    assert [e["studentId"] for e in overall["entries"]] == [
        students[0],
        *students[:0:-1],
    ]
    r = redis_client(cfg)
    try:
        top = r.zrevrange(f"{PREFIX}lb:global", 0, 9)
    finally:
        r.close()
    assert [e["studentId"] for e in overall["entries"]] == [s.decode() for s in top]
    empty = client.get(f"/leaderboard?course={prefix}-none", headers=h).json()
    assert empty["entries"] == []
    for bad in ("limit=0", "limit=101", "limit=x", "course=a%20b", "course=%24gt"):
        assert client.get(f"/leaderboard?{bad}", headers=h).status_code == 422, bad


# -- alerts ---------------------------------------------------------------------
def test_alerts_newest_first_filtered(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    s1, s2 = f"{prefix}-s1", f"{prefix}-s2"
    docs = [
        alert(s1, NOW - dt.timedelta(hours=5)),
        alert(s2, NOW - dt.timedelta(hours=2), "concurrent_sessions"),
        alert(s1, NOW - dt.timedelta(hours=1)),
        alert(s1, NOW - dt.timedelta(days=2)),
    ]
    with mongo_client(cfg) as mongo:
        mongo[prefix]["alerts"].insert_many(docs)
    h = read_headers(cfg)

    def ids(query: str) -> list[str]:
        response = client.get(f"/alerts{query}", headers=h)
        assert response.status_code == 200, response.text
        return [a["alertId"] for a in response.json()["alerts"]]

    newest_first = [
        d["alertId"] for d in sorted(docs, key=lambda d: -d["timestamp"].timestamp())
    ]
    assert ids("") == newest_first
    assert ids("?limit=2") == newest_first[:2]
    assert ids(f"?student={s1}") == [d for d in newest_first if d.startswith(s1)]
    since = (NOW - dt.timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    assert ids(f"?since={since}") == newest_first[:2]
    naive = (NOW - dt.timedelta(hours=3)).replace(tzinfo=None).isoformat()
    assert ids(f"?since={naive}") == newest_first[:2]  # naive: UTC
    assert ids(f"?since={since}&student={s2}") == [newest_first[1]]
    shown = client.get("/alerts?limit=1", headers=h).json()["alerts"][0]
    assert shown["kind"] == "impossible_travel"
    assert shown["regions"] == ["EU", "US"]
    assert shown["gapSeconds"] == 600.0
    assert shown["second"]["region"] == "US"
    for bad in ("limit=0", "limit=501", "since=yesterday", "since=2026-13-01",
                "student=a%20b", "since=9999-12-31T23:59:59-23:59"):  # fmt: skip
        assert client.get(f"/alerts?{bad}", headers=h).status_code == 422, bad


# -- course engagement (Cassandra) ---------------------------------------------------
def test_course_engagement_newest_first_with_range_checks(
    client: TestClient, cfg: Settings, prefix: str
) -> None:
    from learntrack.sinks.cassandra import CassandraEngagementSink, CourseDayRow

    course = f"{prefix}-c1"
    days = [dt.date(2026, 11, d) for d in (18, 19, 20, 21)]
    rows = [
        CourseDayRow(course, d, 10 * i + 1, i + 1, i, (10 * i + 1) / (i + 1),
                  {"quiz_attempt": i, "page_view": 10 * i + 1 - i})
        for i, d in enumerate(days)
    ]  # fmt: skip
    rows.append(CourseDayRow(f"{prefix}-c2", days[1], 99, 9, 9, 11.0, {"login": 99}))
    try:
        with CassandraEngagementSink(cfg) as sink:
            sink.write_batch(0, rows)
        h = read_headers(cfg)
        response = client.get(
            f"/courses/{course}/engagement?from=2026-11-19&to=2026-11-21", headers=h
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["courseId"] == course
        assert (body["from"], body["to"]) == ("2026-11-19", "2026-11-21")
        assert [d["date"] for d in body["days"]] == [
            "2026-11-21",
            "2026-11-20",
            "2026-11-19",
        ]
        assert body["days"][0] == {
            "courseId": course,
            "date": "2026-11-21",
            "count": 31,
            "activeStudents": 4,
            "quizAttempts": 3,
            "eventsPerStudent": pytest.approx(31 / 4),
            "actions": {"page_view": 28, "quiz_attempt": 3},
        }
        unknown = client.get(
            f"/courses/{prefix}-none/engagement?from=2026-11-01&to=2026-11-30",
            headers=h,
        )
        assert unknown.status_code == 200
        assert unknown.json()["days"] == []
        for bad in (
            "from=2026-11-21&to=2026-11-19",
            "from=2025-11-19&to=2026-11-20",  # 367 days
            "from=2026-02-30",
            "to=yesterday",
            "to=0001-01-01",
        ):
            got = client.get(f"/courses/{course}/engagement?{bad}", headers=h)
            assert got.status_code == 422, bad
        year = "from=2025-11-20&to=2026-11-20"  # 366 days: allowed
        assert (
            client.get(f"/courses/{course}/engagement?{year}", headers=h).status_code
            == 200
        )
    finally:
        cluster, session = cassandra_session(cfg)
        try:
            session.execute(f"DROP KEYSPACE {prefix}")
        finally:
            cluster.shutdown()


# -- publishing -----------------------------------------------------------------
@pytest.fixture
def topic(cfg: Settings) -> Iterator[str]:
    name = cfg.topics.activity
    create_topic(cfg, name, partitions=2, retention_ms=600_000)
    yield name
    delete_topics(cfg, [name])


def wire_event(student: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "studentId": student,
        "courseId": "BD101",
        "action": "quiz_attempt",
        "timestamp": "2026-11-20T10:15:00+01:00",
        "region": "EU",
        "score": 0.8,
        **extra,
    }


def test_posted_events_reach_kafka_and_invalid_ones_are_reported(
    client: TestClient, cfg: Settings, prefix: str, topic: str
) -> None:
    good = [
        wire_event(f"{prefix}-s1"),
        wire_event(f"{prefix}-s2"),
        wire_event(f"{prefix}-s1"),
    ]
    body = [
        good[0],
        wire_event(f"{prefix}-s3", region="MOON"),
        good[1],
        "not an event",
        wire_event("bad id", action="dance"),
        good[2],
    ]
    response = client.post("/activities", json=body, headers=write_headers(cfg))
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == 3
    assert result["rejected"] == 3
    assert [e["index"] for e in result["errors"]] == [1, 3, 4]
    assert "region" in result["errors"][0]["reason"]
    assert result["errors"][1]["reason"] == "not a JSON object"
    assert "studentId" in result["errors"][2]["reason"]
    assert "action" in result["errors"][2]["reason"]

    wrapped = [wire_event(f"{prefix}-s4")]
    response = client.post(
        "/activities", json={"events": wrapped}, headers=write_headers(cfg)
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": []}

    records = read_topic(cfg, topic)
    published = {orjson.loads(m.value())["eventId"]: m for m in records}
    assert set(published) == {e["eventId"] for e in good + wrapped}
    for e in good + wrapped:
        message = published[e["eventId"]]
        assert message.key().decode() == e["studentId"]
        value = orjson.loads(message.value())
        assert value["timestamp"] == "2026-11-20T09:15:00Z"  # stored in UTC
        assert value["score"] == 0.8


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'"events"', b"42", b'{"events": 3}', b'{"event": []}', b"\xff\xfe"],
)
def test_posting_something_else_than_a_list_is_422(
    client: TestClient, cfg: Settings, payload: bytes
) -> None:
    response = client.post(
        "/activities",
        content=payload,
        headers={**write_headers(cfg), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text


def test_too_many_events_or_bytes_is_413(
    cfg: Settings, prefix: str, topic: str
) -> None:
    small = cfg.model_copy(
        update={
            "api": cfg.api.model_copy(
                update={"max_events_per_request": 3, "max_body_bytes": 2048}
            )
        }
    )
    h = write_headers(cfg)
    with TestClient(create_app(small)) as api:
        four = [wire_event(f"{prefix}-s{i}") for i in range(4)]
        too_many = api.post("/activities", json=four, headers=h)
        assert too_many.status_code == 413
        assert "at most 3" in too_many.json()["detail"]
        assert api.post("/activities", json=four[:3], headers=h).status_code == 202

        big = orjson.dumps([wire_event(f"{prefix}-x", metadata={"k": "v" * 250})] * 8)
        assert len(big) > 2048
        assert api.post("/activities", content=big, headers=h).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked upload
            yield b"["
            for _ in range(30):
                yield orjson.dumps(wire_event(f"{prefix}-x")) + b","
            yield b"{}]"

        streamed = api.post("/activities", content=chunks(), headers=h)
        assert streamed.status_code == 413
        patched = api.patch(
            f"/students/{prefix}-x", content=b"{" + b" " * 3000 + b"}", headers=h
        )
        assert patched.status_code == 413
    assert len(read_topic(cfg, topic)) == 3  # only the accepted request


# -- health and OpenAPI ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_reports_every_store(
    client: TestClient, cfg: Settings, topic: str
) -> None:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert {s["name"] for s in body["stores"]} == {
        "mongo",
        "redis",
        "graph",
        "cassandra",
        "kafka",
    }
    assert all(s["healthy"] for s in body["stores"])

    broken = cfg.model_copy(
        update={"redis": cfg.redis.model_copy(update={"port": free_port()})}
    )
    with TestClient(create_app(broken)) as api:
        down = api.get("/health")
        assert down.status_code == 503
        stores = {s["name"]: s for s in down.json()["stores"]}
        assert down.json()["status"] == "degraded"
        assert not stores["redis"]["healthy"]
        assert "Connection" in stores["redis"]["detail"]
        assert stores["mongo"]["healthy"]
        # A read that needs the missing store is a 503, not a 500.
        board = api.get("/leaderboard", headers=read_headers(cfg))
        assert board.status_code == 503
        assert board.json()["detail"].startswith("redis is unavailable")


def test_openapi_declares_every_operation(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operations = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
    }
    assert operations == {
        ("POST", "/activities"),
        ("GET", "/students/{student_id}/activities"),
        ("GET", "/students/{student_id}"),
        ("PATCH", "/students/{student_id}"),
        ("GET", "/students/{student_id}/engagement"),
        ("GET", "/leaderboard"),
        ("GET", "/alerts"),
        ("GET", "/courses/{course_id}/engagement"),
        ("GET", "/health"),
        # The dashboards' data (docs/dashboards.md).
        ("GET", "/courses"),
        ("GET", "/courses/engagement"),
        ("GET", "/engagement/distribution"),
        ("GET", "/alerts/hourly"),
        ("GET", "/pipeline/metrics"),
        ("GET", "/metrics"),
    }
    post = schema["paths"]["/activities"]["post"]
    assert {"202", "401", "403", "413", "422"} <= set(post["responses"])
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["anyOf"][0]["items"] == {"$ref": "#/components/schemas/ActivityEvent"}
    assert "ActivityEvent" in schema["components"]["schemas"]
    assert "Action" in schema["components"]["schemas"]
    assert (
        schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    )
    assert "security" not in schema["paths"]["/health"]["get"]
    patch = schema["components"]["schemas"]["StudentPatch"]
    assert patch["minProperties"] == 1
    assert patch["properties"]["progress"] == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 100.0,
        "title": "Progress",
    }
    assert client.get("/docs").status_code == 200


NASTY = [
    "0001-01-01", "9999-12-31", "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "2026-02-29", "1e309", "nan", "-1", "0", "99999999999999999999", "", " ", "\x00",
    "$gt", "{\"$ne\": 1}", "a.b", "../..", "é", "S1",
]  # fmt: skip
_json = st.recursive(
    # Finite floats: the client cannot encode NaN or infinity as JSON at all.
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_text = st.one_of(st.text(max_size=80), st.sampled_from(NASTY))


@hypothesis.settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(a=_text, b=_text, which=st.integers(0, 7), body=_json)
def test_no_input_gives_a_server_error(  # noqa: PLR0917 - fixtures + examples
    client: TestClient, cfg: Settings, topic: str, a: str, b: str, which: int, body: Any
) -> None:
    s = qa = quote(a, safe="")
    qb = quote(b, safe="")
    method, path = [
        ("GET", f"/students/{s}"),
        ("GET", f"/students/{s}/activities?limit={qb}"),
        ("GET", f"/students/{s}/engagement"),
        ("GET", f"/leaderboard?course={qa}&limit={qb}"),
        ("GET", f"/alerts?since={qa}&student={qb}&limit={qb}"),
        ("GET", f"/courses/{s}/engagement?from={qa}&to={qb}"),
        ("PATCH", f"/students/{s}"),
        ("POST", "/activities"),
    ][which]
    response = client.request(
        method,
        path,
        content=json.dumps(body).encode() if method != "GET" else None,
        headers={**write_headers(cfg), "Content-Type": "application/json"},
    )
    assert response.status_code < 500, (method, path, body, response.text)


# -- CLI ----------------------------------------------------------------------
def test_cli_queries_answer_like_the_api(
    env: Settings,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from learntrack.api import commands

    monkeypatch.setattr(commands.console, "_width", 200)  # no wrapped ids
    sid, rival = f"{prefix}-s1", f"{prefix}-s2"
    course = f"{prefix}-c1"
    events = [
        event(sid, course, NOW - dt.timedelta(minutes=m), region="US")
        for m in (1, 2, 3)
    ]
    events.append(event(rival, course, NOW - dt.timedelta(minutes=9), "page_view"))
    seed(env, events)
    add_profiles(env, profile(sid, name="Ada Lovelace"))
    with mongo_client(env) as mongo:
        mongo[prefix]["alerts"].insert_one(alert(sid, NOW - dt.timedelta(hours=1)))
    capsys.readouterr()

    assert main(["query", "latest", sid, "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(course) == 2
    assert "US" in out

    assert main(["query", "engagement", sid]) == 0
    out = capsys.readouterr().out
    assert "global rank" in out and "│ 1 " in out

    assert main(["query", "leaderboard", "--course", course]) == 0
    out = capsys.readouterr().out
    assert out.index(sid) < out.index(rival)
    assert "Ada Lovelace" in out

    assert main(["profile", "show", sid]) == 0
    assert "Ada Lovelace" in capsys.readouterr().out

    assert main(["alerts", "--since", "2h", "--student", sid]) == 0
    out = capsys.readouterr().out
    assert sid in out and "impossible_travel" in out
    assert main(["alerts", "--since", "30m"]) == 0
    assert "no alerts" in capsys.readouterr().out


def test_cli_profile_update_writes_only_the_given_fields(
    env: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = f"{prefix}-s1"
    add_profiles(env, profile(sid))
    code = main(
        ["profile", "update", sid, "--progress", "70", "--email", "ada@example.org",
         "--level", "M1"]
    )  # fmt: skip
    assert code == 0
    assert "email, progress, studentLevel" in capsys.readouterr().out
    with mongo_client(env) as mongo:
        doc = mongo[prefix]["students"].find_one({"studentId": sid})
    assert doc is not None
    assert (doc["progress"], doc["email"], doc["studentLevel"]) == (
        70,
        "ada@example.org",
        "M1",
    )
    assert doc["name"] == f"Name {sid}"
    assert doc["lastUpdated"] > dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["query", "latest", "{nobody}"], 1),
        (["query", "engagement", "{nobody}"], 1),
        (["profile", "show", "{nobody}"], 1),
        (["profile", "update", "{nobody}", "--progress", "5"], 1),
        (["query", "latest", "a b"], 2),
        (["query", "latest", "{sid}", "--limit", "0"], 2),
        (["query", "latest", "{sid}", "--limit", "101"], 2),
        (["query", "leaderboard", "--course", "$gt"], 2),
        (["profile", "update", "{sid}"], 2),
        (["profile", "update", "{sid}", "--progress", "101"], 2),
        (["profile", "update", "{sid}", "--email", "nope"], 2),
        (["alerts", "--since", "yesterday"], 2),
        (["alerts", "--limit", "0"], 2),
        (["api", "--port", "0"], 2),
    ],
)
def test_cli_errors_are_one_line(
    env: Settings,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
) -> None:
    sid = f"{prefix}-s1"
    add_profiles(env, profile(sid))
    filled = [a.format(nobody=f"{prefix}-nobody", sid=sid) for a in args]
    capsys.readouterr()
    assert main(filled) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("learntrack: ")
    if code == 1:
        assert lines[0] == f"learntrack: unknown student '{prefix}-nobody'"
    with mongo_client(env) as mongo:
        doc = mongo[prefix]["students"].find_one({"studentId": sid})
    assert doc is not None and doc["progress"] == 12.5


# -- the real server --------------------------------------------------------------
def run_api(port: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "learntrack.cli", "api", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_learntrack_api_serves_over_http_until_stopped(
    cfg: Settings, prefix: str
) -> None:
    sid = f"{prefix}-s1"
    add_profiles(cfg, profile(sid, name="Grace Hopper"))
    port = free_port()
    isolation = {"LEARNTRACK_MONGO__DATABASE": prefix, "LEARNTRACK_REDIS__DB": "9"}
    server = run_api(port, **isolation)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{base}/health", server, lambda: str(server.communicate()))
        got = httpx.get(f"{base}/students/{sid}", headers=read_headers(cfg))
        assert got.status_code == 200
        assert got.json()["name"] == "Grace Hopper"
        patched = httpx.patch(
            f"{base}/students/{sid}", json={"progress": 99}, headers=read_headers(cfg)
        )
        assert patched.status_code == 403

        taken = run_api(port, **isolation)
        out, err = taken.communicate(timeout=60)
        assert taken.returncode == 1
        assert err.strip().splitlines() == [
            f"learntrack: port {port} on 127.0.0.1 is already in use: stop that "
            "program or choose another port (--port or LEARNTRACK_API__PORT)"
        ]
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"LearnTrack API on http://127.0.0.1:{port}" in out
    assert f"http://127.0.0.1:{port}/docs" in out
    assert "API stopped" in out


def test_learntrack_api_without_keys_is_one_line(tmp_path: Any) -> None:
    unkeyed = run_api(free_port(), LEARNTRACK_DATA_DIR=str(tmp_path))
    _out, err = unkeyed.communicate(timeout=60)
    assert unkeyed.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "LEARNTRACK_API__READ_KEY" in lines[0]
    assert "learntrack stack up" in lines[0]


def test_the_api_socket_is_tcp_so_responses_are_not_held_back() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening
    socket's protocol is IPPROTO_TCP; with 0, every response waited for the
    client's delayed ACK (~40 ms, found by the queries benchmark)."""
    import asyncio
    import socket

    from learntrack.api.commands import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        sock.listen()
        port = sock.getsockname()[1]

        async def accepted_nodelay() -> int:
            seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            def on_client(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                conn = w.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                w.close()

            server = await asyncio.start_server(on_client, sock=sock)
            async with server:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                value = await asyncio.wait_for(seen, 10)
                w.close()
            return value

        assert asyncio.run(accepted_nodelay()) != 0
    finally:
        sock.close()
