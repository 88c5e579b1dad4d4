"""The nightly batch on the real stack: lake Parquet -> Spark -> Cassandra 5.

Each test has its own Cassandra keyspace (dropped afterwards) and its own lake (a
data directory under ``tmp_path``), so tests do not see each other's days or the
lake other test files write. Most tests write the lake directly with
:class:`LakeSink` from generator events; one goes through the real stream.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from learntrack.batch.daily import BatchResult, run_batch, split_days
from learntrack.cli import main
from learntrack.clients import cassandra_session
from learntrack.config import Settings, TopicSettings
from learntrack.errors import RetryableSinkError
from learntrack.producers.generator import (
    Dataset,
    Event,
    Generator,
    GeneratorConfig,
    build_truth,
)
from learntrack.sinks.cassandra import (
    DAYS,
    ENGAGEMENT,
    CassandraEngagementSink,
    CourseDayRow,
    ensure_schema,
    read_course_engagement,
    schema_cql,
)
from learntrack.sinks.lake import LakeSink, lake_path

pytestmark = [pytest.mark.stack, pytest.mark.spark]

LAKE_SCHEMA = (
    "eventId string, studentId string, courseId string, action string, "
    "timestamp timestamp, region string, sessionId string, device string, "
    "durationMs long, score double, verb string, objectId string, "
    "registration string, schemaVersion long"
)


# -- helpers ---------------------------------------------------------------------------
@pytest.fixture
def keyspace(settings: Settings, prefix: str) -> Iterator[str]:
    """A keyspace name of this test's own; dropped afterwards if it was created."""
    yield prefix
    cluster, session = cassandra_session(settings)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {prefix}")
    finally:
        cluster.shutdown()


@pytest.fixture
def private(settings: Settings, keyspace: str, tmp_path: Path) -> Settings:
    """The test stack's settings with this test's own lake and keyspace."""
    return settings.model_copy(
        update={
            "data_dir": tmp_path,
            "cassandra": settings.cassandra.model_copy(update={"keyspace": keyspace}),
        }
    )


def generate(
    prefix: str, start: dt.datetime, events: int, seed: int, days: int = 1
) -> tuple[Dataset, dict[str, Any]]:
    """Generated days whose course and student ids carry ``prefix``, and the truth."""
    config = GeneratorConfig(
        students=60,
        courses=4,
        events=events,
        start=start,
        span=dt.timedelta(days=days),
        seed=seed,
    )
    data = Generator(config).build()
    renamed = [
        (e[0], e[1], f"{prefix}{e[2]}", f"{prefix}{e[3]}", *e[4:]) for e in data.events
    ]
    data = dataclasses.replace(data, events=renamed)
    return data, build_truth(data)


def lake_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """Generator events as lake rows (LAKE_COLUMNS order)."""
    return [
        (eid, sid, cid, action, dt.datetime.fromtimestamp(ts / 1000, dt.UTC), region,
         session, device, duration, score, None, None, None, 1)
        for ts, eid, sid, cid, action, region, session, device, duration, score
        in events
    ]  # fmt: skip


def write_lake(spark: Any, settings: Settings, events: list[Event], batch: int) -> None:
    """Write ``events`` to the lake of ``settings`` as stream batch ``batch``."""
    df = spark.createDataFrame(lake_rows(events), LAKE_SCHEMA)
    with LakeSink(settings) as sink:
        sink.write_batch(batch, df)


def truth_days(truth: dict[str, Any]) -> list[dt.date]:
    per_day = truth["perCourseDay"].values()
    return sorted({dt.date.fromisoformat(v["date"]) for v in per_day})


def all_rows(settings: Settings, courses: set[str], days: list[dt.date]) -> list[Any]:
    """Every row Cassandra holds for ``courses`` over ``days`` (read back)."""
    out = []
    for course in sorted(courses):
        out += read_course_engagement(settings, course, days[0], days[-1])
    return out


