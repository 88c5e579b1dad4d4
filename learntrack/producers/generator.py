"""The synthetic load generator: realistic activity with known ground truth.

Runs in the ``learntrack generate`` process. Everything is drawn from one seeded
``random.Random``, so the same seed gives the same students, events, event ids,
malformed records and truth. The model of behaviour:

- students (faker-made profiles) with a home region and a heavy-tailed (Pareto)
  activity level, enrolled in a few courses of Zipf-like popularity;
- sessions (login, a mix of page views, videos, quizzes, posts, submissions, logout)
  started by a daily rhythm (quiet at night, peaks late morning and evening);
- legitimate travel: a few students switch region once, hours away from any other
  session (never inside the detection window);
- labelled anomalies: *impossible travel* (events from another region minutes after a
  home-region event) and *concurrent sessions* (a second session from another region
  overlapping a home-region session);
- optionally, a share of deliberately malformed raw records (for the dead-letter
  path), each listed in the truth by kind and SHA-256 of its bytes.

The truth (``--truth FILE``) is what every sink must end up with.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import itertools
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from learntrack.events import DEFAULT_REGIONS, Action, utc_iso, uuid7
from learntrack.scoring import EPOCH, anchored, weight_of

MS = 1000
MINUTE = 60 * MS
HOUR = 60 * MINUTE

#: Share of students per home region (in DEFAULT_REGIONS order).
REGION_SHARES = (0.35, 0.25, 0.08, 0.20, 0.07, 0.05)
#: Relative activity by hour of day (UTC, the simulated campus clock).
HOURLY_RHYTHM = (
    1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 2, 4, 6, 8, 9,
    8, 7, 7, 7, 6, 6, 7, 9, 10, 8, 5, 2,
)  # fmt: skip
#: Mix of actions inside a session (after login, before logout).
ACTION_MIX = {
    Action.PAGE_VIEW: 45,
    Action.VIDEO_PLAY: 18,
    Action.VIDEO_COMPLETE: 9,
    Action.QUIZ_ATTEMPT: 14,
    Action.FORUM_POST: 7,
    Action.ASSIGNMENT_SUBMIT: 4,
}
_MIX_ACTIONS, _MIX_WEIGHTS = list(ACTION_MIX), list(ACTION_MIX.values())
DEVICES = ("web", "web", "web", "android", "ios", "desktop")
SPECIALITIES = ("ILSI", "GL", "SI", "RSD", "SDIA", "TI", "Data Science", "Networks")
LEVELS = ("L1", "L2", "L3", "M1", "M2")
#: Legitimate travel keeps this far from any other session of the student.
TRAVEL_GAP_MS = 4 * HOUR
MALFORMED_KINDS = (
    "bad_json",
    "wrong_type",
    "missing_field",
    "unknown_action",
    "unknown_region",
    "naive_timestamp",
    "absurd_timestamp",
    "oversized",
    "invalid_utf8",
    "null_key",
    "mongo_operator_id",
    "cypher_fragment_id",
)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``events`` counts valid events; malformed ones come extra."""

    students: int = 1000
    courses: int = 20
    events: int = 10_000
    start: dt.datetime = field(
        default_factory=lambda: (
            dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            - dt.timedelta(days=1)
        )
    )
    span: dt.timedelta = dt.timedelta(days=1)
    seed: int = 42
    bad_ratio: float = 0.0
    anomaly_ratio: float = 0.01
    travel_ratio: float = 0.03
    out_of_order: dt.timedelta = dt.timedelta(0)
    window: dt.timedelta = dt.timedelta(minutes=30)
    regions: tuple[str, ...] = DEFAULT_REGIONS
    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        """Reject settings that cannot produce a sensible data set."""
        if self.students < 1 or self.courses < 1 or self.events < 1:
            msg = "students, courses and events must be at least 1"
            raise ValueError(msg)
        if not 0 <= self.bad_ratio <= 1:
            msg = "bad_ratio must be between 0 and 1"
            raise ValueError(msg)
        if self.start.tzinfo is None:
            msg = "start must be timezone-aware"
            raise ValueError(msg)
        if self.span < dt.timedelta(hours=1):
            msg = "span must be at least one hour"
            raise ValueError(msg)
        if len(self.regions) < 2:  # noqa: PLR2004
            msg = "at least two regions are needed"
            raise ValueError(msg)


