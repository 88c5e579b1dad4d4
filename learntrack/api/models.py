"""Request and response models of the query service (the API's OpenAPI schema).

Pure pydantic models, shared by the HTTP app (:mod:`learntrack.api.app`), the
service layer (:mod:`learntrack.api.service`) and the CLI, so both interfaces answer
with the same data. Runs in the API process and in the terminal.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import operator
import types
import typing
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    create_model,
    model_validator,
)

from learntrack.events import ActivityEvent


def _patch_schema(schema: dict[str, Any]) -> None:
    """Optional properties without ``null`` (omitted is fine, null is not); >= 1."""
    schema["minProperties"] = 1
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if not options:
            continue
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            prop.pop("anyOf")
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
        prop.pop("default", None)


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer except validation errors (422)."""

    detail: str


# -- students -----------------------------------------------------------------
class ActivitySummary(BaseModel):
    """What the stream keeps about a student in ``students.activity``."""

    total: int = 0
    lastAt: dt.datetime | None = None  # noqa: N815 - field names of the store
    lastRegion: str | None = None  # noqa: N815
    lastCourse: str | None = None  # noqa: N815
    byAction: dict[str, int] = Field(default_factory=dict)  # noqa: N815


class Student(BaseModel):
    """A student's profile and activity summary (MongoDB ``students``).

    Profile fields are absent for a student the stream has seen but nobody has
    registered yet.
    """

    studentId: str  # noqa: N815
    name: str | None = None
    email: str | None = None
    speciality: str | None = None
    studentLevel: str | None = None  # noqa: N815
    progress: float | None = None
    lastUpdated: dt.datetime | None = None  # noqa: N815
    activity: ActivitySummary | None = None


class StudentPatch(BaseModel):
    """The profile fields ``PATCH /students/{id}`` may change (at least one).

    Omitted fields stay as they are; ``null`` is refused. ``lastUpdated`` is set by
    the service; the stream's ``activity`` summary is never touched.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_patch_schema)

    name: str | None = Field(None, min_length=1, max_length=200)
    email: EmailStr | None = None
    speciality: str | None = Field(None, min_length=1, max_length=100)
    studentLevel: str | None = Field(None, min_length=1, max_length=20)  # noqa: N815
    progress: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_and_no_null(self) -> StudentPatch:
        if not self.model_fields_set:
            msg = "give at least one of name, email, speciality, studentLevel, progress"
            raise ValueError(msg)
        nulls = sorted(k for k in self.model_fields_set if getattr(self, k) is None)
        if nulls:
            msg = f"null is not a value for {', '.join(nulls)}"
            raise ValueError(msg)
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given, as a MongoDB ``$set`` document."""
        return self.model_dump(include=self.model_fields_set)


def _stored_type(annotation: Any) -> Any:
    """The stored (JSON) form of an event field's type: ids and enums as text.

    Constraints are the producer's business (the event model validates on the
    way in); what is stored is read back as plain text, numbers and times.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _stored_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_stored_type(a) for a in typing.get_args(annotation)]
        return functools.reduce(operator.or_, parts)
    if annotation is uuid.UUID:
        return str
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return str
    if isinstance(annotation, type) and issubclass(annotation, dt.datetime):
        return dt.datetime
    return annotation


#: The stored activity's fields: the event model's, minus its schema version.
_STORED_FIELDS: dict[str, Any] = {
    name: (
        _stored_type(info.annotation),
        ... if info.is_required() or name == "eventId" else None,
    )
    for name, info in ActivityEvent.model_fields.items()
    if name != "schemaVersion"
}
if typing.TYPE_CHECKING:  # built at import: opaque to the type checker
    _ActivityFields = Any
else:
    _ActivityFields = create_model("_ActivityFields", **_STORED_FIELDS)


# Derived from ActivityEvent: a field added to the event appears here, in the
# API's schema, with no edit.
class Activity(_ActivityFields):
    """One stored activity event (MongoDB ``activities``)."""


class ActivityList(BaseModel):
    """A student's latest activities, newest first."""

    studentId: str  # noqa: N815
    activities: list[Activity]


# -- engagement ---------------------------------------------------------------
class RecentCounts(BaseModel):
    """Events in the last hour and the last 24 hours (event time)."""

    lastHour: int  # noqa: N815
    lastDay: int  # noqa: N815


class Engagement(BaseModel):
    """A student's live engagement (Redis), decayed to ``asOf``.

    ``rank`` is 1-based in the global leaderboard (None: no score yet).
    """

    studentId: str  # noqa: N815
    asOf: dt.datetime  # noqa: N815
    score: float
    rank: int | None
    courses: dict[str, float]
    recent: RecentCounts
    totalEvents: int  # noqa: N815
    alerts: int


class LeaderboardEntry(BaseModel):
    """One row of a leaderboard."""

    rank: int
    studentId: str  # noqa: N815
    name: str | None = None
    score: float


class Leaderboard(BaseModel):
    """The most engaged students, globally or in one course, decayed to ``asOf``."""

    course: str | None
    asOf: dt.datetime  # noqa: N815
    entries: list[LeaderboardEntry]