def assert_equals_truth(settings: Settings, truth: dict[str, Any]) -> None:
    """Cassandra holds exactly truth's perCourseDay, every column."""
    days = truth_days(truth)
    courses = {v["courseId"] for v in truth["perCourseDay"].values()}
    found = {
        f"{r['courseId']}|{r['date']}": r for r in all_rows(settings, courses, days)
    }
    assert set(found) == set(truth["perCourseDay"])
    for key, want in truth["perCourseDay"].items():
        row = found[key]
        assert row["count"] == want["count"], key
        assert row["activeStudents"] == want["activeStudents"], key
        assert row["quizAttempts"] == want["quizAttempts"], key
        assert row["actions"] == want["actions"], key
        assert row["eventsPerStudent"] == want["count"] / want["activeStudents"], key
        assert sum(row["actions"].values()) == row["count"]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("learntrack: ")
    return lines[0]


# -- schema ----------------------------------------------------------------------------
def _columns(ddl: str) -> tuple[dict[str, str], str]:
    """(column -> type, primary key) from a CREATE TABLE statement."""
    body = re.search(r"\((.*), PRIMARY KEY \((.*?)\)\)", ddl)
    assert body is not None, ddl
    cols = {}
    for part in re.split(r",\s*(?![^<]*>)", body[1]):
        name, _, cql_type = part.strip().partition(" ")
        cols[name] = cql_type
    return cols, body[2]


def test_the_schema_is_the_design_documents_table_with_if_not_exists() -> None:
    statements = schema_cql("ks")
    assert len(statements) == 3  # noqa: PLR2004
    assert all(" IF NOT EXISTS " in s for s in statements)
    engagement, key = _columns(statements[1])
    assert key == "courseid, date"
    assert engagement == {
        "courseid": "text",
        "date": "date",
        "count": "int",
        "active_students": "bigint",
        "quiz_attempts": "bigint",
        "events_per_student": "double",
        "actions": "map<text, bigint>",
    }
    assert statements[1].startswith("CREATE TABLE IF NOT EXISTS ks.course_engagement")
    assert statements[1].endswith("WITH CLUSTERING ORDER BY (date DESC)")


def test_schema_on_the_server_is_the_rendered_one(
    settings: Settings, keyspace: str
) -> None:
    cluster, session = cassandra_session(settings)
    try:
        created = ensure_schema(session, keyspace)
        assert created == [
            keyspace,
            f"{keyspace}.course_engagement",
            f"{keyspace}.course_engagement_days",
        ]
        assert ensure_schema(session, keyspace) == []  # idempotent
        for spec in (ENGAGEMENT, DAYS):
            columns = {
                r.column_name: (r.type, r.kind, r.clustering_order)
                for r in session.execute(
                    "SELECT column_name, type, kind, clustering_order "
                    "FROM system_schema.columns "
                    "WHERE keyspace_name = %s AND table_name = %s",
                    (keyspace, spec.name),
                )
            }
            assert {n: t.replace(" ", "") for n, (t, _k, _o) in columns.items()} == {
                c.name: c.cql_type.replace(" ", "") for c in spec.columns
            }
            assert [
                n for n, (_t, k, _o) in columns.items() if k == "partition_key"
            ] == (list(spec.partition_key))
            clustering = {
                n: o for n, (_t, k, o) in columns.items() if k == "clustering"
            }
            assert clustering == {n: o.lower() for n, o in spec.clustering}
    finally:
        cluster.shutdown()


DAY1 = dt.date(2025, 1, 2)


def test_sink_status_reset_and_a_dead_server(
    private: Settings,
) -> None:
    sink = CassandraEngagementSink(private)
    sink.reset()  # nothing to empty yet: creates nothing
    status = sink.status()
    assert status.healthy
    assert status.detail.startswith("Cassandra 5.0.")
    assert read_course_engagement(private, "A", dt.date(2025, 1, 1), DAY1) == []
    with sink:
        sink.ping()
        sink.write_batch(
            0, [CourseDayRow("A", DAY1, 3, 2, 1, 1.5, {"quiz_attempt": 1})]
        )
    assert len(read_course_engagement(private, "A", DAY1, DAY1)) == 1
    sink.reset()
    assert read_course_engagement(private, "A", DAY1, DAY1) == []
    with sink:
        assert sink.courses_on(DAY1) == set()
    dead = private.model_copy(
        update={"cassandra": private.cassandra.model_copy(update={"port": 1})}
    )
    status = CassandraEngagementSink(dead).status()
    assert not status.healthy
    assert "RetryableSinkError" in status.detail
    with pytest.raises(RetryableSinkError, match="connect"):
        read_course_engagement(dead, "C001", dt.date(2025, 1, 1), dt.date(2025, 1, 2))


