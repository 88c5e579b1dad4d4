"""The activity event contract: one pydantic model shared by everyone.

The producer SDK, the load generator, the xAPI importer, the streaming job (whose
Spark schema is derived from this model by :func:`spark_schema`), the API and the docs
all use :class:`ActivityEvent`. Field names keep the original design's
(``studentId, courseId, action, timestamp, region``). Pure code: runs anywhere, in any
process, and is picklable.
"""

from __future__ import annotations

import datetime as dt
import functools
import types
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

SCHEMA_VERSION = 1

#: Regions accepted when the caller passes no configured set.
DEFAULT_REGIONS: tuple[str, ...] = ("EU", "US", "AF", "ASIA", "SA", "OC")

#: Identifiers: letters, digits and ``_ . : @ -``. Anything else (``$``, quotes,
#: braces, spaces) is rejected, so ids can never carry query operators or fragments.
ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,64}$"

#: Event times before this are absurd (no LMS logged them).
MIN_EVENT_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
#: Default tolerance for clocks ahead of ours.
DEFAULT_MAX_FUTURE = dt.timedelta(days=1)
#: Largest accepted serialized event (bytes); larger raw records go to the DLQ.
MAX_EVENT_BYTES = 64 * 1024
#: Longest accepted ``durationMs``: one day.
MAX_DURATION_MS = 24 * 3600 * 1000
MAX_METADATA_KEYS = 20
MAX_METADATA_VALUE_CHARS = 256

#: Longest IRI an event keeps (``verb``, ``objectId``). Web addresses stay far below
#: it; the xAPI mapping shortens a longer one deterministically (see
#: :func:`learntrack.producers.xapi.shorten_iri`).
MAX_IRI_CHARS = 2048
#: An absolute IRI as xAPI uses them (RFC 3987): a scheme, ``:``, then no white
#: space or control characters. Not a full IRI grammar: enough to keep text that
#: is no identifier out.
IRI_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]*$"

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
Iri = Annotated[str, Field(min_length=1, max_length=MAX_IRI_CHARS, pattern=IRI_PATTERN)]
MetadataValue = str | int | float | bool


class Action(StrEnum):
    """What a student did.

    ``OTHER`` is anything the named actions do not cover: an event with it must
    say what it was in ``verb`` (an IRI, e.g. an xAPI verb such as
    ``http://id.tincanapi.com/verb/downloaded``). It is counted, scored (weight
    ``other``) and logged like every action.
    """

    PAGE_VIEW = "page_view"
    QUIZ_ATTEMPT = "quiz_attempt"
    VIDEO_PLAY = "video_play"
    VIDEO_COMPLETE = "video_complete"
    ASSIGNMENT_SUBMIT = "assignment_submit"
    FORUM_POST = "forum_post"
    LOGIN = "login"
    LOGOUT = "logout"
    OTHER = "other"


class Device(StrEnum):
    """Where the student acted from."""

    WEB = "web"
    IOS = "ios"
    ANDROID = "android"
    DESKTOP = "desktop"
    OTHER = "other"


def validation_context(
    regions: Iterable[str] = DEFAULT_REGIONS,
    max_future: dt.timedelta = DEFAULT_MAX_FUTURE,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The context :class:`ActivityEvent` validates against (configured regions...)."""
    return {"regions": frozenset(regions), "max_future": max_future, "now": now}


def uuid7(ms: int | None = None, random_bits: int | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Ids made in time order sort in time order, so MongoDB's ``_id`` index (the
    eventId) grows at its right edge instead of at a random place: inserts stay
    as fast with millions of events stored as with none (``docs/streaming.md``).
    ``ms`` and ``random_bits`` make it reproducible (the generator's seed).
    """
    import os
    import time

    if ms is None:
        ms = time.time_ns() // 1_000_000
    if random_bits is None:
        random_bits = int.from_bytes(os.urandom(10))
    rand = random_bits & ((1 << 74) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 62) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)


