"""The xAPI mapping (pure), the import against the real broker, and a statement
with an unknown verb streamed into MongoDB, Redis and the lake."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import hashlib
import json
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from learntrack.config import Settings, TopicSettings, get_settings
from learntrack.errors import LearnTrackError
from learntrack.events import (
    MAX_IRI_CHARS,
    Action,
    ActivityEvent,
    validation_context,
)
from learntrack.producers import ActivityProducer
from learntrack.producers.xapi import (
    REASONS,
    REGION_EXTENSION,
    UNKNOWN_COURSE,
    XAPI_NAMESPACE,
    ImportSummary,
    XapiMappingError,
    agent_id,
    course_id_from_iri,
    import_xapi,
    map_statement,
    parse_duration_ms,
    shorten_iri,
    statement_event_id,
)
from learntrack.topics import create_topic, delete_topics, read_topic
from tests.helpers import isolated

SAMPLE = Path(__file__).resolve().parent / "data" / "xapi_sample.jsonl"
ADL = "http://adlnet.gov/expapi/verbs/"
VIDEO = "https://w3id.org/xapi/video/verbs/"
VIDEO_TYPE = "https://w3id.org/xapi/video/activity-type/video"
SESSION_ID = "https://w3id.org/xapi/video/extensions/session-id"
INTERACTED = ADL + "interacted"
DOWNLOADED = "http://id.tincanapi.com/verb/downloaded"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
CTX = validation_context(now=NOW)


def sid(n: int) -> str:
    """The statement ids used in the sample file."""
    return f"1b0c5a4e-{n:04d}-4c8e-9d2a-6f1e2d3c4b{n:02d}"


def eid(statement_id: str) -> str:
    return str(uuid.uuid5(XAPI_NAMESPACE, statement_id))


def sha256_40(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


#: The sample's statement without an id (line 11), as its canonical JSON.
LOGOUT_STATEMENT = {
    "actor": {"account": {"homePage": "https://lms.example.edu", "name": "S1001"}},
    "verb": {"id": ADL + "logged-out"},
    "object": {"id": "https://lms.example.edu/courses/BD101"},
    "context": {"registration": "9e1f0a6c-4b1d-4e0a-8c55-3b2f6d7e8a90"},
    "timestamp": "2026-11-08T09:01:00Z",
}
LOGOUT_ID = str(
    uuid.uuid5(
        XAPI_NAMESPACE,
        json.dumps(LOGOUT_STATEMENT, sort_keys=True, separators=(",", ":")),
    )
)
#: The sample's Open edX learner: an anonymised account name of 68 characters.
EDX_NAME = "4f0d2c1e8b7a9c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f"
EDX_STUDENT = f"account:{sha256_40(EDX_NAME)}"
EDX_COURSE = "course-v1:MITx_6.00x_2026_T1"
EDX_VIDEO = (
    "https://courses.example.org/xblock/"
    "block-v1:MITx+6.00x+2026_T1+type@video+block@lecture_3"
)

#: eventId -> (key, courseId, action, region, score) of every valid sample line.
EXPECTED_EVENTS: dict[str, tuple[str, str, str, str, float | None]] = {
    eid(sid(1)): ("S1001", "BD101", "page_view", "EU", None),
    eid(sid(2)): ("S1001", "BD101", "quiz_attempt", "EU", 0.85),
    eid(sid(3)): ("S1002", "BD101", "quiz_attempt", "EU", 0.9),
    eid(sid(4)): ("S1002", "ML201", "video_play", "ASIA", None),
    eid(sid(5)): ("S1002", "ML201", "video_play", "ASIA", None),
    eid(sid(6)): ("S1003", "ML201", "video_complete", "US", None),
    eid(sid(7)): ("ana.diaz@uni.example", "DB301", "assignment_submit", "EU", None),
    eid(sid(8)): ("S1003", "BD101-general", "forum_post", "EU", None),
    eid(sid(9)): ("S1001", "BD101", "login", "EU", None),
    LOGOUT_ID: ("S1001", "BD101", "logout", "EU", None),
    eid(sid(12)): ("S1004", "BD101", "other", "EU", None),  # unknown verb
    eid(sid(13)): ("S1004", "BD101", "page_view", "EU", None),  # no offset: UTC
    eid(sid(15)): ("S1004", UNKNOWN_COURSE, "forum_post", "EU", None),  # StatementRef
    eid(sid(16)): ("S1004", "BD101", "quiz_attempt", "EU", None),  # scaled 1.5
    eid(sid(20)): (EDX_STUDENT, EDX_COURSE, "other", "EU", None),  # interacted
    eid(sid(21)): (EDX_STUDENT, EDX_COURSE, "other", "EU", None),  # downloaded
}
#: eventId -> (verb, objectId, registration, sessionId) of some sample lines.
EXPECTED_XAPI_FIELDS: dict[str, tuple[str, str, str | None, str | None]] = {
    eid(sid(9)): (
        ADL + "logged-in",
        "https://lms.example.edu/courses/BD101",
        "9e1f0a6c-4b1d-4e0a-8c55-3b2f6d7e8a90",
        None,
    ),
    eid(sid(12)): (
        "http://example.com/verbs/danced",
        "https://lms.example.edu/courses/BD101",
        None,
        None,
    ),
    eid(sid(15)): (
        ADL + "commented",
        f"urn:uuid:{sid(8)}",
        None,
        None,
    ),
    eid(sid(20)): (
        INTERACTED,
        EDX_VIDEO,
        "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
        "e9f2d3a1-7c4b-4e8a-9f01-23b45c67d890",
    ),
    eid(sid(21)): (DOWNLOADED, EDX_VIDEO + "/handouts/notes.pdf", None, None),
}
#: Physical line number (blank line 5 included) -> reason of every invalid line.
EXPECTED_REJECTS = {
    12: "bad_json",
    15: "bad_actor",
    18: "voiding",
    19: "timestamp_out_of_range",
    20: "bad_verb",
}
EXPECTED_SUMMARY = ImportSummary(
    read=21,
    imported=16,
    rejected=Counter(EXPECTED_REJECTS.values()),
    dead_lettered=5,
)


def statement(**changes: Any) -> dict[str, Any]:
    """A valid statement (S1, course BD101, page view), with top-level changes."""
    stmt: dict[str, Any] = {
        "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "actor": {"account": {"homePage": "https://lms.example.edu", "name": "S1"}},
        "verb": {"id": ADL + "experienced"},
        "object": {"id": "https://lms.example.edu/courses/BD101/pages/1"},
        "context": {
            "contextActivities": {
                "parent": [{"id": "https://lms.example.edu/courses/BD101"}]
            }
        },
        "timestamp": "2026-11-20T10:00:00Z",
    }
    stmt.update(changes)
    return stmt


def mapped(
    stmt: dict[str, Any], region: str = "EU", stored: dt.datetime | None = None
) -> ActivityEvent:
    return map_statement(stmt, default_region=region, context=CTX, stored=stored)


def reason_of(stmt: Any, region: str = "EU") -> XapiMappingError:
    with pytest.raises(XapiMappingError) as info:
        map_statement(stmt, default_region=region, context=CTX)
    assert info.value.reason in REASONS
    return info.value


# -- the mapping ----------------------------------------------------------------
def test_a_full_statement_maps_field_by_field() -> None:
    stmt = statement(
        verb={"id": ADL + "attempted"},
        timestamp="2026-11-20T11:30:00+01:00",
        result={"score": {"scaled": 0.75}, "duration": "PT1M30S"},
    )
    stmt["context"]["registration"] = "9E1F0A6C-4B1D-4E0A-8C55-3B2F6D7E8A90"
    stmt["context"]["extensions"] = {SESSION_ID: "b5e6f1c2-0d3a-4f7e-9a8b-1c2d3e4f5a6b"}
    event = mapped(stmt, region="US")
    assert event.model_dump(exclude_none=True) == {
        "eventId": uuid.uuid5(XAPI_NAMESPACE, "0f8fad5b-d9cb-469f-a165-70867728950e"),
        "studentId": "S1",
        "courseId": "BD101",
        "action": Action.QUIZ_ATTEMPT,
        "timestamp": dt.datetime(2026, 11, 20, 10, 30, tzinfo=dt.UTC),
        "region": "US",
        "sessionId": "b5e6f1c2-0d3a-4f7e-9a8b-1c2d3e4f5a6b",
        "durationMs": 90_000,
        "score": 0.75,
        "metadata": {"source": "xapi"},
        "verb": ADL + "attempted",
        "objectId": "https://lms.example.edu/courses/BD101/pages/1",
        "registration": uuid.UUID("9e1f0a6c-4b1d-4e0a-8c55-3b2f6d7e8a90"),
        "schemaVersion": 1,
    }


@pytest.mark.parametrize(
    ("verb", "object_type", "action"),
    [
        (ADL + "experienced", None, "page_view"),
        (ADL + "launched", None, "page_view"),
        (ADL + "completed", None, "page_view"),
        (ADL + "attempted", None, "quiz_attempt"),
        (ADL + "answered", None, "quiz_attempt"),
        (ADL + "passed", None, "quiz_attempt"),
        (ADL + "failed", None, "quiz_attempt"),
        (
            ADL + "completed",
            "http://adlnet.gov/expapi/activities/assessment",
            "quiz_attempt",
        ),
        (ADL + "commented", None, "forum_post"),
        (ADL + "shared", None, "forum_post"),
        (ADL + "logged-in", None, "login"),
        (ADL + "initialized", None, "login"),
        (ADL + "logged-out", None, "logout"),
        (ADL + "terminated", None, "logout"),
        (ADL + "exited", None, "logout"),
        ("https://w3id.org/xapi/dod-isd/verbs/submitted", None, "assignment_submit"),
        ("http://activitystrea.ms/schema/1.0/submit", None, "assignment_submit"),
        ("http://id.tincanapi.com/verb/viewed", None, "page_view"),
        ("https://w3id.org/xapi/adl/verbs/logged-in", None, "login"),
        ("https://w3id.org/xapi/adl/verbs/logged-out", None, "logout"),
        (VIDEO + "played", VIDEO_TYPE, "video_play"),
        (VIDEO + "paused", VIDEO_TYPE, "video_play"),
        (VIDEO + "seeked", VIDEO_TYPE, "video_play"),
        (VIDEO + "completed", VIDEO_TYPE, "video_complete"),
        (ADL + "completed", VIDEO_TYPE, "video_complete"),
        (ADL + "initialized", VIDEO_TYPE, "video_play"),
        (ADL + "terminated", VIDEO_TYPE, "video_play"),
        (ADL + "experienced", VIDEO_TYPE, "video_play"),
        # Every other verb: the generic action, the verb kept.
        (INTERACTED, VIDEO_TYPE, "other"),
        (INTERACTED, None, "other"),
        (DOWNLOADED, "http://id.tincanapi.com/activitytype/resource", "other"),
        ("http://example.com/verbs/danced", None, "other"),
        ("urn:example:verb:Danced", None, "other"),
        (ADL + "Experienced", None, "other"),  # IRIs are case-sensitive
    ],
)
def test_verb_maps_to_action(verb: str, object_type: str | None, action: str) -> None:
    obj: dict[str, Any] = {"id": "https://lms.example.edu/activities/a1"}
    if object_type:
        obj["definition"] = {"type": object_type}
    event = mapped(statement(verb={"id": verb}, object=obj))
    assert event.action == action
    assert event.verb == verb
    assert event.objectId == "https://lms.example.edu/activities/a1"
    assert event.metadata == {"source": "xapi"}


def test_video_profile_category_makes_adl_completed_a_video_complete() -> None:
    stmt = statement(verb={"id": ADL + "completed"})
    assert mapped(stmt).action == "page_view"
    stmt["context"]["contextActivities"]["category"] = [
        {"id": "https://w3id.org/xapi/video"}
    ]
    assert mapped(stmt).action == "video_complete"


def test_a_video_profile_interaction_keeps_session_registration_and_video() -> None:
    video = "https://video.example.edu/v/ml-lecture-1"
    stmt = statement(
        verb={"id": INTERACTED, "display": {"en-US": "interacted"}},
        object={"id": video, "definition": {"type": VIDEO_TYPE}},
        context={
            "registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
            "contextActivities": {
                "parent": [{"id": "https://lms.example.edu/courses/ML201"}],
                "category": [{"id": "https://w3id.org/xapi/video"}],
            },
            "extensions": {
                SESSION_ID: "e9f2d3a1-7c4b-4e8a-9f01-23b45c67d890",
                "https://w3id.org/xapi/video/extensions/length": 600,
            },
        },
    )
    event = mapped(stmt)
    assert (event.action, event.verb, event.objectId, event.courseId) == (
        "other",
        INTERACTED,
        video,
        "ML201",
    )
    assert event.sessionId == "e9f2d3a1-7c4b-4e8a-9f01-23b45c67d890"
    assert event.registration == uuid.UUID("ec531277-b57b-4c15-8d91-d292c5b2b8f7")


def test_session_id_comes_from_a_session_extension_not_the_registration() -> None:
    stmt = statement()
    stmt["context"]["registration"] = "ec531277-b57b-4c15-8d91-d292c5b2b8f7"
    assert mapped(stmt).sessionId is None
    cmi5 = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
    for extensions, session in (
        ({cmi5: "s-42"}, "s-42"),
        ({"https://x.example/ext/session-id": "s-7"}, "s-7"),
        ({SESSION_ID: "v-1", cmi5: "c-1"}, "v-1"),  # the video profile's first
        ({SESSION_ID: 1234}, "1234"),
        # Not an identifier: a stable hash of it.
        (
            {SESSION_ID: "a session/with spaces"},
            f"session:{sha256_40('a session/with spaces')}",
        ),
        ({SESSION_ID: ""}, None),
        ({SESSION_ID: {"id": 1}}, None),
        ({"https://x.example/ext/sessions": "s-9"}, None),
    ):
        stmt["context"]["extensions"] = extensions
        assert mapped(stmt).sessionId == session, extensions
    stmt["context"]["registration"] = "not-a-uuid"
    assert mapped(stmt).registration is None  # left out, never a reason to reject


@pytest.mark.parametrize(
    ("actor", "student"),
    [
        ({"account": {"homePage": "https://x.example", "name": "S-9_a.b"}}, "S-9_a.b"),
        ({"mbox": "mailto:ana.diaz@uni.example"}, "ana.diaz@uni.example"),
        (
            {"mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9"},
            "ebd31e95054c018b10727ccffd2ef2ec3a016ee9",
        ),
        # account wins over mbox
        ({"mbox": "mailto:a@b.example", "account": {"name": "S7"}}, "S7"),
        # Identifiers that do not fit ID_PATTERN become stable hashes:
        # an mbox its SHA-1, which is what its mbox_sha1sum is.
        (
            {"mbox": "mailto:ana+tag@uni.example"},
            hashlib.sha1(b"mailto:ana+tag@uni.example").hexdigest(),  # noqa: S324
        ),
        ({"account": {"name": "S 1"}}, f"account:{sha256_40('S 1')}"),
        ({"account": {"name": "x" * 65}}, f"account:{sha256_40('x' * 65)}"),
        (
            {"openid": "https://id.example.org/ana"},
            f"openid:{sha256_40('https://id.example.org/ana')}",
        ),
        # An identified Group is a student of its own.
        (
            {"objectType": "Group", "account": {"name": "team-7"}, "member": []},
            "team-7",
        ),
    ],
)
def test_actor_maps_to_student_id(actor: dict[str, Any], student: str) -> None:
    assert mapped(statement(actor=actor)).studentId == student


def test_an_anonymous_group_is_its_members() -> None:
    members = [{"mbox": "mailto:a@b.example"}, {"account": {"name": "S7"}}]
    group = {"objectType": "Group", "member": members}
    student = mapped(statement(actor=group)).studentId
    assert student == f"group:{sha256_40(chr(10).join(['S7', 'a@b.example']))}"
    assert len(student) <= 64
    swapped = {"objectType": "Group", "member": members[::-1]}
    assert agent_id(swapped) == student  # the same members, the same student
    assert agent_id({"objectType": "Group", "member": members[:1]}) != student


@pytest.mark.parametrize(
    "actor",
    [
        None,
        "S1",
        {"name": "Ana Diaz"},  # no identifier
        {"account": {"name": 1001}},
        {"account": {"name": ""}},
        {"objectType": "Group", "member": []},
        {"objectType": "Group", "member": [{"name": "Ana"}]},
        {"objectType": "Group", "member": "a@b.example"},
    ],
)
def test_an_actor_without_identifier_is_bad_actor(actor: Any) -> None:
    stmt = statement(actor=actor)
    if actor is None:
        del stmt["actor"]
    assert reason_of(stmt).reason == "bad_actor"


def test_course_comes_from_parent_then_grouping_then_object() -> None:
    stmt = statement()
    stmt["context"]["contextActivities"]["grouping"] = [
        {"id": "https://lms.example.edu/programs/DATA"}
    ]
    assert mapped(stmt).courseId == "BD101"
    del stmt["context"]["contextActivities"]["parent"]
    assert mapped(stmt).courseId == "DATA"
    del stmt["context"]
    assert mapped(stmt).courseId == "1"  # the object's last path segment
    # xAPI 1.0.0 also allows a single object instead of a list
    stmt["context"] = {
        "contextActivities": {"parent": {"id": "https://lms.example.edu/c/ML201/"}}
    }
    assert mapped(stmt).courseId == "ML201"


@pytest.mark.parametrize(
    ("iri", "course"),
    [
        ("https://lms.example.edu/courses/BD101", "BD101"),
        ("https://lms.example.edu/courses/BD101/?tab=1#top", "BD101"),
        ("https://lms.example.edu/courses/Big%20Data%20101", "Big_Data_101"),
        ("https://lms.example.edu/c/Données$2026", "Donn_es_2026"),
        ("urn:course:BD101", "course:BD101"),
        ("https://lms.example.edu/#BD101", "BD101"),
        ("https://lms.example.edu/", "lms.example.edu"),
        ("https://lms.example.edu/$$$/", None),
        ("", None),
    ],
)
def test_course_id_from_iri(iri: str, course: str | None) -> None:
    assert course_id_from_iri(iri) == course


def test_long_course_iri_is_shortened_deterministically_without_collisions() -> None:
    a = "https://lms.example.edu/courses/" + "x" * 100 + "-a"
    b = "https://lms.example.edu/courses/" + "x" * 100 + "-b"
    ca, cb = course_id_from_iri(a), course_id_from_iri(b)
    assert ca is not None and cb is not None
    assert len(ca) == 64 and ca.startswith("x" * 55 + "-")
    assert ca != cb
    assert course_id_from_iri(a) == ca
    assert mapped(statement(context={}, object={"id": a})).courseId == ca


def test_course_fallbacks_never_reject() -> None:
    ref = {"objectType": "StatementRef", "id": "0f8fad5b-d9cb-469f-a165-70867728950e"}
    agent = {"objectType": "Agent", "mbox": "mailto:b@c.example"}
    for obj in (ref, agent, {}):
        assert mapped(statement(context={}, object=obj)).courseId == UNKNOWN_COURSE
    # An IRI of only disallowed characters: a hash of it, not "unknown".
    odd = "https://lms.example.edu/%24%24/"
    got = mapped(statement(context={}, object={"id": odd})).courseId
    assert got == f"c-{hashlib.sha256(odd.encode()).hexdigest()[:16]}"
    # A SubStatement: its context, then its object activity.
    sub = {
        "objectType": "SubStatement",
        "actor": {"mbox": "mailto:b@c.example"},
        "verb": {"id": ADL + "experienced"},
        "object": {"id": "https://lms.example.edu/courses/DB301/pages/2"},
    }
    assert mapped(statement(context={}, object=sub)).courseId == "2"
    sub["context"] = {
        "contextActivities": {"parent": [{"id": "https://lms.example.edu/c/DB301"}]}
    }
    assert mapped(statement(context={}, object=sub)).courseId == "DB301"
    # The outer context wins.
    assert mapped(statement(object=sub)).courseId == "BD101"


@pytest.mark.parametrize(
    ("obj", "object_id"),
    [
        ({"id": "https://lms.example.edu/p/1"}, "https://lms.example.edu/p/1"),
        (
            {"objectType": "Activity", "id": "urn:isbn:0451450523"},
            "urn:isbn:0451450523",
        ),
        (
            {
                "objectType": "StatementRef",
                "id": "0F8FAD5B-D9CB-469F-A165-70867728950E",
            },
            "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
        ),
        (
            {
                "objectType": "SubStatement",
                "actor": {"mbox": "mailto:b@c.example"},
                "verb": {"id": ADL + "experienced"},
                "object": {"id": "https://lms.example.edu/p/2"},
            },
            "https://lms.example.edu/p/2",
        ),
        # A person is no content: no second person's address in the log.
        ({"objectType": "Agent", "mbox": "mailto:b@c.example"}, None),
        ({"objectType": "Group", "member": [{"mbox": "mailto:b@c.example"}]}, None),
        ({"id": "no iri at all"}, None),
        ({"objectType": "StatementRef", "id": "not-a-uuid"}, None),
    ],
)
def test_object_id_by_object_type(obj: dict[str, Any], object_id: str | None) -> None:
    event = mapped(statement(object=obj))
    assert event.objectId == object_id


def test_long_iris_are_shortened_to_stable_distinct_identifiers() -> None:
    base = "https://lms.example.edu/very/long/" + "p" * 3000
    a, b = base + "/a", base + "/b"
    short_a, short_b = shorten_iri(a), shorten_iri(b)
    assert len(short_a) == MAX_IRI_CHARS == len(short_b)
    assert short_a != short_b and short_a == shorten_iri(a)
    assert short_a.startswith(base[:2000])
    assert shorten_iri(base[:MAX_IRI_CHARS]) == base[:MAX_IRI_CHARS]  # fits: kept
    event = mapped(statement(verb={"id": a}, object={"id": b}))
    assert (event.action, event.verb, event.objectId) == ("other", short_a, short_b)


def test_timestamp_without_offset_is_utc_and_stored_is_the_fallback() -> None:
    event = mapped(statement(timestamp="2026-11-20T23:30:00.1234567-05:00"))
    assert event.timestamp == dt.datetime(2026, 11, 21, 4, 30, 0, 123456, dt.UTC)
    # xAPI: a timestamp *should* carry an offset; without one it is UTC.
    naive = mapped(statement(timestamp="2026-11-20T10:00:00"))
    assert naive.timestamp == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    for bad in ("20 Nov 2026", 1700000000, ""):
        err = reason_of(statement(timestamp=bad))
        assert err.reason == "invalid_timestamp", bad
    stmt = statement()
    del stmt["timestamp"]
    assert reason_of(stmt).reason == "invalid_timestamp"  # no time at all
    # The receiver's stored time, then the statement's own "stored".
    received = dt.datetime(2026, 11, 21, 8, tzinfo=dt.UTC)
    assert mapped(stmt, stored=received).timestamp == received
    stmt["stored"] = "2026-11-20T09:00:00Z"
    assert mapped(stmt, stored=received).timestamp == dt.datetime(
        2026, 11, 20, 9, tzinfo=dt.UTC
    )


def test_a_time_the_event_cannot_hold_has_its_own_reason() -> None:
    for ts, text in (
        ("1999-12-31T23:59:59Z", "before"),
        ("2026-11-24T12:00:00Z", "future"),
        ("0001-01-01T00:00:00+00:01", "out of range"),
    ):
        err = reason_of(statement(timestamp=ts))
        assert err.reason == "timestamp_out_of_range"
        assert err.detail.startswith("timestamp:") and text in err.detail


def test_region_extension_suffix_and_default() -> None:
    stmt = statement()
    assert mapped(stmt, region="OC").region == "OC"
    stmt["context"]["extensions"] = {"https://other.example/ext/region": "SA"}
    assert mapped(stmt).region == "SA"
    stmt["context"]["extensions"][REGION_EXTENSION] = "AF"  # ours wins
    assert mapped(stmt).region == "AF"
    stmt["context"]["extensions"] = {REGION_EXTENSION: "asia"}
    assert mapped(stmt).region == "ASIA"
    # A region we do not know: the default, the text kept in metadata.
    stmt["context"]["extensions"] = {REGION_EXTENSION: "MARS"}
    event = mapped(stmt, region="US")
    assert event.region == "US" and event.metadata == {
        "source": "xapi",
        "region": "MARS",
    }
    stmt["context"]["extensions"] = {"https://other.example/ext/regions": "SA"}
    assert mapped(stmt).region == "EU"  # only a key ending in /region counts


def test_configured_regions_apply() -> None:
    ctx = validation_context(regions=["EU"], now=NOW)
    assert map_statement(statement(), default_region="EU", context=ctx).region == "EU"
    stmt = statement(context={"extensions": {REGION_EXTENSION: "US"}})
    assert map_statement(stmt, default_region="EU", context=ctx).region == "EU"
    # A default region that is not configured is the caller's mistake.
    with pytest.raises(XapiMappingError, match="invalid_event: region"):
        map_statement(statement(), default_region="US", context=ctx)


def test_score_for_quiz_attempts_only_and_in_range() -> None:
    quiz = {"id": ADL + "answered"}

    def score(result: dict[str, Any]) -> float | None:
        return mapped(statement(verb=quiz, result=result)).score

    assert score({"score": {"scaled": 1}}) == 1.0
    assert score({"score": {"scaled": 0}}) == 0.0
    assert score({"score": {"raw": 3, "min": 0, "max": 4}}) == 0.75
    assert score({"score": {"scaled": 0.5, "raw": 3, "min": 0, "max": 4}}) == 0.5
    assert score({"success": True}) is None
    # xAPI's scaled is -1..1: a negative score counts as 0.
    assert score({"score": {"scaled": -0.2}}) == 0.0
    # Out of xAPI's range or no number: no score (raw/min/max if given).
    assert score({"score": {"scaled": 1.5, "raw": 1, "min": 0, "max": 4}}) == 0.25
    for bad in (1.5, float("nan"), float("inf"), "0.5", True, [0.5]):
        assert score({"score": {"scaled": bad}}) is None, bad
    page = mapped(statement(result={"score": {"scaled": 0.9}}))
    assert page.action == "page_view" and page.score is None


@pytest.mark.parametrize(
    ("duration", "ms"),
    [
        ("PT1M30S", 90_000),
        ("PT0.5S", 500),
        ("PT1H", 3_600_000),
        ("P1D", 86_400_000),
        ("PT0S", 0),
        ("PT2H3M4.005S", 7_384_005),
    ],
)
def test_duration(duration: str, ms: int) -> None:
    assert parse_duration_ms(duration) == ms
    assert mapped(statement(result={"duration": duration})).durationMs == ms


@pytest.mark.parametrize(
    "duration", ["P1Y", "P2M", "P", "PT", "P1DT", "1 min", 90, "PT-1S", "PT1S\n"]
)
def test_a_duration_without_fixed_length_is_left_out(duration: Any) -> None:
    assert parse_duration_ms(duration) is None
    event = mapped(statement(result={"duration": duration}))
    assert event.durationMs is None
    kept = {"duration": duration} if isinstance(duration, str) else {}
    assert event.metadata == {"source": "xapi", **kept}


def test_a_duration_over_a_day_is_left_out_and_kept_as_text() -> None:
    event = mapped(statement(result={"duration": "P1DT1S"}))
    assert event.durationMs is None
    assert event.metadata == {"source": "xapi", "duration": "P1DT1S"}


def test_a_voiding_statement_is_no_activity() -> None:
    ref = {"objectType": "StatementRef", "id": "0f8fad5b-d9cb-469f-a165-70867728950e"}
    err = reason_of(statement(verb={"id": ADL + "voided"}, object=ref))
    assert err.reason == "voiding"


def test_a_statement_without_a_verb_iri_is_bad_verb() -> None:
    for verb in (
        {"display": {"en-US": "experienced"}},
        "experienced",
        {"id": "experienced"},  # no scheme: no absolute IRI
        {"id": "http://example.com/verbs/has space"},
        {"id": "http://example.com/verbs/danced\n"},
        {"id": 7},
    ):
        assert reason_of(statement(verb=verb)).reason == "bad_verb", verb
    stmt = statement()
    del stmt["verb"]
    assert reason_of(stmt).reason == "bad_verb"


def test_not_a_statement() -> None:
    for value in ([statement()], "text", 3, None):
        assert reason_of(value).reason == "not_a_statement"


def test_error_carries_reason_and_detail() -> None:
    err = reason_of(statement(verb={"id": "danced"}))
    assert isinstance(err, LearnTrackError)
    assert err.detail == "verb id 'danced' is no absolute IRI"
    assert str(err) == f"bad_verb: {err.detail}"


# -- the event id -----------------------------------------------------------------
def test_event_id_is_uuid5_of_the_statement_id_and_stable() -> None:
    stmt_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    expected = uuid.UUID("5d3a3d95-71e1-5746-bd1f-9bd11b63e492")  # pinned forever
    assert uuid.uuid5(XAPI_NAMESPACE, stmt_id) == expected
    assert mapped(statement(id=stmt_id)).eventId == expected
    assert mapped(statement(id=stmt_id.upper())).eventId == expected
    # the content does not matter, only the statement id
    assert mapped(statement(id=stmt_id, timestamp="2026-11-01T00:00:00Z")).eventId == (
        expected
    )
    other = mapped(statement(id="5b2e6d1a-d9cb-469f-a165-70867728950e")).eventId
    assert other != expected and other.version == 5


def test_event_id_without_statement_id_is_a_hash_of_the_content() -> None:
    stmt = statement()
    del stmt["id"]
    reordered = dict(reversed(list(copy.deepcopy(stmt).items())))
    first = mapped(stmt).eventId
    assert mapped(reordered).eventId == first == statement_event_id(stmt)
    assert mapped(statement(id=None)).eventId != first  # "id": null is content too
    assert mapped({**stmt, "timestamp": "2026-11-20T10:00:01Z"}).eventId != first


def test_summary_rows() -> None:
    summary = ImportSummary(
        read=5, imported=2, rejected=Counter(bad_json=1, no_course=2), dead_lettered=3
    )
    assert summary.rejected_total == 3
    assert summary.rows() == [
        ("read", 5),
        ("imported", 2),
        ("rejected", 3),
        ("rejected: bad_json", 1),
        ("rejected: no_course", 2),
        ("dead-lettered", 3),
    ]


# -- import_xapi with in-memory producers ---------------------------------------
def assert_xapi_fields(event: ActivityEvent) -> None:
    """An event of the sample file carries its statement's xAPI fields."""
    expected = EXPECTED_XAPI_FIELDS.get(str(event.eventId))
    if expected is None:
        assert event.verb is not None and event.verb.startswith("http")
        return
    registration = str(event.registration) if event.registration else None
    got = (event.verb, event.objectId, registration, event.sessionId)
    assert got == expected