# -- alerts -------------------------------------------------------------------
class AlertEvent(BaseModel):
    """One of the two events behind an alert."""

    eventId: str  # noqa: N815
    timestamp: dt.datetime
    region: str


class Alert(BaseModel):
    """A multi-region alert raised by the detection stage (MongoDB ``alerts``)."""

    alertId: str  # noqa: N815
    studentId: str  # noqa: N815
    kind: str = Field(description="impossible_travel or concurrent_sessions")
    regions: list[str]
    first: AlertEvent
    second: AlertEvent
    gapSeconds: float  # noqa: N815
    timestamp: dt.datetime
    detectedAt: dt.datetime | None = None  # noqa: N815


class AlertList(BaseModel):
    """Alerts, newest first."""

    alerts: list[Alert]


# -- courses ------------------------------------------------------------------
class CourseDay(BaseModel):
    """One day of a course's engagement (Cassandra, written by the nightly batch)."""

    model_config = ConfigDict(extra="ignore")

    courseId: str  # noqa: N815
    date: dt.date
    count: int
    activeStudents: int  # noqa: N815
    quizAttempts: int  # noqa: N815
    eventsPerStudent: float  # noqa: N815
    actions: dict[str, int]


class CourseEngagement(BaseModel):
    """A course's daily engagement between two dates, newest first."""

    courseId: str  # noqa: N815
    dateFrom: dt.date = Field(serialization_alias="from")  # noqa: N815
    dateTo: dt.date = Field(serialization_alias="to")  # noqa: N815
    days: list[CourseDay]


# -- writes -------------------------------------------------------------------
class EventError(BaseModel):
    """Why the event at ``index`` of the request was rejected."""

    index: int
    reason: str


class PublishResult(BaseModel):
    """What ``POST /activities`` did: accepted events are in Kafka."""

    accepted: int
    rejected: int
    errors: list[EventError]


# -- health -------------------------------------------------------------------
class StoreHealth(BaseModel):
    """One store's answer to a health probe."""

    name: str
    healthy: bool
    detail: str = ""


class Health(BaseModel):
    """Every store's status; ``ok`` only when all are healthy."""

    status: Literal["ok", "degraded"]
    stores: list[StoreHealth]


# -- dashboards ---------------------------------------------------------------
class CourseRef(BaseModel):
    """A course (an object, so dashboards can read its id as a column)."""

    courseId: str  # noqa: N815


class CourseList(BaseModel):
    """Every course seen in the activity log, sorted by id."""

    courses: list[CourseRef]


class CoursesEngagement(BaseModel):
    """Daily engagement of every course between two dates, oldest day first."""

    dateFrom: dt.date = Field(serialization_alias="from")  # noqa: N815
    dateTo: dt.date = Field(serialization_alias="to")  # noqa: N815
    courses: list[str]
    days: list[CourseDay]


class ScoreBin(BaseModel):
    """Students whose score (decayed to ``asOf``) lies in (low, high].

    The first bin also holds a score of exactly ``low`` (0).
    """

    low: float
    high: float
    label: str
    students: int


class ScoreDistribution(BaseModel):
    """How engagement scores are spread: equal-width bins from 0 to the top score."""

    course: str | None
    asOf: dt.datetime  # noqa: N815
    students: int
    maxScore: float  # noqa: N815
    bins: list[ScoreBin]


class HourCount(BaseModel):
    """Alerts raised for events of one hour (UTC, by event time)."""

    hour: dt.datetime
    alerts: int


class AlertsPerHour(BaseModel):
    """Alerts per hour between two times, oldest hour first."""

    start: dt.datetime = Field(serialization_alias="from")
    end: dt.datetime = Field(serialization_alias="to")
    total: int
    hours: list[HourCount]


class PipelinePoint(BaseModel):
    """One micro-batch of the stream (recorded by the stream's driver)."""

    batch: int
    at: dt.datetime
    rows: int
    valid: int
    deadLetters: int  # noqa: N815
    duplicates: int
    seconds: float
    eventsPerSecond: float  # noqa: N815
    lag: int
    sinks: dict[str, float] = Field(default_factory=dict)
    #: Seconds from produced (broker time) to written in every store, over the
    #: batch's new events (None: the batch stored no new event).
    freshnessP50: float | None = None  # noqa: N815
    freshnessP99: float | None = None  # noqa: N815
    freshnessMax: float | None = None  # noqa: N815


class PipelineTotals(BaseModel):
    """Running totals of the stream since its last reset, and its latest batch."""

    batches: int = 0
    events: int = 0
    deadLetters: int = 0  # noqa: N815
    duplicates: int = 0
    alerts: int = 0
    studentsScored: int = 0  # noqa: N815
    lastBatch: int | None = None  # noqa: N815
    lastAt: dt.datetime | None = None  # noqa: N815
    lastSeconds: float | None = None  # noqa: N815
    eventsPerSecond: float | None = None  # noqa: N815
    lag: int | None = None
    #: The latest batch's produced -> stored p99, seconds.
    freshnessP99: float | None = None  # noqa: N815


class PipelineMetrics(BaseModel):
    """The stream's totals and its latest batches (oldest first)."""

    asOf: dt.datetime  # noqa: N815
    totals: PipelineTotals
    points: list[PipelinePoint]
