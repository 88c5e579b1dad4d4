"""The xAPI importer: the mapping (pure) and the import against the real broker."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
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
from learntrack.events import Action, ActivityEvent, validation_context
from learntrack.producers import ActivityProducer
from learntrack.producers.xapi import (
    REASONS,
    REGION_EXTENSION,
    XAPI_NAMESPACE,
    ImportSummary,
    XapiMappingError,
    course_id_from_iri,
    import_xapi,
    map_statement,
    parse_duration_ms,
    statement_event_id,
)
from learntrack.topics import create_topic, delete_topics, read_topic

SAMPLE = Path(__file__).resolve().parent / "data" / "xapi_sample.jsonl"
ADL = "http://adlnet.gov/expapi/verbs/"
VIDEO = "https://w3id.org/xapi/video/verbs/"
VIDEO_TYPE = "https://w3id.org/xapi/video/activity-type/video"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
CTX = validation_context(now=NOW)


def sid(n: int) -> str:
    """The statement ids used in the sample file."""
    return f"1b0c5a4e-{n:04d}-4c8e-9d2a-6f1e2d3c4b{n:02d}"


def eid(statement_id: str) -> str:
    return str(uuid.uuid5(XAPI_NAMESPACE, statement_id))


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
}
#: Physical line number (blank line 5 included) -> reason of every invalid line.
EXPECTED_REJECTS = {
    12: "bad_json",
    13: "unmapped_verb",
    14: "invalid_timestamp",
    15: "bad_actor",
    16: "no_course",
    17: "invalid_event",
}
EXPECTED_SUMMARY = ImportSummary(
    read=16,
    imported=10,
    rejected=Counter(EXPECTED_REJECTS.values()),
    dead_lettered=6,
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


def mapped(stmt: dict[str, Any], region: str = "EU") -> ActivityEvent:
    return map_statement(stmt, default_region=region, context=CTX)


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
    stmt["context"]["registration"] = "9e1f0a6c-4b1d-4e0a-8c55-3b2f6d7e8a90"
    event = mapped(stmt, region="US")
    assert event.model_dump(exclude_none=True) == {
        "eventId": uuid.uuid5(XAPI_NAMESPACE, "0f8fad5b-d9cb-469f-a165-70867728950e"),
        "studentId": "S1",
        "courseId": "BD101",
        "action": Action.QUIZ_ATTEMPT,
        "timestamp": dt.datetime(2026, 11, 20, 10, 30, tzinfo=dt.UTC),
        "region": "US",
        "sessionId": "9e1f0a6c-4b1d-4e0a-8c55-3b2f6d7e8a90",
        "durationMs": 90_000,
        "score": 0.75,
        "metadata": {"source": "xapi", "verb": ADL + "attempted"},
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
        (VIDEO + "played", VIDEO_TYPE, "video_play"),
        (VIDEO + "paused", VIDEO_TYPE, "video_play"),
        (VIDEO + "seeked", VIDEO_TYPE, "video_play"),
        (VIDEO + "completed", VIDEO_TYPE, "video_complete"),
        (ADL + "completed", VIDEO_TYPE, "video_complete"),
        (ADL + "initialized", VIDEO_TYPE, "video_play"),
        (ADL + "terminated", VIDEO_TYPE, "video_play"),
        (ADL + "experienced", VIDEO_TYPE, "video_play"),
    ],
)
def test_verb_maps_to_action(verb: str, object_type: str | None, action: str) -> None:
    obj: dict[str, Any] = {"id": "https://lms.example.edu/activities/a1"}
    if object_type:
        obj["definition"] = {"type": object_type}
    event = mapped(statement(verb={"id": verb}, object=obj))
    assert event.action == action
    assert event.metadata == {"source": "xapi", "verb": verb}


def test_video_profile_category_makes_adl_completed_a_video_complete() -> None:
    stmt = statement(verb={"id": ADL + "completed"})
    assert mapped(stmt).action == "page_view"
    stmt["context"]["contextActivities"]["category"] = [
        {"id": "https://w3id.org/xapi/video"}
    ]
    assert mapped(stmt).action == "video_complete"


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
    ],
)
def test_actor_maps_to_student_id(actor: dict[str, Any], student: str) -> None:
    assert mapped(statement(actor=actor)).studentId == student


@pytest.mark.parametrize(
    "actor",
    [
        None,
        "S1",
        {"name": "Ana Diaz"},  # no identifier
        {"mbox": "mailto:ana+tag@uni.example"},  # '+' is outside ID_PATTERN
        {"account": {"name": "S 1"}},
        {"account": {"name": "S1\n"}},
        {"account": {"name": 1001}},
        {"account": {"name": "x" * 65}},
        {"objectType": "Group", "member": [{"mbox": "mailto:a@b.example"}]},
    ],
)
def test_unusable_actor_is_bad_actor(actor: Any) -> None:
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


def test_no_course_reasons() -> None:
    ref = {"objectType": "StatementRef", "id": "0f8fad5b-d9cb-469f-a165-70867728950e"}
    assert reason_of(statement(context={}, object=ref)).reason == "no_course"
    assert reason_of(statement(context={}, object={})).reason == "no_course"
    empty = statement(context={}, object={"id": "https://lms.example.edu/%24%24/"})
    assert reason_of(empty).reason == "no_course"


def test_timestamp_needs_an_offset_and_is_stored_in_utc() -> None:
    event = mapped(statement(timestamp="2026-11-20T23:30:00.1234567-05:00"))
    assert event.timestamp == dt.datetime(2026, 11, 21, 4, 30, 0, 123456, dt.UTC)
    for naive in ("2026-11-20T10:00:00", "2026-11-20", "20 Nov 2026", 1700000000):
        err = reason_of(statement(timestamp=naive))
        assert err.reason == "invalid_timestamp", naive
    stmt = statement()
    del stmt["timestamp"]
    assert reason_of(stmt).reason == "invalid_timestamp"
    # xAPI: without a timestamp the LRS's "stored" time is the event time
    stmt["stored"] = "2026-11-20T09:00:00Z"
    assert mapped(stmt).timestamp == dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)


def test_implausible_timestamps_are_invalid_events() -> None:
    for ts, text in (
        ("1999-12-31T23:59:59Z", "before"),
        ("2026-11-24T12:00:00Z", "future"),
    ):
        err = reason_of(statement(timestamp=ts))
        assert err.reason == "invalid_event"
        assert err.detail.startswith("timestamp:") and text in err.detail


def test_region_extension_suffix_and_default() -> None:
    stmt = statement()
    assert mapped(stmt, region="OC").region == "OC"
    stmt["context"]["extensions"] = {"https://other.example/ext/region": "SA"}
    assert mapped(stmt).region == "SA"
    stmt["context"]["extensions"][REGION_EXTENSION] = "AF"  # ours wins
    assert mapped(stmt).region == "AF"
    stmt["context"]["extensions"] = {REGION_EXTENSION: "MARS"}
    err = reason_of(stmt)
    assert err.reason == "invalid_event" and err.detail.startswith("region:")
    stmt["context"]["extensions"] = {"https://other.example/ext/regions": "SA"}
    assert mapped(stmt).region == "EU"  # only a key ending in /region counts


def test_configured_regions_apply() -> None:
    ctx = validation_context(regions=["EU"], now=NOW)
    assert map_statement(statement(), default_region="EU", context=ctx).region == "EU"
    with pytest.raises(XapiMappingError, match="invalid_event: region"):
        map_statement(statement(), default_region="US", context=ctx)


def test_score_for_quiz_attempts_only_and_in_range() -> None:
    quiz = {"id": ADL + "answered"}
    assert mapped(statement(verb=quiz, result={"score": {"scaled": 1}})).score == 1.0
    assert mapped(statement(verb=quiz, result={"score": {"scaled": 0}})).score == 0.0
    raw = {"score": {"raw": 3, "min": 0, "max": 4}}
    assert mapped(statement(verb=quiz, result=raw)).score == 0.75
    both = {"score": {"scaled": 0.5, "raw": 3, "min": 0, "max": 4}}
    assert mapped(statement(verb=quiz, result=both)).score == 0.5
    assert mapped(statement(verb=quiz, result={"success": True})).score is None
    page = mapped(statement(result={"score": {"scaled": 0.9}}))
    assert page.action == "page_view" and page.score is None
    for bad in (1.5, -0.2, float("nan")):
        err = reason_of(statement(verb=quiz, result={"score": {"scaled": bad}}))
        assert err.reason == "invalid_event" and err.detail.startswith("score:"), bad
    for bad_type in ("0.5", True, [0.5]):
        result = {"score": {"scaled": bad_type}}
        err = reason_of(statement(verb=quiz, result=result))
        assert err.reason == "invalid_event" and "score" in err.detail


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


@pytest.mark.parametrize(
    "duration", ["P1Y", "P2M", "P", "PT", "P1DT", "1 min", 90, "PT-1S", "PT1S\n"]
)
def test_bad_duration(duration: Any) -> None:
    err = reason_of(statement(result={"duration": duration}))
    assert err.reason == "invalid_duration"


def test_duration_over_a_day_is_an_invalid_event() -> None:
    err = reason_of(statement(result={"duration": "P1DT1S"}))
    assert err.reason == "invalid_event" and err.detail.startswith("durationMs:")


def test_unmapped_verbs() -> None:
    for verb in (
        {"id": "http://example.com/verbs/danced"},
        {"id": ADL + "voided"},
        {"display": {"en-US": "experienced"}},
        "experienced",
    ):
        assert reason_of(statement(verb=verb)).reason == "unmapped_verb", verb
    stmt = statement()
    del stmt["verb"]
    assert reason_of(stmt).reason == "unmapped_verb"


def test_not_a_statement() -> None:
    for value in ([statement()], "text", 3, None):
        assert reason_of(value).reason == "not_a_statement"


def test_error_carries_reason_and_detail() -> None:
    err = reason_of(statement(verb={"id": "http://example.com/verbs/danced"}))
    assert isinstance(err, LearnTrackError)
    assert err.detail == "no action for verb 'http://example.com/verbs/danced'"
    assert str(err) == f"unmapped_verb: {err.detail}"


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
    assert progress == [16]
    sent = {json.loads(v)["eventId"]: (k, json.loads(v)) for k, v in events.records}
    assert set(sent) == set(EXPECTED_EVENTS)
    for event_id, (key, value) in sent.items():
        assert key == value["studentId"] == EXPECTED_EVENTS[event_id][0]
        assert ActivityEvent.model_validate(value, context=CTX).to_json() == (
            json.dumps(value, separators=(",", ":")).encode()
        )
    assert [k for k, _ in dlq.records] == [None] * 6
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
    assert summary.imported == 10 and summary.rejected_total == 6
    assert summary.dead_lettered == 0
    assert len(events.records) == 10


def test_import_odd_lines_never_crashes(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    huge = json.dumps(statement(verb={"id": "http://example.com/" + "v" * 70_000}))
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
    assert summary.rejected == Counter(not_a_statement=2, bad_json=1, unmapped_verb=1)
    records = [json.loads(v) for _, v in dlq.records]
    assert [(r["line"], r["reason"]) for r in records] == [
        (3, "not_a_statement"),
        (4, "bad_json"),
        (5, "not_a_statement"),
        (6, "unmapped_verb"),
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
    assert 0 < summary.imported < 10  # the lines before the cut were imported
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