class RecordingProducer:
    """Stands in for ActivityProducer: records what is sent and flushed."""

    def __init__(self) -> None:
        self.records: list[tuple[str | bytes | None, bytes]] = []
        self.flushes = 0

    def send_serialized(self, key: str | bytes | None, value: bytes) -> None:
        self.records.append((key, value))

    def flush(self, timeout: float = 30.0) -> None:
        self.flushes += 1


def recording() -> tuple[RecordingProducer, ActivityProducer]:
    fake = RecordingProducer()
    return fake, cast(ActivityProducer, fake)


def test_import_in_memory_counts_keys_and_dead_letters(tmp_path: Path) -> None:
    events, events_p = recording()
    dlq, dlq_p = recording()
    progress: list[int] = []
    summary = import_xapi(
        SAMPLE,
        get_settings(),
        producer=events_p,
        dlq_producer=dlq_p,  # implies send_dlq
        on_progress=lambda s: progress.append(s.read),
    )
    assert summary == EXPECTED_SUMMARY
    assert summary.read == summary.imported + summary.rejected_total
    assert events.flushes == 1 and dlq.flushes == 1
    assert progress == [21]
    sent = {json.loads(v)["eventId"]: (k, json.loads(v)) for k, v in events.records}
    assert set(sent) == set(EXPECTED_EVENTS)
    for event_id, (key, value) in sent.items():
        assert key == value["studentId"] == EXPECTED_EVENTS[event_id][0]
        event = ActivityEvent.model_validate(value, context=CTX)
        assert event.to_json() == json.dumps(value, separators=(",", ":")).encode()
        assert_xapi_fields(event)
    assert [k for k, _ in dlq.records] == [None] * 5
    lines = SAMPLE.read_text().splitlines()
    for _, value in dlq.records:
        record = json.loads(value)
        assert set(record) == {"reason", "detail", "source", "file", "line", "raw"}
        assert record["reason"] == EXPECTED_REJECTS[record["line"]]
        assert record["raw"] == lines[record["line"] - 1]
        assert record["source"] == "xapi" and record["file"] == "xapi_sample.jsonl"
        assert record["detail"]