# -- reads -----------------------------------------------------------------------------
def test_range_reads_are_newest_first_and_bounded(private: Settings) -> None:
    first = dt.date(2024, 2, 27)
    days = [first + dt.timedelta(days=i) for i in range(6)]  # across Feb 29
    ks = private.cassandra.keyspace
    # A caller's session (the API keeps one open), opened before the batch ever ran.
    cluster, session = cassandra_session(private)
    assert read_course_engagement(private, "A", days[0], days[-1]) == []  # no schema
    assert read_course_engagement(session, "A", days[0], days[-1], keyspace=ks) == []
    rows = [
        CourseDayRow(course, d, 10 + i, 2, i, (10 + i) / 2, {"page_view": 10, "x": i})
        for i, d in enumerate(days)
        for course in ("A", "B")
    ]
    with CassandraEngagementSink(private) as sink:
        assert sink.write_batch(0, rows) == len(rows)
        assert sink.courses_on(days[2]) == {"A", "B"}
    got = read_course_engagement(private, "A", days[1], days[3])
    assert [r["date"] for r in got] == [days[3], days[2], days[1]]
    assert got[0] == {
        "courseId": "A",
        "date": days[3],
        "count": 13,
        "activeStudents": 2,
        "quizAttempts": 3,
        "eventsPerStudent": 6.5,
        "actions": {"page_view": 10, "x": 3},
    }
    assert {r["courseId"] for r in got} == {"A"}
    one_day = read_course_engagement(private, "B", days[5], days[5])
    assert [(r["courseId"], r["date"]) for r in one_day] == [("B", days[5])]
    assert read_course_engagement(private, "C", days[0], days[-1]) == []
    after = days[-1] + dt.timedelta(days=1)
    assert read_course_engagement(private, "A", after, after + dt.timedelta(9)) == []
    # The early session sees the table now, and reads the same rows.
    try:
        assert (
            read_course_engagement(session, "A", days[1], days[3], keyspace=ks) == got
        )
        assert read_course_engagement(session, "B", days[5], days[5], keyspace=ks) == (
            one_day
        )
        with pytest.raises(ValueError, match="keyspace"):
            read_course_engagement(session, "A", days[1], days[3])
    finally:
        cluster.shutdown()
    cluster, session = cassandra_session(private, ks)  # connected to the keyspace
    try:
        assert read_course_engagement(session, "A", days[1], days[3]) == got
    finally:
        cluster.shutdown()
    with pytest.raises(ValueError, match="after"):
        read_course_engagement(private, "A", days[3], days[1])


# -- the batch -------------------------------------------------------------------------
def test_batch_rows_equal_the_generator_truth(
    spark: Any, private: Settings, prefix: str
) -> None:
    data, truth = generate(prefix, dt.datetime(2025, 3, 10, tzinfo=dt.UTC), 3000, 5)
    days = truth_days(truth)
    assert len(truth["perCourseDay"]) >= 4
    # Two stream batches wrote the day (as the stream does over a day).
    write_lake(spark, private, data.events[:1800], batch=0)
    write_lake(spark, private, data.events[1800:], batch=1)
    asked = [*days, days[-1] + dt.timedelta(days=1)]  # one day has no lake data
    stages: list[str] = []
    result = run_batch(private, spark, asked, on_stage=stages.append)
    assert result.missing == [asked[-1]]
    assert [d.date for d in result.days] == days
    assert result.events == 3000
    assert result.rows_written == len(truth["perCourseDay"])
    assert result.rows_deleted == 0
    assert any("created" in s for s in stages)
    assert_equals_truth(private, truth)


