"""The query service's one service layer, shared by the HTTP app and the CLI.

:class:`QueryService` holds the store clients (MongoDB, Redis, lazily Cassandra and
the Kafka producer) for the life of the API process, or of one CLI command, and
answers every operation with the models of :mod:`learntrack.api.models`, so the
API and the terminal give the same answers. Runs in the API process (its methods
are called from FastAPI's worker threads: every client here is thread-safe) and in
the terminal.

Every id is checked against the event contract's identifier pattern and passed to
the stores as a value (a MongoDB filter value, a Redis key argument, a CQL bind
parameter), never spliced into a query.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from learntrack.api.models import (
    Activity,
    ActivityList,
    Alert,
    AlertList,
    AlertsPerHour,
    CourseDay,
    CourseEngagement,
    CourseList,
    CourseRef,
    CoursesEngagement,
    Engagement,
    EventError,
    Health,
    HourCount,
    Leaderboard,
    LeaderboardEntry,
    PipelineMetrics,
    PipelinePoint,
    PipelineTotals,
    PublishResult,
    RecentCounts,
    ScoreBin,
    ScoreDistribution,
    StoreHealth,
    Student,
    StudentPatch,
)
from learntrack.clients import mongo_client, redis_client
from learntrack.config import Settings
from learntrack.errors import LearnTrackError, SinkError
from learntrack.events import ID_PATTERN, ActivityEvent, describe_error
from learntrack.scoring import score_at
from learntrack.sinks import redis as redis_store
from learntrack.sinks.alerts import ALERTS
from learntrack.sinks.base import SinkStatus
from learntrack.sinks.mongo import ACTIVITIES, STUDENTS, activity_summary
from learntrack.sinks.redis import recent_counts

log = logging.getLogger(__name__)

MAX_LATEST = 100
MAX_LEADERBOARD = 100
MAX_ALERTS = 500
MAX_COURSE_DAYS = 366
MAX_BINS = 50
MAX_ALERT_HOURS = 31 * 24
MAX_POINTS = 1000
_ID = re.compile(ID_PATTERN)


class QueryError(LearnTrackError):
    """A query the service cannot answer (base of the API's own errors)."""


class NotFoundError(QueryError):
    """The student (or other thing asked for) does not exist (HTTP 404, CLI exit 1)."""


class InvalidQueryError(QueryError, ValueError):
    """A parameter is invalid (HTTP 422, CLI exit 2); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        """Name the invalid ``field`` and say why."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class UnavailableError(QueryError):
    """A store or component needed for the answer is down or missing (HTTP 503)."""


def check_id(value: str, field: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise InvalidQueryError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        msg = "must be 1-64 letters, digits or _ . : @ -"
        raise InvalidQueryError(field, msg)
    return value


def check_limit(value: int, field: str, maximum: int) -> int:
    """Return ``value`` if 1 <= value <= maximum, else raise InvalidQueryError."""
    if not 1 <= value <= maximum:
        raise InvalidQueryError(field, f"must be between 1 and {maximum}")
    return value


def utc_now() -> dt.datetime:
    """The current time, UTC."""
    return dt.datetime.now(dt.UTC)


def to_utc(value: dt.datetime, field: str) -> dt.datetime:
    """``value`` in UTC (naive: taken as UTC); InvalidQueryError if out of range."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidQueryError(field, "is out of range") from None


#: How long a /health answer is reused (seconds).
HEALTH_TTL_S = 5.0


class QueryService:
    """Answers the query service's operations from the stores.

    Build one per process (the API) or per command (the CLI) and :meth:`close` it.
    Connections open lazily, so building it never fails on a store that is down.
    """

    def __init__(self, settings: Settings) -> None:
        """Keep the settings; clients open on first use."""
        self.settings = settings
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._mongo: Any = None
        self._redis: Any = None
        self._producer: Any = None
        self._cassandra: tuple[Any, Any] | None = None
        self._health_lock = threading.Lock()
        self._health: tuple[float, Health] | None = None

    # -- clients --------------------------------------------------------------
    @property
    def db(self) -> Any:
        """The LearnTrack MongoDB database (client opened on first use)."""
        with self._lock:
            if self._mongo is None:
                self._mongo = mongo_client(self.settings)
            return self._mongo[self.settings.mongo.database]

    @property
    def redis(self) -> Any:
        """The Redis client (opened on first use)."""
        with self._lock:
            if self._redis is None:
                self._redis = redis_client(self.settings)
            return self._redis

    def _producer_instance(self) -> Any:
        from learntrack.producers import ActivityProducer

        with self._lock:
            if self._producer is None:
                self._producer = ActivityProducer(self.settings)
            return self._producer

    def _cassandra_session(self) -> Any:
        """A driver session kept for the service's life (connected on first use)."""
        from learntrack.clients import cassandra_session

        with self._lock:
            if self._cassandra is None:
                try:
                    self._cassandra = cassandra_session(self.settings)
                except Exception as err:
                    msg = f"cassandra: {type(err).__name__}: {err}"
                    raise UnavailableError(" ".join(msg.split())[:300]) from err
            return self._cassandra[1]

    def close(self) -> None:
        """Flush the producer and close every client (idempotent)."""
        with self._lock:
            producer, self._producer = self._producer, None
            mongo, self._mongo = self._mongo, None
            redis, self._redis = self._redis, None
            cassandra, self._cassandra = self._cassandra, None
        try:
            if producer is not None:
                producer.close(timeout=10)
        except LearnTrackError:
            # Requests already answered 503 for what was not delivered.
            log.exception("closing the API's producer")
        finally:
            if mongo is not None:
                mongo.close()
            if redis is not None:
                redis.close()
            if cassandra is not None:
                cassandra[0].shutdown()

    def __enter__(self) -> QueryService:
        """Use as ``with QueryService(settings) as service:``."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on exit."""
        self.close()

    # -- students -------------------------------------------------------------
    def _has_activity(self, student_id: str) -> bool:
        return (
            self.db[ACTIVITIES].find_one({"studentId": student_id}, {"_id": 1})
            is not None
        )

    def _require_student(self, student_id: str) -> dict[str, Any] | None:
        """The student's document; NotFoundError if no profile and no activity."""
        doc: dict[str, Any] | None = self.db[STUDENTS].find_one(
            {"studentId": student_id}, {"_id": 0}
        )
        if doc is None and not self._has_activity(student_id):
            msg = f"unknown student {student_id!r}"
            raise NotFoundError(msg)
        return doc

    def student(self, student_id: str) -> Student:
        """A student's profile and activity summary."""
        check_id(student_id, "studentId")
        doc = self._require_student(student_id)
        return _student(doc or {"studentId": student_id})

    def update_student(self, student_id: str, patch: StudentPatch) -> Student:
        """Set the given profile fields and ``lastUpdated``; never ``activity``."""
        from pymongo import ReturnDocument

        check_id(student_id, "studentId")
        self._require_student(student_id)
        from pymongo.errors import DuplicateKeyError

        changes = {**patch.changes(), "lastUpdated": utc_now()}
        # Upsert: a student known only from the activity log gets a document
        # (studentId is unique, so this cannot create a second one). If the
        # stream created it meanwhile, the second attempt updates that one.
        for attempt in (1, 2):
            try:
                doc = self.db[STUDENTS].find_one_and_update(
                    {"studentId": student_id},
                    {"$set": changes},
                    projection={"_id": 0},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                break
            except DuplicateKeyError:
                if attempt == 2:  # noqa: PLR2004
                    raise
        return _student(doc)

    def latest_activities(self, student_id: str, limit: int = 20) -> ActivityList:
        """A student's ``limit`` latest activities, newest first (event time)."""
        from pymongo import DESCENDING

        check_id(student_id, "studentId")
        check_limit(limit, "limit", MAX_LATEST)
        cursor = (
            self.db[ACTIVITIES]
            .find({"studentId": student_id})
            .sort([("timestamp", DESCENDING)])
            .limit(limit)
        )
        activities = [_activity(doc) for doc in cursor]
        if not activities:
            self._require_student(student_id)
        return ActivityList(studentId=student_id, activities=activities)

    # -- engagement -----------------------------------------------------------
    def engagement(
        self, student_id: str, as_of: dt.datetime | None = None
    ) -> Engagement:
        """Score decayed to ``as_of`` (default now), rank, courses, recent counts."""
        check_id(student_id, "studentId")
        now = to_utc(as_of, "asOf") if as_of else utc_now()
        half_life = self.settings.scoring.half_life_s
        r = self.redis
        pipe = r.pipeline(transaction=False)
        pipe.zscore(redis_store.GLOBAL_BOARD, student_id)
        pipe.zrevrank(redis_store.GLOBAL_BOARD, student_id)
        pipe.hget(redis_store.student_key(student_id), "total")
        pipe.scard(redis_store.student_alerts_key(student_id))
        anchor, rank, total, alerts = pipe.execute()
        if anchor is None:
            self._require_student(student_id)
        # Every course id (a scan of the stream's courseId index, one entry per
        # course), then one ZSCORE each: cost grows with the number of courses,
        # not with the student's events.
        courses = sorted(self.db[ACTIVITIES].distinct("courseId"))
        course_scores: dict[str, float] = {}
        if courses:
            pipe = r.pipeline(transaction=False)
            for course in courses:
                pipe.zscore(redis_store.board_key(course), student_id)
            for course, value in zip(courses, pipe.execute(), strict=True):
                if value is not None:
                    course_scores[course] = score_at(float(value), now, half_life)
        return Engagement(
            studentId=student_id,
            asOf=now,
            score=0.0 if anchor is None else score_at(float(anchor), now, half_life),
            rank=None if rank is None else int(rank) + 1,
            courses=course_scores,
            recent=RecentCounts(**recent_counts(r, student_id, now)),
            totalEvents=int(total or 0),
            alerts=int(alerts or 0),
        )

    def leaderboard(
        self,
        course: str | None = None,
        limit: int = 10,
        as_of: dt.datetime | None = None,
    ) -> Leaderboard:
        """The ``limit`` most engaged students (globally or in ``course``)."""
        if course is not None:
            check_id(course, "course")
        check_limit(limit, "limit", MAX_LEADERBOARD)
        now = to_utc(as_of, "asOf") if as_of else utc_now()
        key = redis_store.board_key(course)
        top = self.redis.zrevrange(key, 0, limit - 1, withscores=True)
        ids = [raw.decode() for raw, _ in top]
        names = {
            d["studentId"]: d.get("name")
            for d in self.db[STUDENTS].find(
                {"studentId": {"$in": ids}}, {"_id": 0, "studentId": 1, "name": 1}
            )
        }
        half_life = self.settings.scoring.half_life_s
        entries = [
            LeaderboardEntry(
                rank=i,
                studentId=sid,
                name=names.get(sid) if isinstance(names.get(sid), str) else None,
                score=score_at(float(anchor), now, half_life),
            )
            for i, (sid, (_, anchor)) in enumerate(zip(ids, top, strict=True), 1)
        ]
        return Leaderboard(course=course, asOf=now, entries=entries)

    # -- alerts ---------------------------------------------------------------
    def alerts(
        self,
        since: dt.datetime | None = None,
        student: str | None = None,
        limit: int = 50,
    ) -> AlertList:
        """Alerts (newest first by event time), optionally since a time / of one."""
        from pymongo import DESCENDING

        check_limit(limit, "limit", MAX_ALERTS)
        query: dict[str, Any] = {}
        if student is not None:
            query["studentId"] = check_id(student, "student")
        if since is not None:
            query["timestamp"] = {"$gte": to_utc(since, "since")}
        cursor = (
            self.db[ALERTS]
            .find(query)
            .sort([("timestamp", DESCENDING)])  # served by the sink's indexes
            .limit(limit)
        )
        return AlertList(alerts=[Alert.model_validate(doc) for doc in cursor])

    # -- courses --------------------------------------------------------------
    def course_engagement(
        self,
        course_id: str,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
    ) -> CourseEngagement:
        """Daily engagement of a course in [date_from, date_to], newest first.

        ``date_to`` defaults to today (UTC), ``date_from`` to six days before it; the
        range may cover at most 366 days.
        """
        check_id(course_id, "courseId")
        date_from, date_to = _date_range(date_from, date_to)
        from learntrack.sinks.cassandra import read_course_engagement

        try:
            rows = read_course_engagement(
                self._cassandra_session(),
                course_id,
                date_from,
                date_to,
                keyspace=self.settings.cassandra.keyspace,
            )
        except SinkError as err:
            raise UnavailableError(str(err)) from err
        return CourseEngagement(
            courseId=course_id,
            dateFrom=date_from,
            dateTo=date_to,
            days=[CourseDay.model_validate(row) for row in rows],
        )

    # -- writes ---------------------------------------------------------------
    def publish(self, events: Sequence[Any]) -> PublishResult:
        """Validate each event; publish the valid ones to Kafka and wait for acks.

        Invalid events are reported by index and never published. Raises
        :class:`UnavailableError` when Kafka does not acknowledge every valid event
        (the caller may resend: events carrying their eventId are deduplicated
        downstream). Requests are published one at a time, so a request's delivery
        failures are its own.
        """
        from learntrack.producers.sdk import ProducerError

        context = self.settings.event_context()
        valid: list[ActivityEvent] = []
        errors: list[EventError] = []
        for index, item in enumerate(events):
            if not isinstance(item, dict):
                errors.append(EventError(index=index, reason="not a JSON object"))
                continue
            try:
                valid.append(ActivityEvent.model_validate(item, context=context))
            except ValidationError as err:
                errors.append(EventError(index=index, reason=describe_error(err)))
        if valid:
            producer = self._producer_instance()
            with self._publish_lock:
                try:
                    for event in valid:
                        producer.send_serialized(event.studentId, event.to_json())
                    producer.flush(self.settings.producer.delivery_timeout_ms / 1000)
                except ProducerError as err:
                    msg = f"kafka did not take the events: {err}"
                    raise UnavailableError(msg) from err
        return PublishResult(accepted=len(valid), rejected=len(errors), errors=errors)

    # -- health ---------------------------------------------------------------
    def health(self) -> Health:
        """Every store's status from its sink's probe (run in parallel).

        ``/health`` needs no key, so the answer is kept for ``HEALTH_TTL_S``: a
        client polling it in a loop cannot open connections faster than that.
        """
        with self._health_lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL_S:
                return cached[1]
            result = self._probe_all()
            self._health = (time.monotonic(), result)
            return result

    def _probe_all(self) -> Health:
        probes = [
            _sink_probe("mongo", "learntrack.sinks.mongo", "MongoActivitySink"),
            _sink_probe("redis", "learntrack.sinks.redis", "RedisScoreSink"),
            _sink_probe("graph", "learntrack.sinks.graph", "GraphSink"),
            _sink_probe(
                "cassandra", "learntrack.sinks.cassandra", "CassandraEngagementSink"
            ),
            _kafka_probe,
        ]
        with ThreadPoolExecutor(max_workers=len(probes)) as pool:
            results = list(pool.map(lambda probe: probe(self.settings), probes))
        stores = [
            StoreHealth(name=s.name, healthy=s.healthy, detail=s.detail)
            for s in results
        ]
        healthy = all(s.healthy for s in stores)
        return Health(status="ok" if healthy else "degraded", stores=stores)

    # -- dashboards (the /dashboard page and Grafana) ---------------------------
    def courses(self) -> CourseList:
        """Every course id in the activity log (a scan of the courseId index)."""
        found = self.db[ACTIVITIES].distinct("courseId")
        ids = sorted(c for c in found if isinstance(c, str))
        return CourseList(courses=[CourseRef(courseId=c) for c in ids])

    def courses_engagement(
        self, date_from: dt.date | None = None, date_to: dt.date | None = None
    ) -> CoursesEngagement:
        """Daily engagement of every course in [date_from, date_to], oldest first.

        The same defaults and limits as :meth:`course_engagement`; one prepared
        Cassandra read per course of the activity log.
        """
        date_from, date_to = _date_range(date_from, date_to)
        courses = [c.courseId for c in self.courses().courses]
        from learntrack.sinks.cassandra import read_course_engagement

        session = self._cassandra_session() if courses else None
        rows: list[dict[str, Any]] = []
        for course in courses:
            try:
                rows += read_course_engagement(
                    session,
                    course,
                    date_from,
                    date_to,
                    keyspace=self.settings.cassandra.keyspace,
                )
            except SinkError as err:
                raise UnavailableError(str(err)) from err
        rows.sort(key=lambda r: (r["date"], r["courseId"]))
        return CoursesEngagement(
            dateFrom=date_from,
            dateTo=date_to,
            courses=courses,
            days=[CourseDay.model_validate(row) for row in rows],
        )

    def score_distribution(
        self,
        course: str | None = None,
        bins: int = 10,
        as_of: dt.datetime | None = None,
    ) -> ScoreDistribution:
        """Students per score bin, globally or in ``course`` (decayed to ``as_of``).

        Equal-width bins from 0 to the top score. Counted with one ZCOUNT per bin on
        the anchored leaderboard (a decayed score is the anchored one times a factor
        common to all students), so the cost grows with the bins, not the students.
        """
        if course is not None:
            check_id(course, "course")
        check_limit(bins, "bins", MAX_BINS)
        now = to_utc(as_of, "asOf") if as_of else utc_now()
        key = redis_store.board_key(course)
        r = self.redis
        pipe = r.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrange(key, 0, 0, withscores=True)
        students, top = pipe.execute()
        factor = score_at(1.0, now, self.settings.scoring.half_life_s)
        top_anchor = float(top[0][1]) if top else 0.0
        if not students or top_anchor <= 0:
            return ScoreDistribution(
                course=course,
                asOf=now,
                students=int(students),
                maxScore=0.0,
                bins=[]
                if not students
                else [ScoreBin(low=0, high=0, label="0", students=int(students))],
            )
        edges = [top_anchor * i / bins for i in range(bins + 1)]
        edges[-1] = top_anchor  # the top student lands in the last bin exactly
        pipe = r.pipeline(transaction=False)
        for i in range(bins):
            above = "-inf" if i == 0 else f"({edges[i]!r}"
            pipe.zcount(key, above, repr(edges[i + 1]))
        counts = pipe.execute()
        width = top_anchor * factor / bins
        digits = 0 if width >= 10 else 1 if width >= 1 else 2  # noqa: PLR2004
        result = []
        for i, count in enumerate(counts):
            low, high = edges[i] * factor, edges[i + 1] * factor
            label = f"{low:.{digits}f}-{high:.{digits}f}"
            result.append(ScoreBin(low=low, high=high, label=label, students=count))
        return ScoreDistribution(
            course=course,
            asOf=now,
            students=int(students),
            maxScore=top_anchor * factor,
            bins=result,
        )

    def alerts_per_hour(
        self, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> AlertsPerHour:
        """Alerts per event-time hour (UTC) from ``start`` to ``end``, oldest first.

        ``end`` defaults to now, ``start`` to 24 hours before it; every hour that
        overlaps the range is listed (at most :data:`MAX_ALERT_HOURS`). Counts come
        from the alert sink's per-hour Redis sets, which expire after 30 days.
        """
        from learntrack.sinks.alerts import alerts_per_hour

        end = to_utc(end, "to") if end else utc_now()
        try:
            start = to_utc(start, "from") if start else end - dt.timedelta(hours=24)
        except OverflowError:
            raise InvalidQueryError("to", "is too early") from None
        if start > end:
            raise InvalidQueryError("from", "must not be after to")
        first = start.replace(minute=0, second=0, microsecond=0)
        count = int((end - first).total_seconds() // 3600) + 1
        if count > MAX_ALERT_HOURS:
            msg = f"the range covers more than {MAX_ALERT_HOURS} hours"
            raise InvalidQueryError("from", msg)
        hours = [first + dt.timedelta(hours=i) for i in range(count)]
        counted = alerts_per_hour(self.redis, hours)
        listed = [
            HourCount(hour=h, alerts=n)
            for h, n in zip(hours, counted.values(), strict=True)
        ]
        return AlertsPerHour(
            start=start, end=end, total=sum(h.alerts for h in listed), hours=listed
        )

    def pipeline_metrics(self, points: int = 120) -> PipelineMetrics:
        """The stream's totals and latest ``points`` batches (see streaming.metrics)."""
        from learntrack.sinks.pipeline import read_pipeline

        check_limit(points, "points", MAX_POINTS)
        totals, raw = read_pipeline(self.redis, points)
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(redis_store.ALL_ALERTS)
        pipe.zcard(redis_store.GLOBAL_BOARD)
        alerts, scored = pipe.execute()
        return PipelineMetrics(
            asOf=utc_now(),
            totals=PipelineTotals.model_validate(
                {**totals, "alerts": alerts, "studentsScored": scored}
            ),
            points=[PipelinePoint.model_validate(p) for p in raw],
        )

    # -- detection and overview (the CLI's `query multi-region`, `summary`) ----
    def multi_region(
        self,
        window_s: float,
        since: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Students who acted from two or more regions within ``window_s`` seconds.

        Asks the graph (see :func:`learntrack.sinks.graph.multi_region`; a driver
        session per call), only activities at or after ``since`` when given. Each
        row: ``studentId``, sorted ``regions`` and the ``evidence`` (the switches).
        A driver error is an :class:`UnavailableError`.
        """
        from learntrack.events import utc_iso
        from learntrack.sinks.graph import multi_region

        if window_s <= 0:
            raise InvalidQueryError("window", "must be positive")
        check_limit(limit, "limit", 100_000)
        start = utc_iso(to_utc(since, "since")) if since is not None else ""
        try:
            return multi_region(self.settings, window_s, start, limit)
        except Exception as err:  # any driver error: one line, not a traceback
            msg = f"graph query failed: {type(err).__name__}: {err}"
            raise UnavailableError(msg) from err

    def summary(self, top: int = 10) -> dict[str, Any]:
        """What the stream has produced, for ``learntrack summary``.

        Keys: ``events`` (MongoDB's activity count, estimated), ``activeStudents``
        (students with an activity summary), ``activityTopic`` and ``deadLetters``
        (records in the activity topic and in the dead-letter topic, read from
        Kafka) and ``leaders``: the ``top`` students of the global leaderboard,
        best first, each ``{"studentId", "profile"}`` with its stored profile
        document (``{}`` if it has none).
        """
        from learntrack.topics import read_topic, topic_sizes

        check_limit(top, "top", MAX_LEADERBOARD)
        events = self.db[ACTIVITIES].estimated_document_count()
        active = self.db[STUDENTS].count_documents({"activity": {"$exists": True}})
        top_ids = self.redis.zrevrange(redis_store.GLOBAL_BOARD, 0, top - 1)
        ids = [raw.decode() for raw in top_ids]
        profiles = {
            doc["studentId"]: doc
            for doc in self.db[STUDENTS].find({"studentId": {"$in": ids}}, {"_id": 0})
        }
        sizes = topic_sizes(self.settings)
        dead = len(read_topic(self.settings, self.settings.topics.dlq))
        return {
            "events": events,
            "activeStudents": active,
            "activityTopic": sizes[self.settings.topics.activity],
            "deadLetters": dead,
            "leaders": [
                {"studentId": sid, "profile": profiles.get(sid, {})} for sid in ids
            ],
        }


def _date_range(
    date_from: dt.date | None, date_to: dt.date | None
) -> tuple[dt.date, dt.date]:
    """The day range of a course engagement read, with its defaults and limits."""
    date_to = date_to or utc_now().date()
    if date_from is None:
        try:
            date_from = date_to - dt.timedelta(days=6)
        except OverflowError:
            raise InvalidQueryError("to", "is too early") from None
    if date_from > date_to:
        raise InvalidQueryError("from", "must not be after to")
    if (date_to - date_from).days + 1 > MAX_COURSE_DAYS:
        msg = f"the range covers more than {MAX_COURSE_DAYS} days"
        raise InvalidQueryError("from", msg)
    return date_from, date_to


#: The pipeline's Prometheus metrics: name, type, the totals field, help.
PROMETHEUS_METRICS = (
    ("learntrack_stream_events", "counter", "events",
     "Records read by the stream (valid + dead letters)."),
    ("learntrack_stream_dead_letters", "counter", "deadLetters",
     "Records sent to the dead-letter topic."),
    ("learntrack_stream_duplicates", "counter", "duplicates",
     "Events dropped as duplicates of an earlier eventId."),
    ("learntrack_stream_batches", "counter", "batches", "Micro-batches written."),
    ("learntrack_stream_last_batch_id", "gauge", "lastBatch",
     "Id of the latest micro-batch."),
    ("learntrack_stream_last_batch_seconds", "gauge", "lastSeconds",
     "Duration of the latest micro-batch."),
    ("learntrack_stream_events_per_second", "gauge", "eventsPerSecond",
     "Records per second through the latest micro-batch."),
    ("learntrack_stream_consumer_lag", "gauge", "lag",
     "Records behind the topic's end after the latest micro-batch."),
    ("learntrack_stream_freshness_p99_seconds", "gauge", "freshnessP99",
     "Produced -> stored in every store, p99 over the latest batch's events."),
    ("learntrack_alerts", "gauge", "alerts", "Multi-region alerts raised."),
    ("learntrack_students_scored", "gauge", "studentsScored",
     "Students with an engagement score."),
)  # fmt: skip


def prometheus_text(totals: PipelineTotals) -> bytes:
    """The pipeline's metrics in Prometheus' text format (a private registry)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    values = totals.model_dump()

    class Pipeline(Collector):
        def collect(self) -> Any:
            for name, kind, field, text in PROMETHEUS_METRICS:
                value = values[field]
                if value is None:
                    continue
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, text, value=float(value))
            if totals.lastAt is not None:
                yield GaugeMetricFamily(
                    "learntrack_stream_last_batch_timestamp_seconds",
                    "When the latest micro-batch finished (Unix time).",
                    value=totals.lastAt.timestamp(),
                )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Pipeline())
    return generate_latest(registry)


def _sink_probe(store: str, module: str, cls: str) -> Any:
    """A probe calling ``status()`` of sink ``module.cls``, reported as ``store``."""

    def probe(settings: Settings) -> SinkStatus:
        import importlib

        try:
            sink = getattr(importlib.import_module(module), cls)(settings)
        except (ImportError, AttributeError) as err:
            return SinkStatus(store, False, f"no sink: {err}")
        status: SinkStatus = sink.status()
        return SinkStatus(store, status.healthy, status.detail)

    return probe


def _kafka_probe(settings: Settings) -> SinkStatus:
    """The broker answers a metadata request and has the activity topic."""
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(settings.kafka.client_config())
        topics = admin.list_topics(timeout=5).topics
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return SinkStatus("kafka", False, f"{type(err).__name__}: {err}"[:200])
    if settings.topics.activity not in topics:
        detail = f"topic {settings.topics.activity} does not exist"
        return SinkStatus("kafka", False, detail)
    return SinkStatus("kafka", True)


def _student(doc: dict[str, Any]) -> Student:
    data = {k: v for k, v in doc.items() if k in Student.model_fields}
    if isinstance(data.get("activity"), dict):
        data["activity"] = activity_summary(data["activity"])
    return Student.model_validate(data)


def _activity(doc: dict[str, Any]) -> Activity:
    data = {k: v for k, v in doc.items() if k in Activity.model_fields}
    data["eventId"] = str(doc.get("eventId", doc.get("_id")))
    return Activity.model_validate(data)
