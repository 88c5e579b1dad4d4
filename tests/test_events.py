"""The event contract: validation, JSON round-trips, the derived Spark schema."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from learntrack.events import (
    DEFAULT_REGIONS,
    Action,
    ActivityEvent,
    StudentProfile,
    describe_error,
    spark_schema,
    validation_context,
)

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
CTX = validation_context(now=NOW)


def valid(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "studentId": "S1",
        "courseId": "BD101",
        "action": "quiz_attempt",
        "timestamp": "2026-11-22T10:00:00+02:00",
        "region": "EU",
        "score": 0.75,
    }
    base.update(overrides)
    return base


def test_timestamp_is_stored_as_utc_and_event_id_filled() -> None:
    event = ActivityEvent.model_validate(valid(), context=CTX)
    assert event.timestamp == dt.datetime(2026, 11, 22, 8, tzinfo=dt.UTC)
    assert event.timestamp.utcoffset() == dt.timedelta(0)
    assert isinstance(event.eventId, uuid.UUID) and event.eventId.version == 7
    assert event.schemaVersion == 1
    assert b'"timestamp":"2026-11-22T08:00:00Z"' in event.to_json()


def test_a_timestamp_before_year_one_in_utc_is_refused_not_an_overflow() -> None:
    with pytest.raises(ValidationError, match="out of range"):
        ActivityEvent.model_validate(
            valid(timestamp="0001-01-01T00:00:00+00:01"), context=CTX
        )


def test_filled_event_ids_are_time_ordered_uuid7() -> None:
    from learntrack.events import uuid7

    ids = [
        ActivityEvent.model_validate(valid(), context=CTX).eventId for _ in range(50)
    ]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    # The first 48 bits are the creation time in ms: never decreasing.
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)
    # Reproducible from (ms, random bits), time-ordered across milliseconds.
    assert uuid7(1_000, 7) == uuid7(1_000, 7) < uuid7(1_001, 0)
    assert str(uuid7(1_700_000_000_000, 5)) == "018bcfe5-6800-7000-8000-000000000005"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"action": "teleport"}, "action"),
        ({"region": "MARS"}, "region"),
        ({"timestamp": "2026-11-22T10:00:00"}, "timestamp"),  # naive
        ({"timestamp": "1970-01-01T00:00:00Z"}, "timestamp"),  # absurd past
        ({"timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),  # absurd future
        ({"studentId": {"$gt": ""}}, "studentId"),
        ({"studentId": "S1'}) DETACH DELETE n //"}, "studentId"),
        ({"courseId": ""}, "courseId"),
        ({"score": 1.5}, "score"),
        ({"score": float("nan")}, "score"),
        ({"durationMs": -1}, "durationMs"),
        ({"eventId": "not-a-uuid"}, "eventId"),
        ({"metadata": {"$where": "1"}}, "metadata"),
        ({"metadata": {f"k{i}": i for i in range(30)}}, "metadata"),
        ({"unexpected": 1}, "unexpected"),
        ({"schemaVersion": 2}, "schemaVersion"),
        ({"action": "other"}, "verb"),  # the generic action says what it was
        ({"verb": "not an iri"}, "verb"),
        ({"verb": "https://x.example/has space"}, "verb"),
        ({"verb": "https://x.example/a\nb"}, "verb"),
        ({"objectId": "https://x.example/" + "a" * 2040}, "objectId"),
        ({"objectId": ""}, "objectId"),
        ({"registration": "not-a-uuid"}, "registration"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        ActivityEvent.model_validate(valid(**overrides), context=CTX)
    assert describe_error(info.value).startswith(f"{field}")


def test_missing_required_fields_are_named() -> None:
    data = valid()
    del data["courseId"], data["region"]
    with pytest.raises(ValidationError) as info:
        ActivityEvent.model_validate(data, context=CTX)
    message = describe_error(info.value)
    assert "courseId: Field required" in message
    assert "region: Field required" in message


def test_regions_are_configurable() -> None:
    ctx = validation_context(regions=["MENA", "EU"], now=NOW)
    event = ActivityEvent.model_validate(valid(region="MENA"), context=ctx)
    assert event.region == "MENA"
    with pytest.raises(ValidationError):
        ActivityEvent.model_validate(valid(region="US"), context=ctx)
    assert set(DEFAULT_REGIONS) >= {"EU", "US", "AF", "ASIA", "SA", "OC"}


def test_required_actions_exist() -> None:
    assert {a.value for a in Action} >= {
        "page_view",
        "quiz_attempt",
        "video_play",
        "video_complete",
        "assignment_submit",
        "forum_post",
        "login",
        "logout",
        "other",
    }


def test_the_xapi_fields_are_optional_and_kept() -> None:
    plain = ActivityEvent.model_validate(valid(), context=CTX)
    assert (plain.verb, plain.objectId, plain.registration) == (None, None, None)
    assert b"verb" not in plain.to_json()  # old consumers see the old wire form
    event = ActivityEvent.model_validate(
        valid(
            action="other",
            verb="http://id.tincanapi.com/verb/downloaded",
            objectId="https://lms.example.edu/c/BD101/files/notes.pdf",
            registration="EC531277-B57B-4C15-8D91-D292C5B2B8F7",
        ),
        context=CTX,
    )
    assert event.action is Action.OTHER
    assert event.registration == uuid.UUID("ec531277-b57b-4c15-8d91-d292c5b2b8f7")
    assert b'"registration":"ec531277-b57b-4c15-8d91-d292c5b2b8f7"' in event.to_json()
    # A known action may carry its verb too; an IRI may be a URN, 2,048 chars long.
    long_iri = "urn:x:" + "a" * 2042
    quiz = ActivityEvent.model_validate(
        valid(verb="http://adlnet.gov/expapi/verbs/answered", objectId=long_iri),
        context=CTX,
    )
    assert quiz.objectId == long_iri and len(long_iri) == 2048


ids = st.from_regex(r"[A-Za-z0-9_.:@-]{1,64}", fullmatch=True)
iris = st.from_regex(r"[a-z][a-z0-9+.-]{0,9}:[!-~\u00e9\u4e2d]{0,80}", fullmatch=True)
#: (action, verb): the generic action always with a verb, the others with or without.
acts = st.tuples(st.sampled_from(list(Action)), st.none() | iris).filter(
    lambda a: a[0] is not Action.OTHER or a[1] is not None
)
events = st.builds(
    lambda sid, cid, act, ts, region, score, duration, meta, obj, reg: ActivityEvent(
        studentId=sid,
        courseId=cid,
        action=act[0],
        timestamp=ts,
        region=region,
        score=score,
        durationMs=duration,
        metadata=meta,
        verb=act[1],
        objectId=obj,
        registration=reg,
    ),
    ids,
    ids,
    acts,
    st.datetimes(
        min_value=dt.datetime(2000, 1, 2),  # noqa: DTZ001 - hypothesis adds tz
        max_value=dt.datetime(2026, 11, 1),  # noqa: DTZ001
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-7))]),
    ),
    st.sampled_from(DEFAULT_REGIONS),
    st.none() | st.floats(0, 1),
    st.none() | st.integers(0, 24 * 3600 * 1000),
    st.none()
    | st.dictionaries(
        st.from_regex(r"[a-z]{1,10}", fullmatch=True),
        st.integers(-(2**31), 2**31) | st.text(max_size=20) | st.booleans(),
        max_size=5,
    ),
    st.none() | iris,
    st.none() | st.uuids(),
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_json_round_trip_is_lossless(event: ActivityEvent) -> None:
    again = ActivityEvent.model_validate_json(event.to_json(), context=CTX)
    assert again == event


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40).filter(lambda s: not s.isascii() or "$" in s or " " in s))
def test_ids_outside_the_safe_alphabet_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        ActivityEvent.model_validate(valid(studentId=bad), context=CTX)


def test_spark_schema_is_derived_from_the_model() -> None:
    from pyspark.sql import types as T

    schema = spark_schema()
    assert schema.fieldNames() == list(ActivityEvent.model_fields)
    by_name = {f.name: f for f in schema.fields}
    assert by_name["timestamp"].dataType == T.TimestampType()
    assert by_name["durationMs"].dataType == T.LongType()
    assert by_name["score"].dataType == T.DoubleType()
    assert by_name["metadata"].dataType == T.MapType(T.StringType(), T.StringType())
    assert by_name["studentId"].nullable is False
    assert by_name["sessionId"].nullable is True
    for name in ("verb", "objectId", "registration"):
        assert by_name[name].dataType == T.StringType() and by_name[name].nullable
    profile = spark_schema(StudentProfile)
    assert profile.fieldNames() == [
        "studentId",
        "name",
        "email",
        "speciality",
        "studentLevel",
        "progress",
        "lastUpdated",
    ]


def test_student_profile_validates_email_and_progress() -> None:
    base = {
        "studentId": "S1",
        "name": "Hadil",
        "email": "hadil@mail.com",
        "speciality": "ILSI",
        "studentLevel": "M2",
        "progress": 10,
        "lastUpdated": "2026-11-22T10:00:00Z",
    }
    assert StudentProfile.model_validate(base).progress == 10
    for bad in ({"email": "not-an-email"}, {"progress": 101}, {"progress": -1}):
        with pytest.raises(ValidationError) as info:
            StudentProfile.model_validate({**base, **bad})
        assert next(iter(bad)) in describe_error(info.value)