def test_rerun_gives_identical_rows_and_repairs_a_damaged_one(
    spark: Any, private: Settings, prefix: str
) -> None:
    data, truth = generate(prefix, dt.datetime(2025, 4, 2, tzinfo=dt.UTC), 1500, 6)
    days = truth_days(truth)
    write_lake(spark, private, data.events, batch=0)
    run_batch(private, spark, days)
    courses = {v["courseId"] for v in truth["perCourseDay"].values()}
    before = all_rows(private, courses, days)
    again = run_batch(private, spark, days)
    assert again.rows_written == len(before) and again.rows_deleted == 0
    assert all_rows(private, courses, days) == before
    # Damage one row (as a half-finished earlier run could): the re-run repairs it.
    victim = before[0]
    with CassandraEngagementSink(private) as sink:
        wrong = CourseDayRow(victim["courseId"], victim["date"], 1, 1, 0, 1.0, {"x": 1})
        sink.write_batch(0, [wrong])
    assert all_rows(private, courses, days) != before
    run_batch(private, spark, [victim["date"]])
    assert all_rows(private, courses, days) == before
    assert_equals_truth(private, truth)


def test_a_late_event_appears_after_rerunning_its_day(
    spark: Any, private: Settings, prefix: str
) -> None:
    data, truth = generate(prefix, dt.datetime(2025, 5, 20, tzinfo=dt.UTC), 1200, 7)
    day = dt.date(2025, 5, 20)
    write_lake(spark, private, data.events, batch=0)
    run_batch(private, spark, [day])
    course = f"{prefix}C001"
    (old,) = read_course_engagement(private, course, day, day)
    # A quiz attempt of a new student at 23:59 that day arrives days later: the
    # stream puts it in the day's folder under a new batch id.
    ts = int(dt.datetime(2025, 5, 20, 23, 59, tzinfo=dt.UTC).timestamp() * 1000)
    late_id = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
    late: Event = (ts, late_id, f"{prefix}late", course, "quiz_attempt", "EU",
                   "s-late", "web", 1000, 0.5)  # fmt: skip
    write_lake(spark, private, [late], batch=42)
    assert split_days(lake_path(private), [day]) == ([day], [])
    assert read_course_engagement(private, course, day, day) == [old]  # not yet
    result = run_batch(private, spark, [day])
    assert result.events == 1201
    (new,) = read_course_engagement(private, course, day, day)
    assert new["count"] == old["count"] + 1
    assert new["activeStudents"] == old["activeStudents"] + 1
    assert new["quizAttempts"] == old["quizAttempts"] + 1
    want = dict(old["actions"])
    want["quiz_attempt"] = want.get("quiz_attempt", 0) + 1
    assert new["actions"] == want
    assert new["eventsPerStudent"] == new["count"] / new["activeStudents"]


def test_a_course_without_events_loses_its_row_and_missing_days_stay(
    spark: Any, private: Settings, prefix: str
) -> None:
    start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    data, truth = generate(prefix, start, 2000, 8, days=2)
    day, next_day = start.date(), start.date() + dt.timedelta(days=1)
    assert {day, next_day} <= set(truth_days(truth))
    write_lake(spark, private, data.events, batch=0)
    run_batch(private, spark, [day, next_day])
    on_day = {
        v["courseId"]: v
        for k, v in truth["perCourseDay"].items()
        if v["date"] == str(day)
    }
    gone = f"{prefix}C002"
    assert gone in on_day and len(on_day) >= 2
    kept = set(on_day) - {gone}
    next_rows = all_rows(private, set(on_day) | {gone}, [next_day])
    assert next_rows
    # The day is rebuilt in the lake without that course; the next day's folder is
    # gone (e.g. expired from the lake).
    lake = lake_path(private)
    shutil.rmtree(lake / f"date={day}")
    shutil.rmtree(lake / f"date={next_day}")
    rebuilt = [e for e in data.events if e[3] != gone and _day_of(e) == day]
    write_lake(spark, private, rebuilt, batch=1)
    result = run_batch(private, spark, [day, next_day])
    assert result.missing == [next_day]
    assert (result.rows_written, result.rows_deleted) == (len(kept), 1)
    assert read_course_engagement(private, gone, day, day) == []
    with CassandraEngagementSink(private) as sink:
        assert sink.courses_on(day) == kept
    survivors = all_rows(private, kept, [day])
    assert {r["courseId"]: r["count"] for r in survivors} == {
        c: on_day[c]["count"] for c in kept
    }
    # A day without lake data is reported and left as it was in Cassandra.
    assert all_rows(private, set(on_day) | {gone}, [next_day]) == next_rows