class ActivityEvent(BaseModel):
    """One thing one student did in one course, at one time, from one region.

    ``eventId`` is the idempotence key everywhere (filled with a time-ordered
    UUIDv7 when absent, see :func:`uuid7`).
    ``timestamp`` is the event time; it must carry a timezone and is stored in UTC.
    ``verb`` (an IRI, required with ``action="other"``), ``objectId`` (the IRI of
    what was acted on: a video, a problem, a page) and ``registration`` (an xAPI
    registration: one attempt or enrolment) are optional, so events of producers
    that do not know them stay valid.
    Validate with a context from :func:`validation_context` to use the configured
    regions; without one, :data:`DEFAULT_REGIONS` apply.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    eventId: uuid.UUID = Field(default_factory=uuid7)  # noqa: N815 - contract
    studentId: Identifier  # noqa: N815
    courseId: Identifier  # noqa: N815
    action: Action
    timestamp: AwareDatetime
    region: str = Field(min_length=1, max_length=16)
    sessionId: Identifier | None = None  # noqa: N815
    device: Device | None = None
    durationMs: int | None = Field(None, ge=0, le=MAX_DURATION_MS)  # noqa: N815
    score: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    metadata: dict[str, MetadataValue] | None = None
    verb: Iri | None = Field(None, validate_default=True)
    objectId: Iri | None = None  # noqa: N815
    registration: uuid.UUID | None = None
    # Still 1: the fields above are optional and ``other`` only adds a value, so
    # every version-1 event stays valid and means what it meant.
    schemaVersion: Literal[1] = 1  # noqa: N815 - bump with SCHEMA_VERSION

    @field_validator("timestamp")
    @classmethod
    def _utc_and_plausible(
        cls, value: dt.datetime, info: ValidationInfo
    ) -> dt.datetime:
        ctx = info.context or {}
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+00:01 is before year 1 in UTC
            msg = f"timestamp {value.isoformat()} is out of range"
            raise ValueError(msg) from None
        now = ctx.get("now") or dt.datetime.now(dt.UTC)
        max_future = ctx.get("max_future") or DEFAULT_MAX_FUTURE
        if value < MIN_EVENT_TIME:
            msg = f"timestamp {value.isoformat()} is before {MIN_EVENT_TIME.date()}"
            raise ValueError(msg)
        if value > now + max_future:
            msg = (
                f"timestamp {value.isoformat()} is more than {max_future} in the future"
            )
            raise ValueError(msg)
        return value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str, info: ValidationInfo) -> str:
        regions = (info.context or {}).get("regions") or DEFAULT_REGIONS
        if value not in regions:
            msg = f"unknown region {value!r}; expected one of {sorted(regions)}"
            raise ValueError(msg)
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(
        cls, value: dict[str, MetadataValue] | None
    ) -> dict[str, MetadataValue] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            msg = f"metadata has {len(value)} keys; at most {MAX_METADATA_KEYS}"
            raise ValueError(msg)
        for key, item in value.items():
            if len(key) > 64 or key.startswith("$") or "." in key:  # noqa: PLR2004
                msg = f"metadata key {key[:70]!r} is too long or starts with $ / has ."
                raise ValueError(msg)
            if isinstance(item, str) and len(item) > MAX_METADATA_VALUE_CHARS:
                msg = f"metadata value {key!r} exceeds {MAX_METADATA_VALUE_CHARS} chars"
                raise ValueError(msg)
        return value

    @field_validator("verb")
    @classmethod
    def _other_says_what(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("action") is Action.OTHER:
            msg = 'action "other" needs a verb (an IRI saying what was done)'
            raise ValueError(msg)
        return value

    def to_json(self) -> bytes:
        """The wire form: compact JSON, ``timestamp`` in UTC ending in ``Z``."""
        return self.model_dump_json(exclude_none=True).encode()


class StudentProfile(BaseModel):
    """A student's profile document (MongoDB ``students``)."""

    model_config = ConfigDict(extra="forbid")

    studentId: Identifier  # noqa: N815
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    speciality: str = Field(min_length=1, max_length=100)
    studentLevel: str = Field(min_length=1, max_length=20)  # noqa: N815
    progress: float = Field(ge=0, le=100)
    lastUpdated: AwareDatetime  # noqa: N815


def utc_iso(value: dt.datetime) -> str:
    """The contract's time format: UTC, milliseconds, ``Z`` (sorts as text)."""
    return (
        value.astimezone(dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def describe_error(err: ValidationError) -> str:
    """One line naming each invalid field, e.g. ``region: unknown region 'XX'``."""
    parts = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{field}: {item['msg']}")
    return "; ".join(parts)


# -- the Spark schema, derived from the model -----------------------------------
def _spark_type(annotation: Any) -> Any:  # noqa: PLR0911 - one return per type
    from pyspark.sql import types as T  # noqa: N812

    origin = get_origin(annotation)
    if origin is Annotated:
        return _spark_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _spark_type(inner[0])
        return T.StringType()  # a union of scalars (metadata values): keep as text
    if origin is dict:
        return T.MapType(T.StringType(), _spark_type(get_args(annotation)[1]))
    if origin is Literal:
        return _spark_type(type(get_args(annotation)[0]))
    simple = {
        uuid.UUID: T.StringType(),
        str: T.StringType(),
        int: T.LongType(),
        float: T.DoubleType(),
        bool: T.BooleanType(),
        dt.datetime: T.TimestampType(),
    }
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return T.StringType()
    if annotation in simple:
        return simple[annotation]
    by_name = {"AwareDatetime": T.TimestampType(), "EmailStr": T.StringType()}
    if getattr(annotation, "__name__", "") in by_name:
        return by_name[annotation.__name__]
    msg = f"no Spark type for {annotation!r}"
    raise TypeError(msg)


def spark_schema(model: type[BaseModel] = ActivityEvent) -> Any:
    """The Spark ``StructType`` of ``model``, field by field, in declaration order.

    Required fields are non-nullable. Runs on the Spark driver (imports pyspark).
    """
    from pyspark.sql import types as T  # noqa: N812

    return T.StructType(
        [
            T.StructField(name, _spark_type(field.annotation), not field.is_required())
            for name, field in model.model_fields.items()
        ]
    )


@functools.cache
def arrow_schema() -> Any:
    """The event's columns as Arrow: every field nullable, times in UTC.

    What the parser hands the sinks and what the lake's files hold (derived from
    :func:`spark_schema`, never retyped). Imports pyspark and pyarrow.
    """
    from pyspark.sql import types as T  # noqa: N812
    from pyspark.sql.pandas.types import to_arrow_schema

    nullable = [T.StructField(f.name, f.dataType, True) for f in spark_schema().fields]
    return to_arrow_schema(T.StructType(nullable), timezone="UTC")