# One event, compact: (ts_ms, eventId, studentId, courseId, action, region,
# sessionId, device, durationMs | None, score | None)
Event = tuple[int, str, str, str, str, str, str, str, int | None, float | None]


@dataclass
class SimStudent:
    """A generated student (profile + behaviour)."""

    student_id: str
    home: str
    activity: float
    courses: list[str]
    device: str
    travel_to: str | None = None
    travel_at: int | None = None


@dataclass
class Malformed:
    """A deliberately invalid raw record."""

    kind: str
    key: bytes | None
    value: bytes

    @property
    def sha256(self) -> str:
        """Identity of the raw bytes (the DLQ keeps them verbatim)."""
        return hashlib.sha256(self.value).hexdigest()


@dataclass
class Dataset:
    """Everything one run generated, in delivery order."""

    config: GeneratorConfig
    profiles: list[dict[str, Any]]
    events: list[Event]
    malformed: list[Malformed]
    #: Delivery order: index >= 0 is events[index]; < 0 is malformed[-index - 1].
    order: list[int]
    anomalies: list[dict[str, Any]]
    travel: list[dict[str, Any]]


class _Rng(random.Random):
    def uuid4(self) -> str:
        return str(uuid.UUID(int=self.getrandbits(128), version=4))

    def uuid7(self, ms: int) -> str:
        """A time-ordered id for an event at ``ms`` (reproducible by the seed)."""
        return str(uuid7(ms, self.getrandbits(74)))


def _iso(ts_ms: int) -> str:
    return utc_iso(dt.datetime.fromtimestamp(ts_ms / MS, dt.UTC))


def event_dict(event: Event) -> dict[str, Any]:
    """The wire form of a compact event (what :class:`ActivityEvent` validates)."""
    ts, eid, sid, cid, action, region, session, device, duration, score = event
    out: dict[str, Any] = {
        "eventId": eid,
        "studentId": sid,
        "courseId": cid,
        "action": action,
        "timestamp": _iso(ts),
        "region": region,
        "sessionId": session,
        "device": device,
        "schemaVersion": 1,
    }
    if duration is not None:
        out["durationMs"] = duration
    if score is not None:
        out["score"] = score
    return out


def event_bytes(event: Event) -> bytes:
    """Serialized wire form (orjson)."""
    return orjson.dumps(event_dict(event))