def test_dedup_counts_a_copied_folder_once_and_foreign_actions_show_as_other(
    spark: Any, private: Settings, prefix: str
) -> None:
    data, truth = generate(prefix, dt.datetime(2025, 7, 1, tzinfo=dt.UTC), 1000, 9)
    days = truth_days(truth)
    write_lake(spark, private, data.events, batch=0)
    lake = lake_path(private)
    for day in days:  # a batch folder copied by hand: every event twice
        folder = lake / f"date={day}"
        shutil.copytree(folder / "batch=0", folder / "batch=7")
    trusted = run_batch(private, spark, days)  # the stream's lake is trusted
    assert trusted.events == 2000
    result = run_batch(private, spark, days, dedup=True)
    assert result.events == 1000
    assert_equals_truth(private, truth)
    # An action the stream never writes (it validates) is counted as "other",
    # together with the generic action "other" (an xAPI verb without an action).
    day = _day_of(data.events[0])
    course = data.events[0][3]
    ts = data.events[0][0]
    odd: Event = (ts, "0b4e28ba-2fa1-41d2-883f-0016d3cca427", f"{prefix}odd", course,
                  "teleport", "EU", "s-odd", "web", 0, None)  # fmt: skip
    generic: Event = (ts, "5d3a3d95-71e1-5746-bd1f-9bd11b63e492", f"{prefix}odd",
                      course, "other", "EU", "s-odd", "web", 0, None)  # fmt: skip
    write_lake(spark, private, [odd, generic], batch=8)
    (before,) = read_course_engagement(private, course, day, day)
    assert "other" not in before["actions"]  # the generator never emits it
    run_batch(private, spark, [day], dedup=True)
    (after,) = read_course_engagement(private, course, day, day)
    assert after["count"] == before["count"] + 2
    assert after["actions"] == {**before["actions"], "other": 2}
    assert sum(after["actions"].values()) == after["count"]


def _day_of(event: Event) -> dt.date:
    return dt.datetime.fromtimestamp(event[0] / 1000, dt.UTC).date()


