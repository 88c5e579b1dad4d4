"""Per-student aggregates of a task's events, for the students, Redis and graph sinks.

Runs on executors, inside the task that holds the events (:class:`Part`): Kafka
keys every record by its studentId, so one task holds all of a student's events of
the batch and the fold is plain Python over the task's columns (no Spark job, no
shuffle). Students who acted from two or more regions get every region switch as
an Activity for the graph.
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


def anchors(settings: Settings, actions: list[str], stamps: list[Any]) -> list[float]:
    """Each event's anchored score contribution (see :mod:`learntrack.scoring`)."""
    weights = {a: float(w) for a, w in settings.scoring.weights.items()}
    epoch = EPOCH.timestamp()
    half_life = settings.scoring.half_life_s
    return [
        weights.get(a, 0.0) * 2.0 ** ((ts.timestamp() - epoch) / half_life)
        for a, ts in zip(actions, stamps, strict=True)
    ]


def fold(settings: Settings, events: dict[str, list[Any]]) -> dict[str, StudentBatch]:
    """Fold one task's events (columns) into one :class:`StudentBatch` per student.

    Pure Python over the columns, inside the task that wrote them: Kafka keys by
    student, so a task holds all of its students' events and no shuffle is needed.
    """
    students: dict[str, StudentBatch] = {}
    stamps = events["timestamp"]
    contributions = anchors(settings, events["action"], stamps)
    for sid, course, action, region, ts, eid, anchor in zip(
        events["studentId"], events["courseId"], events["action"], events["region"],
        stamps, events["eventId"], contributions, strict=True,
    ):  # fmt: skip
        sb = students.get(sid)
        if sb is None:
            sb = students[sid] = StudentBatch(sid)
        sb.total += 1
        sb.actions[action] += 1
        sb.anchor += anchor
        sb.courseAnchors[course] += anchor
        sb.minutes[int(ts.timestamp()) // 60] += 1
        reg = sb.regions.get(region)
        if reg is None:
            sb.regions[region] = [1, ts, ts]
        else:
            reg[0] += 1
            reg[1] = min(reg[1], ts)
            reg[2] = max(reg[2], ts)
        if sb.last is None or (ts, eid) > (sb.last, sb.lastEventId):
            sb.last, sb.lastRegion, sb.lastCourse, sb.lastEventId = (
                ts, region, course, eid,
            )  # fmt: skip
        if sb.first is None or (ts, eid) < (sb.first[0], sb.first[1]):
            sb.first = (ts, eid, action, course, region)
    return students


def switch_activities(
    events: dict[str, list[Any]], students: dict[str, StudentBatch]
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
    multi = {s for s, sb in students.items() if len(sb.regions) > 1}
    if not multi:
        return out
    rows = [
        {"studentId": sid, "timestamp": ts, "eventId": eid, "action": action,
         "courseId": course, "region": region}
        for sid, ts, eid, action, course, region in zip(
            events["studentId"], events["timestamp"], events["eventId"],
            events["action"], events["courseId"], events["region"], strict=True,
        )
        if sid in multi
    ]  # fmt: skip
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
            "lastEventId": sb.lastEventId,
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
