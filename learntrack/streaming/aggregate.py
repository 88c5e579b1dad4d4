"""Per-batch aggregates for the driver-side sinks (Redis, graph, Mongo students).

Runs on the Spark driver inside ``foreachBatch``: one Spark aggregation (executors)
groups the batch's valid events by (student, course, action, region, event minute);
the small result is folded on the driver into one row per student for each sink.
Students who acted from two or more regions in the batch get their events fetched
(a second, small job) so every region switch becomes an Activity node in the graph.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from learntrack.config import Settings
from learntrack.events import utc_iso
from learntrack.scoring import EPOCH


@dataclass
class StudentBatch:
    """One student's share of a micro-batch."""

    studentId: str  # noqa: N815
    total: int = 0
    actions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    anchor: float = 0.0
    courseAnchors: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # noqa: N815
    minutes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    regions: dict[str, list[Any]] = field(
        default_factory=dict
    )  # code -> [n, first, last]
    last: dt.datetime | None = None
    lastRegion: str = ""  # noqa: N815
    lastCourse: str = ""  # noqa: N815
    lastEventId: str = ""  # noqa: N815
    first: tuple[dt.datetime, str, str, str, str] | None = (
        None  # ts, id, action, course, region
    )


def anchor_column(settings: Settings) -> Any:
    """Spark expression: each event's anchored score contribution."""
    from pyspark.sql import functions as F  # noqa: N812

    weights = settings.scoring.weights
    pairs = [x for a, w in weights.items() for x in (F.lit(a), F.lit(float(w)))]
    weight = F.coalesce(F.create_map(*pairs)[F.col("action")], F.lit(0.0))
    seconds = F.unix_micros(F.col("timestamp")) / F.lit(1_000_000.0)
    exponent = (seconds - F.lit(EPOCH.timestamp())) / F.lit(
        settings.scoring.half_life_s
    )
    return weight * F.pow(F.lit(2.0), exponent)


def fold(settings: Settings, valid: Any) -> dict[str, StudentBatch]:
    """Aggregate ``valid`` (a DataFrame of events) into per-student batches."""
    from pyspark.sql import functions as F  # noqa: N812

    grouped = (
        valid.withColumn("anchor", anchor_column(settings))
        .withColumn("minute", F.floor(F.unix_seconds(F.col("timestamp")) / 60))
        .groupBy("studentId", "courseId", "action", "region", "minute")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("anchor").alias("anchor"),
            F.min("timestamp").alias("first"),
            F.max("timestamp").alias("last"),
            F.min_by("eventId", F.struct("timestamp", "eventId")).alias("firstEvent"),
            F.max_by("eventId", F.struct("timestamp", "eventId")).alias("lastEvent"),
        )
    )
    students: dict[str, StudentBatch] = {}
    for r in grouped.toArrow().to_pylist():
        sb = students.get(r["studentId"])
        if sb is None:
            sb = students[r["studentId"]] = StudentBatch(r["studentId"])
        n = int(r["n"])
        sb.total += n
        sb.actions[r["action"]] += n
        sb.anchor += r["anchor"]
        sb.courseAnchors[r["courseId"]] += r["anchor"]
        sb.minutes[int(r["minute"])] += n
        first, last = r["first"], r["last"]
        reg = sb.regions.get(r["region"])
        if reg is None:
            sb.regions[r["region"]] = [n, first, last]
        else:
            reg[0] += n
            reg[1] = min(reg[1], first)
            reg[2] = max(reg[2], last)
        if sb.last is None or (last, r["lastEvent"]) > (sb.last, sb.lastEventId):
            sb.last, sb.lastRegion, sb.lastCourse = last, r["region"], r["courseId"]
            sb.lastEventId = r["lastEvent"]
        if sb.first is None or first < sb.first[0]:
            sb.first = (first, r["firstEvent"], r["action"], r["courseId"], r["region"])
    return students


def switch_activities(
    valid: Any, students: dict[str, StudentBatch]
) -> dict[str, list[dict[str, Any]]]:
    """Activities to put in the graph.

    Each student's first event of the batch, and every event whose region differs
    from the student's previous event; a switch carries the previous event
    (``prevEventId``, ``prevRegion``, ``prevAt``) and the gap in seconds (``gapS``),
    so "two regions within W" is one filter on ``gapS`` in the graph, never a
    product of activities. (The first event's previous one is in an earlier batch:
    the graph sink fills it from the Student node.)
    """
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sb in students.values():
        if sb.first is not None:
            ts, eid, action, course, region = sb.first
            out[sb.studentId].append(
                {"eventId": eid, "action": action, "courseId": course,
                 "timestamp": utc_iso(ts), "region": region, "isFirst": True}
            )  # fmt: skip
    multi = [s for s, sb in students.items() if len(sb.regions) > 1]
    if not multi:
        return out
    spark = valid.sparkSession
    wanted = spark.createDataFrame([(s,) for s in multi], "studentId string")
    rows = (
        valid.join(wanted, "studentId", "left_semi")
        .select("studentId", "timestamp", "eventId", "action", "courseId", "region")
        .toArrow()
        .to_pylist()
    )
    rows.sort(key=lambda r: (r["studentId"], r["timestamp"], r["eventId"]))
    previous: dict[str, dict[str, Any]] = {}
    for r in rows:
        sid = r["studentId"]
        prev = previous.get(sid)
        if prev is not None and prev["region"] != r["region"]:
            out[sid].append(
                {
                    "eventId": r["eventId"],
                    "action": r["action"],
                    "courseId": r["courseId"],
                    "timestamp": utc_iso(r["timestamp"]),
                    "region": r["region"],
                    "prevEventId": prev["eventId"],
                    "prevRegion": prev["region"],
                    "prevAt": utc_iso(prev["timestamp"]),
                    "gapS": (r["timestamp"] - prev["timestamp"]).total_seconds(),
                }
            )
        previous[sid] = r
    return out


def mongo_rows(students: dict[str, StudentBatch]) -> list[dict[str, Any]]:
    """Rows for :class:`learntrack.sinks.mongo.MongoStudentSink`."""
    return [
        {
            "studentId": sb.studentId,
            "total": sb.total,
            "actions": dict(sb.actions),
            "lastAt": sb.last,
            "lastRegion": sb.lastRegion,
            "lastCourse": sb.lastCourse,
        }
        for sb in students.values()
    ]


def redis_rows(students: dict[str, StudentBatch]) -> list[dict[str, Any]]:
    """Rows for :class:`learntrack.sinks.redis.RedisScoreSink`."""
    return [
        {
            "studentId": sb.studentId,
            "total": sb.total,
            "actions": dict(sb.actions),
            "anchor": sb.anchor,
            "courseAnchors": dict(sb.courseAnchors),
            "minutes": dict(sb.minutes),
            "lastAt": utc_iso(sb.last) if sb.last else "",
        }
        for sb in students.values()
    ]


def graph_rows(
    students: dict[str, StudentBatch], activities: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Rows for :class:`learntrack.sinks.graph.GraphSink`."""
    return [
        {
            "studentId": sb.studentId,
            "lastRegion": sb.lastRegion,
            "lastAt": utc_iso(sb.last) if sb.last else "",
            "lastEventId": sb.lastEventId,
            "regions": [
                {
                    "code": code,
                    "count": n,
                    "first": utc_iso(first),
                    "last": utc_iso(last),
                }
                for code, (n, first, last) in sorted(sb.regions.items())
            ],
            "activities": activities.get(sb.studentId, []),
        }
        for sb in students.values()
    ]