def test_import_without_dlq_publishes_no_rejects() -> None:
    events, events_p = recording()
    summary = import_xapi(SAMPLE, get_settings(), producer=events_p)
    assert summary.imported == 16 and summary.rejected_total == 5
    assert summary.dead_lettered == 0
    assert len(events.records) == 16


def test_import_odd_lines_never_crashes(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    huge = json.dumps(statement(verb={"id": "v" * 70_000}))  # no IRI: bad_verb
    path.write_bytes(
        b"\n   \n"  # blank lines: skipped, but counted in line numbers
        + b"[1, 2]\n"
        + b"\xff\xfe not utf-8\n"
        + b"null\n"
        + huge.encode()
        + b"\n"
        + json.dumps(statement()).encode()  # last line without newline
    )
    events, events_p = recording()
    dlq, dlq_p = recording()
    summary = import_xapi(
        path, get_settings(), producer=events_p, dlq_producer=dlq_p, send_dlq=True
    )
    assert summary.read == 5 and summary.imported == 1
    assert summary.rejected == Counter(not_a_statement=2, bad_json=1, bad_verb=1)
    records = [json.loads(v) for _, v in dlq.records]
    assert [(r["line"], r["reason"]) for r in records] == [
        (3, "not_a_statement"),
        (4, "bad_json"),
        (5, "not_a_statement"),
        (6, "bad_verb"),
    ]
    assert records[1]["raw"] == "\ufffd\ufffd not utf-8"
    assert len(records[3]["raw"]) == 64 * 1024 and records[3]["truncated"] is True
    assert events.records[0][0] == "S1"


def test_truncated_gzip_counts_one_unreadable_line(tmp_path: Path) -> None:
    data = gzip.compress(SAMPLE.read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    events, events_p = recording()
    dlq, dlq_p = recording()
    summary = import_xapi(path, get_settings(), producer=events_p, dlq_producer=dlq_p)
    assert summary.rejected["unreadable"] == 1
    assert summary.read == summary.imported + summary.rejected_total
    assert 0 < summary.imported < 16  # the lines before the cut were imported
    last = json.loads(dlq.records[-1][1])
    assert last["reason"] == "unreadable" and last["raw"] == ""
    assert events.flushes == 1


def test_gzip_suffix_means_gzip_content(tmp_path: Path) -> None:
    path = tmp_path / "plain-but-named.jsonl.gz"
    shutil.copy(SAMPLE, path)
    events, events_p = recording()
    summary = import_xapi(path, get_settings(), producer=events_p)
    assert summary == ImportSummary(read=1, rejected=Counter(unreadable=1))
    assert events.records == []


def test_missing_file_is_one_learntrack_error(tmp_path: Path) -> None:
    events, events_p = recording()
    with pytest.raises(LearnTrackError, match="cannot read .*nope.jsonl"):
        import_xapi(tmp_path / "nope.jsonl", get_settings(), producer=events_p)


def test_progress_every_thousand_statements(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    line = json.dumps(statement())
    path.write_text("\n".join([line] * 2500) + "\n")
    events, events_p = recording()
    progress: list[int] = []
    summary = import_xapi(
        path,
        get_settings(),
        producer=events_p,
        on_progress=lambda s: progress.append(s.read),
    )
    assert progress == [1000, 2000, 2500]
    assert summary.imported == 2500
    assert len({v for _, v in events.records}) == 1  # same statement, same event


# -- against the real broker -------------------------------------------------------
@pytest.fixture
def topics(settings: Settings, prefix: str) -> Iterator[tuple[str, str]]:
    """A fresh activity topic and dead-letter topic on the real broker."""
    names = (f"{prefix}.xapi.activity", f"{prefix}.xapi.dlq")
    for name in names:
        create_topic(settings, name, 3)
    yield names
    delete_topics(settings, list(names))


def import_to(settings: Settings, path: Path, activity: str, dlq: str) -> ImportSummary:
    with (
        ActivityProducer(settings, topic=activity) as producer,
        ActivityProducer(settings, topic=dlq) as dlq_producer,
    ):
        summary = import_xapi(
            path,
            settings,
            send_dlq=True,
            producer=producer,
            dlq_producer=dlq_producer,
        )
        assert producer.delivered == summary.imported and producer.failed == 0
        assert dlq_producer.delivered == summary.dead_lettered
    return summary


def assert_events(messages: list[Any], copies: int = 1) -> None:
    """``messages`` are the expected events, each exactly ``copies`` times."""
    seen: Counter[str] = Counter()
    for msg in messages:
        event = ActivityEvent.model_validate_json(msg.value())
        key, course, action, region, score = EXPECTED_EVENTS[str(event.eventId)]
        assert msg.key() == key.encode() == event.studentId.encode()
        assert (event.courseId, event.action, event.region, event.score) == (
            course,
            action,
            region,
            score,
        )
        assert_xapi_fields(event)
        seen[str(event.eventId)] += 1
    assert seen == Counter({e: copies for e in EXPECTED_EVENTS})


def assert_dead_letters(messages: list[Any], file: str, copies: int = 1) -> None:
    lines = SAMPLE.read_text().splitlines()
    seen: Counter[int] = Counter()
    for msg in messages:
        assert msg.key() is None
        record = json.loads(msg.value())
        assert record["source"] == "xapi" and record["file"] == file
        assert record["reason"] == EXPECTED_REJECTS[record["line"]]
        assert record["raw"] == lines[record["line"] - 1]
        seen[record["line"]] += 1
    assert seen == Counter({line: copies for line in EXPECTED_REJECTS})


@pytest.mark.stack
def test_import_publishes_valid_events_and_dead_letters_the_rest(
    settings: Settings, topics: tuple[str, str]
) -> None:
    activity, dlq = topics
    summary = import_to(settings, SAMPLE, activity, dlq)
    assert summary == EXPECTED_SUMMARY
    assert_events(read_topic(settings, activity))
    assert_dead_letters(read_topic(settings, dlq), "xapi_sample.jsonl")


@pytest.mark.stack
def test_reimport_gives_the_same_event_ids(
    settings: Settings, topics: tuple[str, str]
) -> None:
    activity, dlq = topics
    first = import_to(settings, SAMPLE, activity, dlq)
    second = import_to(settings, SAMPLE, activity, dlq)
    assert first == second == EXPECTED_SUMMARY
    messages = read_topic(settings, activity)
    assert_events(messages, copies=2)  # same ids: downstream dedup keeps one
    payloads: dict[str, set[bytes]] = {}
    for msg in messages:
        payloads.setdefault(json.loads(msg.value())["eventId"], set()).add(msg.value())
    assert all(len(p) == 1 for p in payloads.values())  # byte-identical copies
    assert_dead_letters(read_topic(settings, dlq), "xapi_sample.jsonl", copies=2)


@pytest.mark.stack
def test_gzip_file_with_default_producers_gives_the_same_result(
    settings: Settings, topics: tuple[str, str], tmp_path: Path
) -> None:
    activity, dlq = topics
    gz = tmp_path / "xapi_sample.jsonl.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    # No producers passed: import_xapi makes (and closes) its own, on the
    # configured topics.
    own = settings.model_copy(
        update={"topics": TopicSettings(activity=activity, dlq=dlq)}
    )
    summary = import_xapi(gz, own, send_dlq=True)
    assert summary == EXPECTED_SUMMARY
    assert_events(read_topic(settings, activity))
    assert_dead_letters(read_topic(settings, dlq), "xapi_sample.jsonl.gz")


# -- streamed into the stores ------------------------------------------------------
def video_statements(
    student: str, at: dt.datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two statements of a video player: ``interacted`` at ``at``, then ``played``."""
    interacted = statement(
        id=str(uuid.uuid4()),
        actor={"account": {"homePage": "https://lms.example.edu", "name": student}},
        verb={"id": INTERACTED},
        object={
            "id": "https://video.example.edu/v/ml-lecture-1",
            "definition": {"type": VIDEO_TYPE},
        },
        context={
            "registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
            "contextActivities": {
                "parent": [{"id": "https://lms.example.edu/courses/ML201"}]
            },
            "extensions": {SESSION_ID: "e9f2d3a1-7c4b-4e8a-9f01-23b45c67d890"},
        },
        timestamp=at.isoformat(),
    )
    played = copy.deepcopy(interacted)
    played.update(
        id=str(uuid.uuid4()),
        verb={"id": VIDEO + "played"},
        timestamp=(at + dt.timedelta(minutes=1)).isoformat(),
    )
    return interacted, played


@pytest.mark.stack
@pytest.mark.spark
def test_an_unknown_verb_reaches_the_log_the_score_and_the_lake(
    spark: Any, stack: object, prefix: str, tmp_path: Path
) -> None:
    from learntrack.clients import mongo_client, redis_client
    from learntrack.scoring import anchored, weight_of
    from learntrack.sinks.lake import lake_path
    from learntrack.sinks.mongo import ACTIVITIES, STUDENTS
    from learntrack.sinks.redis import GLOBAL_BOARD, student_key
    from learntrack.streaming.job import StreamJob
    from learntrack.topics import ensure_topics

    video = "https://video.example.edu/v/ml-lecture-1"
    settings, _env = isolated(prefix, tmp_path)
    job = StreamJob(settings, available_now=True, report=lambda _l: None)
    job.reset()  # a clean Redis, graph, lake and DLQ for this test
    ensure_topics(settings)
    # Recent times: the event model refuses a time far from now.
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    student = f"{prefix}-learner"
    interacted, played = video_statements(student, at)
    path = tmp_path / "statements.jsonl"
    path.write_text(f"{json.dumps(interacted)}\n{json.dumps(played)}\n")
    summary = import_xapi(path, settings)
    assert (summary.imported, summary.rejected_total) == (2, 0)
    other_id = str(statement_event_id(interacted))

    reports = job.run(spark)
    assert sum(r.valid for r in reports) == 2 and sum(r.invalid for r in reports) == 0

    # MongoDB: the activity log keeps the verb, object and registration; the
    # student's summary counts the generic action.
    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        doc = db[ACTIVITIES].find_one({"_id": other_id})
        summary_doc = db[STUDENTS].find_one({"studentId": student})
    assert doc is not None and summary_doc is not None
    assert (doc["action"], doc["verb"], doc["objectId"]) == ("other", INTERACTED, video)
    assert doc["registration"] == "ec531277-b57b-4c15-8d91-d292c5b2b8f7"
    assert doc["sessionId"] == "e9f2d3a1-7c4b-4e8a-9f01-23b45c67d890"
    assert summary_doc["activity"]["byAction"] == {"other": 1, "video_play": 1}

    # Redis: the score adds the generic action's configured weight.
    weights, half_life = settings.scoring.weights, settings.scoring.half_life_s
    assert weight_of("other", weights) == 1.0
    expected = anchored(weight_of("other", weights), at, half_life) + anchored(
        weight_of("video_play", weights), at + dt.timedelta(minutes=1), half_life
    )
    client = redis_client(settings)
    try:
        anchor = client.zscore(GLOBAL_BOARD, student)
        counts = client.hgetall(student_key(student))
    finally:
        client.close()
    assert anchor == pytest.approx(expected, rel=1e-9)
    assert int(counts[b"a:other"]) == 1 and int(counts[b"a:video_play"]) == 1

    # The lake: the new columns, filled.
    rows = (
        spark.read.parquet(str(lake_path(settings)))
        .where(f"eventId = '{other_id}'")
        .collect()
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["action"], row["verb"], row["objectId"]) == ("other", INTERACTED, video)
    assert row["registration"] == "ec531277-b57b-4c15-8d91-d292c5b2b8f7"
