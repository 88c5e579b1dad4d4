"""Compare what the stores hold with the generator's truth file.

Runs in the CLI (``learntrack verify --truth FILE``) and in tests. Each check reads a
store through its driver and reports expected vs found; nothing is written. Scores
are compared with a relative tolerance of 1e-9 (sums of the same floats in another
order differ in the last bits).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from learntrack.clients import graph_driver, mongo_client, redis_client
from learntrack.config import Settings
from learntrack.sinks import graph as graph_store
from learntrack.sinks import redis as redis_store
from learntrack.sinks.mongo import ACTIVITIES, STUDENTS

SCORE_REL_TOL = 1e-9


@dataclass(frozen=True)
class Check:
    """One comparison: what the truth says, what the store holds."""

    store: str
    what: str
    expected: Any
    found: Any

    @property
    def ok(self) -> bool:
        """Whether the store matches the truth."""
        return bool(self.expected == self.found)


def check_mongo(settings: Settings, truth: dict[str, Any]) -> list[Check]:
    """Activities count and per-student totals/actions in ``students``."""
    per_student = truth["perStudent"]
    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        n = db[ACTIVITIES].count_documents({})
        found = {
            d["studentId"]: d.get("activity", {})
            for d in db[STUDENTS].find(
                {"activity": {"$exists": True}}, {"studentId": 1, "activity": 1}
            )
        }
    mismatched = [
        sid
        for sid, st in per_student.items()
        if found.get(sid, {}).get("total") != st["total"]
        or found.get(sid, {}).get("byAction") != st["actions"]
    ]
    return [
        Check(
            "mongo", "activities (each valid event once)", truth["counts"]["valid"], n
        ),
        Check("mongo", "students with activity", len(per_student), len(found)),
        Check("mongo", "students whose counts differ", 0, len(mismatched)),
    ]


def check_redis(settings: Settings, truth: dict[str, Any]) -> list[Check]:
    """Anchored scores (global leaderboard) and per-student action counts."""
    client = redis_client(settings)
    try:
        board = dict(client.zrange(redis_store.GLOBAL_BOARD, 0, -1, withscores=True))
        pipe = client.pipeline()
        sids = list(truth["perStudent"])
        for sid in sids:
            pipe.hgetall(redis_store.student_key(sid))
        hashes = dict(zip(sids, pipe.execute(), strict=True))
    finally:
        client.close()
    score_off = counts_off = 0
    for sid, st in truth["perStudent"].items():
        got = board.get(sid.encode())
        if got is None or not math.isclose(
            got, st["scoreAnchor"], rel_tol=SCORE_REL_TOL, abs_tol=1e-12
        ):
            score_off += 1
        h = {k.decode(): v.decode() for k, v in hashes[sid].items()}
        actions = {k[2:]: int(v) for k, v in h.items() if k.startswith("a:")}
        if int(h.get("total", 0)) != st["total"] or actions != st["actions"]:
            counts_off += 1
    return [
        Check(
            "redis", "students on the leaderboard", len(truth["perStudent"]), len(board)
        ),
        Check("redis", "students whose score differs (rel 1e-9)", 0, score_off),
        Check("redis", "students whose counts differ", 0, counts_off),
    ]


def check_graph(settings: Settings, truth: dict[str, Any]) -> list[Check]:
    """ACCESSED_FROM edges: one per (student, region) with the truth's count."""
    expected = {
        (sid, code): reg["count"]
        for sid, st in truth["perStudent"].items()
        for code, reg in st["regions"].items()
    }
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        found = graph_store.access_counts(session)
    differ = sum(1 for k, v in expected.items() if found.get(k) != v)
    # Each anomaly switches the student into another region: one of its foreign
    # events (the first by event time, ties broken by eventId) must be an Activity
    # the student performed IN_REGION that foreign region.
    anomalies = [
        {
            "sid": a["studentId"],
            "eids": a["foreignEventIds"],
            "region": a["foreignRegion"],
        }
        for a in truth.get("anomalies", [])
    ]
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        linked = graph_store.students_with_switch(session, anomalies)
    return [
        Check("graph", "access edges (student, region)", len(expected), len(found)),
        Check("graph", "edges whose count differs", 0, differ),
        Check("graph", "anomalies with their switch Activity", len(anomalies), linked),
    ]


def check_lake(spark: Any, settings: Settings, truth: dict[str, Any]) -> list[Check]:
    """Rows and distinct eventIds in the Parquet lake."""
    from learntrack.sinks.lake import lake_path

    df = spark.read.parquet(str(lake_path(settings)))
    rows = df.count()
    distinct = df.select("eventId").distinct().count()
    return [
        Check("lake", "rows", truth["counts"]["valid"], rows),
        Check("lake", "distinct eventIds", truth["counts"]["valid"], distinct),
    ]


def check_dlq(settings: Settings, truth: dict[str, Any]) -> list[Check]:
    """Every malformed record in the DLQ once, verbatim (by SHA-256), with a reason."""
    from learntrack.topics import read_topic

    records = read_topic(settings, settings.topics.dlq)
    hashes = sorted(hashlib.sha256(m.value() or b"").hexdigest() for m in records)
    without_reason = sum(
        1 for m in records if not dict(m.headers() or []).get("reason")
    )
    expected = sorted(m["sha256"] for m in truth["malformed"])
    return [
        Check("dlq", "records", len(expected), len(hashes)),
        Check("dlq", "exactly the malformed records", True, hashes == expected),
        Check("dlq", "records without a reason", 0, without_reason),
    ]


def check_alerts(settings: Settings, truth: dict[str, Any]) -> list[Check]:
    """Alerts name exactly the injected anomalies, once in every alert store."""
    from learntrack.sinks.alerts import ALERTS, graph_alert_ids
    from learntrack.topics import read_topic

    anomalous = {a["studentId"] for a in truth["anomalies"]}
    with mongo_client(settings) as client:
        docs = list(client[settings.mongo.database][ALERTS].find({}, {"studentId": 1}))
    ids = {d["_id"] for d in docs}
    alerted = {d["studentId"] for d in docs}
    with redis_client(settings) as r:
        in_redis = {v.decode() for v in r.smembers(redis_store.ALL_ALERTS)}
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        in_graph = graph_alert_ids(session)
    topic_ids = [
        orjson.loads(m.value() or b"{}").get("alertId")
        for m in read_topic(settings, settings.topics.alerts)
    ]
    hits = len(anomalous & alerted)
    return [
        Check("alerts", "injected anomalies alerted", len(anomalous), hits),
        Check(
            "alerts", "students alerted without an anomaly", 0, len(alerted - anomalous)
        ),
        Check("alerts", "alerts in redis = mongo", True, in_redis == ids),
        Check("alerts", "graph = mongo, once", True, sorted(in_graph) == sorted(ids)),
        Check("alerts", "topic = mongo, once", True, sorted(topic_ids) == sorted(ids)),
    ]


def verify_all(
    settings: Settings, truth: dict[str, Any], spark: Any | None = None
) -> list[Check]:
    """Every store's checks (the lake's only when a SparkSession is given)."""
    checks = [
        *check_mongo(settings, truth),
        *check_redis(settings, truth),
        *check_graph(settings, truth),
        *check_dlq(settings, truth),
    ]
    if settings.detect.enabled:
        checks += check_alerts(settings, truth)
    if spark is not None:
        checks += check_lake(spark, settings, truth)
    return checks