# -- CLI -------------------------------------------------------------------------------
@pytest.fixture
def cli_env(
    private: Settings, keyspace: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Point the CLI's own settings at this test's lake and keyspace."""
    monkeypatch.setenv("LEARNTRACK_DATA_DIR", str(private.data_dir))
    monkeypatch.setenv("LEARNTRACK_CASSANDRA__KEYSPACE", keyspace)
    # The test stack's credentials file stays in its own data dir.
    assert private.cassandra.password is not None
    monkeypatch.setenv(
        "LEARNTRACK_CASSANDRA__PASSWORD", private.cassandra.password.get_secret_value()
    )
    return private


def test_cli_batch_and_query_course(
    spark: Any, cli_env: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    start = dt.datetime(2025, 7, 14, tzinfo=dt.UTC)
    data, truth = generate(prefix, start, 800, 9, days=2)
    write_lake(spark, cli_env, data.events, batch=0)
    capsys.readouterr()
    assert main(["batch", "--date", "2025-07-14"]) == 0
    out = capsys.readouterr().out
    assert "Daily batch" in out and "2025-07-14" in out
    day_rows = [v for k, v in truth["perCourseDay"].items() if "2025-07-14" in k]
    events = sum(v["count"] for v in day_rows)
    assert f"1 day(s), {events:,} events, {len(day_rows)} rows written, 0 deleted" in (
        " ".join(out.split())
    )
    assert spark.range(3).count() == 3  # the CLI left the shared session running

    assert main(["batch", "--from", "2025-07-13", "--to", "2025-07-15"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no lake data for 1 of 3 day(s): 2025-07-13" in out

    course = f"{prefix}C001"
    want = truth["perCourseDay"][f"{course}|2025-07-14"]
    argv = ["query", "course", course, "--from", "2025-07-10", "--to", "2025-07-20"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2025-07-14" in out and "2025-07-15" in out
    assert out.index("2025-07-15") < out.index("2025-07-14")  # newest first
    assert f"quiz_attempt {want['actions']['quiz_attempt']}" in " ".join(out.split())
    assert main(["query", "course", course]) == 0  # the last 7 days: nothing then
    assert "no daily engagement" in capsys.readouterr().out

    # Every course of one day, busiest first (what `make demo` ends with).
    assert main(["query", "courses", "--date", "2025-07-14"]) == 0
    out = capsys.readouterr().out
    busiest = sorted(day_rows, key=lambda v: (-v["count"], v["courseId"]))
    positions = [out.index(v["courseId"] + " ") for v in busiest]
    assert positions == sorted(positions)
    assert f"{len(day_rows)} courses, {events:,} events" in " ".join(out.split())
    assert main(["query", "courses", "--date", "2025-07-20"]) == 0
    assert "no engagement on 2025-07-20" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["batch"], 2, "exactly one of"),
        (["batch", "--date", "2025-02-30"], 2, "no such day"),
        (["batch", "--date", "yesterday"], 2, "YYYY-MM-DD"),
        (["batch", "--date", "2025-01-01", "--yesterday"], 2, "exactly one of"),
        (["batch", "--from", "2025-01-01"], 2, "go together"),
        (["batch", "--from", "2025-01-05", "--to", "2025-01-01"], 2, "is after"),
        (["batch", "--from", "2020-01-01", "--to", "2025-01-01"], 2, "at most 366"),
        (["batch", "--date", "2001-01-01"], 1, "no lake data for 2001-01-01"),
        (["query", "course", "C 1"], 2, "invalid course id"),
        (
            ["query", "course", "C1", "--from", "2025-01-10", "--to", "2025-01-01"],
            2,
            "is after",
        ),  # fmt: skip
        (["query", "course", "C1", "--to", "2025-13-01"], 2, "no such day"),
        (["query", "courses", "--date", "2025-13-01"], 2, "no such day"),
    ],
)
def test_cli_bad_arguments_give_one_line(
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    words: str,
) -> None:
    assert main(argv) == code
    assert words in one_line_error(capsys)


def test_cli_with_cassandra_down_gives_one_line(
    spark: Any,
    cli_env: Settings,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, _truth = generate(prefix, dt.datetime(2025, 8, 1, tzinfo=dt.UTC), 100, 10)
    write_lake(spark, cli_env, data.events, batch=0)
    monkeypatch.setenv("LEARNTRACK_CASSANDRA__PORT", "1")
    assert main(["batch", "--date", "2025-08-01"]) == 1
    assert "cassandra is not reachable" in one_line_error(capsys)
    assert main(["query", "course", "C001"]) == 1
    assert "connect" in one_line_error(capsys)


# -- through the real stream --------------------------------------------------------
def test_stream_then_batch_equals_the_truth(
    spark: Any, private: Settings, prefix: str
) -> None:
    from learntrack.clients import mongo_client
    from learntrack.producers import ActivityProducer
    from learntrack.producers.generator import publish
    from learntrack.streaming.job import StreamJob
    from learntrack.topics import delete_topics, ensure_topics

    settings = private.model_copy(
        update={
            "topics": TopicSettings(
                activity=f"{prefix}.activity",
                dlq=f"{prefix}.dlq",
                alerts=f"{prefix}.alerts",
            ),
            "mongo": private.mongo.model_copy(update={"database": prefix}),
        }
    )
    data, truth = generate(prefix, dt.datetime(2025, 9, 3, tzinfo=dt.UTC), 1000, 12)
    ensure_topics(settings)
    try:
        with ActivityProducer(settings) as producer:
            publish(data, producer.send_serialized)
        reports = StreamJob(settings, available_now=True, report=lambda _l: None).run(
            spark
        )
        assert sum(r.valid for r in reports) == 1000
        result: BatchResult = run_batch(settings, spark, truth_days(truth))
        assert result.events == 1000 and result.missing == []
        assert_equals_truth(settings, truth)
    finally:
        delete_topics(settings, [f"{prefix}.activity", f"{prefix}.dlq",
                                 f"{prefix}.alerts"])  # fmt: skip
        with mongo_client(settings) as client:
            client.drop_database(prefix)