class Generator:
    """Builds a :class:`Dataset` from a :class:`GeneratorConfig` (pure, no I/O)."""

    def __init__(self, config: GeneratorConfig) -> None:
        """Seed every random choice from ``config.seed``."""
        self.config = config
        self.rng = _Rng(config.seed)
        self.start_ms = int(config.start.timestamp() * MS)
        self.span_ms = int(config.span.total_seconds() * MS)
        self.end_ms = self.start_ms + self.span_ms

    # -- population ---------------------------------------------------------------
    def _courses(self) -> tuple[list[str], list[float]]:
        ids = [f"C{i:03d}" for i in range(1, self.config.courses + 1)]
        popularity = [1.0 / (i**0.8) for i in range(1, len(ids) + 1)]
        return ids, popularity

    def _students(self) -> list[SimStudent]:
        rng, cfg = self.rng, self.config
        regions = list(cfg.regions)
        shares = list(REGION_SHARES[: len(regions)]) + [0.05] * (
            len(regions) - len(REGION_SHARES)
        )
        course_ids, popularity = self._courses()
        students = []
        for i in range(1, cfg.students + 1):
            n_courses = min(len(course_ids), rng.choice((1, 2, 2, 3, 3, 4)))
            chosen: list[str] = []
            while len(chosen) < n_courses:
                c = rng.choices(course_ids, popularity)[0]
                if c not in chosen:
                    chosen.append(c)
            students.append(
                SimStudent(
                    student_id=f"S{i:06d}",
                    home=rng.choices(regions, shares)[0],
                    activity=min(rng.paretovariate(1.3), 200.0),
                    courses=chosen,
                    device=rng.choice(DEVICES),
                )
            )
        return students

    def _profiles(self, students: list[SimStudent]) -> list[dict[str, Any]]:
        from faker import Faker

        fake = Faker()
        fake.seed_instance(self.config.seed)
        updated = self.config.start
        profiles = []
        for s in students:
            name = fake.name()
            local = "".join(ch for ch in name.lower() if ch.isalnum())[:20] or "student"
            profiles.append(
                {
                    "studentId": s.student_id,
                    "name": name,
                    "email": f"{local}.{s.student_id.lower()}@example.org",
                    "speciality": self.rng.choice(SPECIALITIES),
                    "studentLevel": self.rng.choice(LEVELS),
                    "progress": round(self.rng.uniform(0, 100), 1),
                    "lastUpdated": updated,
                }
            )
        return profiles

    # -- time -----------------------------------------------------------------------
    def _session_start(self) -> int:
        rng = self.rng
        days = max(1, -(-self.span_ms // (24 * HOUR)))
        for _ in range(20):
            day = rng.randrange(days)
            hour = rng.choices(range(24), HOURLY_RHYTHM)[0]
            ts = (
                self.start_ms
                + day * 24 * HOUR
                + hour * HOUR
                + rng.randrange(HOUR)
                - (self.start_ms % (24 * HOUR))
                + (self.start_ms % (24 * HOUR))
            )
            if self.start_ms <= ts < self.end_ms:
                return ts
        return self.start_ms + rng.randrange(self.span_ms)

    # -- sessions -------------------------------------------------------------------
    def _session(
        self, student: SimStudent, ts: int, length: int, region: str, course: str
    ) -> list[Event]:
        rng = self.rng
        session_id = f"{student.student_id}-{rng.getrandbits(40):010x}"
        actions: list[str] = []
        if length >= 3:  # noqa: PLR2004
            middle = rng.choices(_MIX_ACTIONS, _MIX_WEIGHTS, k=length - 2)
            actions = [Action.LOGIN, *middle, Action.LOGOUT]
        else:
            actions = rng.choices(_MIX_ACTIONS, _MIX_WEIGHTS, k=length)
        # Spacing first: a session that would run past the end of the simulated span
        # starts earlier instead (no pile-up of events on the last millisecond).
        gaps = [0] + [rng.randrange(5 * MS, 4 * MINUTE) for _ in actions[1:]]
        total = sum(gaps)
        if ts + total > self.end_ms - 1:
            ts = max(self.start_ms, self.end_ms - 1 - total)
        out: list[Event] = []
        for action, gap in zip(actions, gaps, strict=True):
            ts += gap
            duration = score = None
            if action in (Action.VIDEO_PLAY, Action.VIDEO_COMPLETE):
                duration = rng.randrange(10_000, 1_200_000)
            elif action == Action.QUIZ_ATTEMPT:
                score = round(rng.betavariate(4, 2), 3)
            elif action == Action.PAGE_VIEW:
                duration = rng.randrange(1_000, 300_000)
            out.append(
                (
                    ts,
                    rng.uuid7(ts),
                    student.student_id,
                    course,
                    str(action),
                    region,
                    session_id,
                    student.device,
                    duration,
                    score,
                )
            )
        return out

    def _region_at(self, student: SimStudent, ts: int) -> tuple[int, str]:
        """Region for a session starting at ts; moves sessions off the travel gap."""
        if student.travel_at is None or student.travel_to is None:
            return ts, student.home
        if student.travel_at - TRAVEL_GAP_MS <= ts < student.travel_at:
            ts = student.travel_at + (ts - (student.travel_at - TRAVEL_GAP_MS))
        if ts >= student.travel_at:
            return min(ts, self.end_ms - 1), student.travel_to
        return ts, student.home

    # -- the whole data set ----------------------------------------------------------
    def build(self) -> Dataset:
        """Generate profiles, events, anomalies, malformed records, delivery order."""
        cfg, rng = self.config, self.rng
        students = self._students()
        profiles = self._profiles(students)
        by_id = {s.student_id: s for s in students}
        ids = [s.student_id for s in students]
        shuffled = ids[:]
        rng.shuffle(shuffled)
        n_anomalies = 0
        if cfg.anomaly_ratio > 0 and cfg.events >= 100 and len(ids) >= 2:  # noqa: PLR2004
            n_anomalies = max(1, round(len(ids) * cfg.anomaly_ratio))
            n_anomalies = min(n_anomalies, len(ids) // 2, cfg.events // 50)
        anomalous = shuffled[:n_anomalies]
        travellers = shuffled[
            n_anomalies : n_anomalies + round(len(ids) * cfg.travel_ratio)
        ]
        for sid in travellers:
            s = by_id[sid]
            s.travel_to = rng.choice([r for r in cfg.regions if r != s.home])
            s.travel_at = self.start_ms + int(self.span_ms * rng.uniform(0.3, 0.7))
        kinds = [
            "impossible_travel" if i % 2 == 0 else "concurrent_sessions"
            for i in range(n_anomalies)
        ]
        reserved = sum(2 if k == "impossible_travel" else 4 for k in kinds)
        budget = cfg.events - reserved

        events: list[Event] = []
        cum = list(itertools.accumulate(s.activity for s in students))
        # Anomalous students get one session first, so the anomaly has a home event.
        forced = list(anomalous)
        while len(events) < budget:
            if forced:
                student = by_id[forced.pop()]
            else:
                student = students[bisect.bisect(cum, rng.random() * cum[-1])]
            length = min(budget - len(events), 1 + int(rng.expovariate(1 / 7)))
            ts, region = self._region_at(student, self._session_start())
            course = rng.choice(student.courses)
            events.extend(self._session(student, ts, length, region, course))

        anomalies = self._inject(events, anomalous, kinds, by_id)
        travel = [
            {
                "studentId": sid,
                "from": by_id[sid].home,
                "to": by_id[sid].travel_to,
                "time": _iso(by_id[sid].travel_at or 0),
            }
            for sid in travellers
        ]
        events.sort(key=lambda e: (e[0], e[1]))
        malformed = self._malformed(events, round(cfg.events * cfg.bad_ratio))
        order = self._delivery_order(events, len(malformed))
        return Dataset(cfg, profiles, events, malformed, order, anomalies, travel)

    def _inject(
        self,
        events: list[Event],
        anomalous: list[str],
        kinds: list[str],
        by_id: dict[str, SimStudent],
    ) -> list[dict[str, Any]]:
        """Add each anomalous student's foreign-region events; return the labels."""
        rng, cfg = self.rng, self.config
        anomalies = []
        home_events: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            if e[2] in anomalous:
                home_events[e[2]].append(e)
        for sid, kind in zip(anomalous, kinds, strict=True):
            student = by_id[sid]
            anchor = rng.choice(home_events[sid])
            other = rng.choice([r for r in cfg.regions if r != student.home])
            course = anchor[3]
            if kind == "impossible_travel":
                t0 = anchor[0] + rng.randrange(2 * MINUTE, 20 * MINUTE)
                extra = self._session(student, t0, 2, other, course)
            else:
                t0 = anchor[0] + rng.randrange(0, 5 * MINUTE)
                extra = self._session(student, t0, 4, other, course)
            events.extend(extra)
            anomalies.append(
                {
                    "studentId": sid,
                    "kind": kind,
                    "time": _iso(extra[0][0]),
                    "regions": sorted({student.home, other}),
                    "foreignRegion": other,
                    "homeEventId": anchor[1],
                    "foreignEventIds": [e[1] for e in extra],
                }
            )
        return anomalies

    def _delivery_order(self, events: list[Event], n_bad: int) -> list[int]:
        rng = self.rng
        jitter = int(self.config.out_of_order.total_seconds() * MS)
        if jitter:
            keyed = sorted(
                range(len(events)),
                key=lambda i: events[i][0] + rng.randrange(jitter + 1),
            )
        else:
            keyed = list(range(len(events)))
        for j in range(n_bad):
            keyed.insert(rng.randrange(len(keyed) + 1), -j - 1)
        return keyed

    # -- malformed records -------------------------------------------------------
    def _malformed(self, events: list[Event], count: int) -> list[Malformed]:
        rng = self.rng
        out = []
        for i in range(count):
            kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
            base = event_dict(rng.choice(events)) if events else {}
            base["eventId"] = rng.uuid4()
            key: bytes | None = str(base.get("studentId", "S0")).encode()
            if kind == "null_key":
                key = None
            out.append(Malformed(kind, key, _BREAKERS[kind](base, rng)))
        return out


def _set(field: str, value: Any) -> Callable[[dict[str, Any], random.Random], bytes]:
    def breaker(base: dict[str, Any], _rng: random.Random) -> bytes:
        return orjson.dumps({**base, field: value})

    return breaker


def _drop(field: str) -> Callable[[dict[str, Any], random.Random], bytes]:
    def breaker(base: dict[str, Any], _rng: random.Random) -> bytes:
        return orjson.dumps({k: v for k, v in base.items() if k != field})

    return breaker


_BREAKERS: dict[str, Callable[[dict[str, Any], random.Random], bytes]] = {
    "bad_json": lambda b, _r: orjson.dumps(b)[:-7] + b"#%{",
    "wrong_type": _set("durationMs", "a long time"),
    "missing_field": _drop("courseId"),
    "unknown_action": _set("action", "teleport"),
    "unknown_region": _set("region", "MARS"),
    "naive_timestamp": lambda b, _r: orjson.dumps(
        {**b, "timestamp": str(b["timestamp"]).rstrip("Z")}
    ),
    "absurd_timestamp": lambda b, r: orjson.dumps(
        {**b, "timestamp": r.choice(("1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"))}
    ),
    "oversized": _set("metadata", {"blob": "x" * (70 * 1024)}),
    "invalid_utf8": lambda b, _r: orjson.dumps(b).replace(
        b'"region"', b'"reg\xff\xfeion"'
    ),
    "null_key": _drop("studentId"),
    "mongo_operator_id": _set("studentId", {"$gt": ""}),
    "cypher_fragment_id": _set("studentId", "S1'}) DETACH DELETE n //"),
}


# -- truth -----------------------------------------------------------------------------
def build_truth(data: Dataset) -> dict[str, Any]:
    """What every sink must hold after the data set is processed (JSON-ready)."""
    cfg = data.config
    per_student: dict[str, dict[str, Any]] = {}
    per_course_day: dict[str, dict[str, Any]] = {}
    course_day_students: dict[str, set[str]] = defaultdict(set)
    for ts, _eid, sid, cid, action, region, *_rest in data.events:
        st = per_student.setdefault(
            sid,
            {"total": 0, "actions": Counter(), "courses": Counter(), "regions": {},
             "scoreAnchor": 0.0, "lastEvent": 0},
        )  # fmt: skip
        st["total"] += 1
        st["actions"][action] += 1
        st["courses"][cid] += 1
        reg = st["regions"].setdefault(region, {"count": 0, "first": ts, "last": ts})
        reg["count"] += 1
        reg["first"] = min(reg["first"], ts)
        reg["last"] = max(reg["last"], ts)
        st["lastEvent"] = max(st["lastEvent"], ts)
        event_time = dt.datetime.fromtimestamp(ts / MS, dt.UTC)
        st["scoreAnchor"] += anchored(
            weight_of(action, cfg.weights), event_time, cfg.half_life_s
        )
        day = event_time.date().isoformat()
        key = f"{cid}|{day}"
        cd = per_course_day.setdefault(
            key, {"courseId": cid, "date": day, "count": 0, "actions": Counter()}
        )
        cd["count"] += 1
        cd["actions"][action] += 1
        course_day_students[key].add(sid)
    for key, cd in per_course_day.items():
        cd["activeStudents"] = len(course_day_students[key])
        cd["quizAttempts"] = cd["actions"].get("quiz_attempt", 0)
        cd["actions"] = dict(cd["actions"])
    for st in per_student.values():
        st["actions"] = dict(st["actions"])
        st["courses"] = dict(st["courses"])
        st["lastEvent"] = _iso(st["lastEvent"])
        for reg in st["regions"].values():
            reg["first"], reg["last"] = _iso(reg["first"]), _iso(reg["last"])
    return {
        "generator": {
            "seed": cfg.seed,
            "students": cfg.students,
            "courses": cfg.courses,
            "events": cfg.events,
            "start": cfg.start.isoformat(),
            "span_s": cfg.span.total_seconds(),
            "bad_ratio": cfg.bad_ratio,
            "out_of_order_s": cfg.out_of_order.total_seconds(),
            "window_s": cfg.window.total_seconds(),
        },
        "counts": {
            "valid": len(data.events),
            "malformed": len(data.malformed),
            "students": len(data.profiles),
            "activeStudents": len(per_student),
            "courses": cfg.courses,
        },
        "scoring": {
            "weights": cfg.weights,
            "half_life_s": cfg.half_life_s,
            "epoch": EPOCH.isoformat(),
        },
        "perStudent": per_student,
        "perCourseDay": per_course_day,
        "anomalies": data.anomalies,
        "travel": data.travel,
        "malformed": [
            {
                "kind": m.kind,
                "sha256": m.sha256,
                "key": m.key.decode("utf-8", "replace") if m.key is not None else None,
            }
            for m in data.malformed
        ],  # fmt: skip
    }


def multi_region_students(events: list[Event], window: dt.timedelta) -> set[str]:
    """Reference detector: students with two regions within ``window`` (exact).

    Sorts each student's events by time and compares each event with the latest
    event of every other region seen so far: O(n log n), no all-pairs product.
    """
    w = int(window.total_seconds() * MS)
    by_student: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e in events:
        by_student[e[2]].append((e[0], e[5]))
    flagged = set()
    for sid, items in by_student.items():
        items.sort()
        last_seen: dict[str, int] = {}
        for ts, region in items:
            if any(r != region and ts - t <= w for r, t in last_seen.items()):
                flagged.add(sid)
                break
            last_seen[region] = ts
    return flagged


# -- publishing ------------------------------------------------------------------------
Sender = Callable[[bytes | None, bytes], None]


def delivery_stream(data: Dataset) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) pairs in delivery order, serialized lazily."""
    for index in data.order:
        if index >= 0:
            event = data.events[index]
            yield event[2].encode(), event_bytes(event)
        else:
            bad = data.malformed[-index - 1]
            yield bad.key, bad.value


def publish(
    data: Dataset,
    send: Sender,
    *,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send every record through ``send`` at ``rate`` records/s (0 = unpaced)."""
    return send_paced(delivery_stream(data), send, rate=rate, on_progress=on_progress)


def send_paced(
    records: Iterable[tuple[bytes | None, bytes]],
    send: Sender,
    *,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``(key, value)`` pairs at ``rate`` records/s (0 = unpaced), per 1,000."""
    started = time.perf_counter()
    sent = 0
    step = 1000
    for key, value in records:
        send(key, value)
        sent += 1
        if sent % step == 0:
            if on_progress is not None:
                on_progress(step)
            if rate > 0:
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    if on_progress is not None and sent % step:
        on_progress(sent % step)
    return sent


def upsert_profiles(settings: Any, profiles: list[dict[str, Any]]) -> int:
    """Upsert the student profiles into MongoDB ``students`` (keyed by studentId).

    Idempotent: re-running with the same seed rewrites the same documents. Runs in
    the generator process.
    """
    from pymongo import ASCENDING, UpdateOne

    from learntrack.clients import mongo_client

    with mongo_client(settings) as client:
        coll = client[settings.mongo.database]["students"]
        coll.create_index([("studentId", ASCENDING)], unique=True)
        written = 0
        for i in range(0, len(profiles), 5000):
            ops = [
                UpdateOne({"studentId": p["studentId"]}, {"$set": p}, upsert=True)
                for p in profiles[i : i + 5000]
            ]
            result = coll.bulk_write(ops, ordered=False)
            written += result.upserted_count + result.modified_count
    return written
