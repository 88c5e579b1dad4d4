"""The nightly batch: daily course engagement from the Parquet lake into Cassandra.

Runs in the driver process of ``learntrack batch`` (or of whoever calls
:func:`run_batch`: ``make demo``, benchmarks, tests). Spark reads the requested days
of the lake and aggregates them on its executors; the result, one row per (course,
day), is small and is written from the driver through
:class:`learntrack.sinks.cassandra.CassandraEngagementSink`.

Idempotent: each processed day is replaced as a whole (same rows for the same lake,
rows of courses without events that day deleted), so re-running a day after late
events reached the lake brings it up to date, and re-running it again changes
nothing. Days without a lake folder are reported and left untouched in Cassandra.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learntrack.config import Settings
from learntrack.errors import LearnTrackError
from learntrack.events import Action
from learntrack.sinks.cassandra import CassandraEngagementSink, CourseDayRow
from learntrack.sinks.lake import lake_path

#: At most this many days per run (a year and a day: enough for any backfill,
#: small enough that a typo such as --from 2006 fails fast).
MAX_DAYS = 366


class BatchError(LearnTrackError):
    """The batch cannot run as asked (no data for any requested day, bad range)."""


@dataclass(frozen=True)
class DayResult:
    """What the batch did for one day."""

    date: dt.date
    events: int
    rows_written: int
    rows_deleted: int


@dataclass
class BatchResult:
    """What one :func:`run_batch` call did."""

    requested: list[dt.date]
    missing: list[dt.date]
    days: list[DayResult] = field(default_factory=list)
    seconds: float = 0.0
    spark_seconds: float = 0.0

    @property
    def rows_written(self) -> int:
        """Rows written (one per course and day)."""
        return sum(d.rows_written for d in self.days)

    @property
    def rows_deleted(self) -> int:
        """Stale rows deleted (courses without events on a re-run day)."""
        return sum(d.rows_deleted for d in self.days)

    @property
    def events(self) -> int:
        """Lake events aggregated."""
        return sum(d.events for d in self.days)


# -- days ------------------------------------------------------------------------
def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last`` inclusive; BatchError if empty or huge."""
    if first > last:
        msg = f"--from {first} is after --to {last}"
        raise BatchError(msg)
    n = (last - first).days + 1
    if n > MAX_DAYS:
        msg = f"{n} days from {first} to {last}: at most {MAX_DAYS} per run"
        raise BatchError(msg)
    return [first + dt.timedelta(days=i) for i in range(n)]


def yesterday(now: dt.datetime | None = None) -> dt.date:
    """Yesterday's UTC date (the lake is partitioned by UTC day)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date() - dt.timedelta(
        days=1
    )


def day_folder(lake: Path, day: dt.date) -> Path:
    """The lake folder of ``day``."""
    return lake / f"date={day.isoformat()}"


def split_days(
    lake: Path, days: Iterable[dt.date]
) -> tuple[list[dt.date], list[dt.date]]:
    """(days with Parquet files in the lake, days without), both sorted."""
    present: list[dt.date] = []
    missing: list[dt.date] = []
    for day in sorted(set(days)):
        folder = day_folder(lake, day)
        has_files = folder.is_dir() and any(folder.glob("batch=*/*.parquet"))
        (present if has_files else missing).append(day)
    return present, missing


def plan(
    settings: Settings, days: Iterable[dt.date]
) -> tuple[list[dt.date], list[dt.date]]:
    """(days to process, days missing); BatchError when no day has data.

    Cheap (lists folders): the CLI calls it before starting Spark.
    """
    lake = lake_path(settings)
    wanted = sorted(set(days))
    present, missing = split_days(lake, wanted)
    if not present:
        span = str(wanted[0]) if len(wanted) == 1 else f"{wanted[0]}..{wanted[-1]}"
        msg = f"no lake data for {span} (looked in {lake}); nothing to aggregate"
        raise BatchError(msg)
    return present, missing


# -- aggregation (Spark) -----------------------------------------------------------
def aggregate(
    spark: Any, lake: Path, days: list[dt.date], *, dedup: bool = False
) -> list[CourseDayRow]:
    """One row per (course, day) of ``days`` from the lake (runs a Spark job).

    One pass: per (course, day), the event count, the distinct students and one
    conditional count per action (the actions are a closed set, see
    :class:`learntrack.events.Action`), so Spark shuffles only its partial
    aggregates and the (course, day, student) keys of the distinct count.

    The stream writes each event to the lake exactly once (a replayed batch rewrites
    its own folder; an event published again is dropped before the lake), so
    ``dedup`` is off by default. Turn it on for a lake assembled by other means
    (files copied by hand, another writer): events are then counted once per
    eventId, at the price of a shuffle of every event.
    """
    from pyspark.sql import functions as F  # noqa: N812

    paths = [str(day_folder(lake, d)) for d in days]
    events = (
        spark.read.option("basePath", str(lake))
        .parquet(*paths)
        .select(
            "eventId",
            "studentId",
            "courseId",
            "action",
            F.col("date").cast("string").alias("day"),
        )
    )
    if dedup:
        events = events.dropDuplicates(["eventId"])
    actions = list(Action)
    per_day = events.groupBy("courseId", "day").agg(
        F.count(F.lit(1)).alias("count"),
        F.countDistinct("studentId").alias("active"),
        *(
            F.count(F.when(F.col("action") == a.value, 1)).alias(f"a{i}")
            for i, a in enumerate(actions)
        ),
    )
    rows = []
    for r in per_day.collect():  # one row per course and day: small
        count, active = int(r["count"]), int(r["active"])
        acts = {a.value: int(r[f"a{i}"]) for i, a in enumerate(actions) if r[f"a{i}"]}
        foreign = count - sum(acts.values())
        if foreign:  # not written by our stream (its events are validated)
            acts[Action.OTHER.value] = acts.get(Action.OTHER.value, 0) + foreign
        rows.append(
            CourseDayRow(
                course_id=r["courseId"],
                date=dt.date.fromisoformat(r["day"]),
                count=count,
                active_students=active,
                quiz_attempts=acts.get(Action.QUIZ_ATTEMPT.value, 0),
                events_per_student=count / active,
                actions=acts,
            )
        )
    return rows


# -- the job ---------------------------------------------------------------------------
def run_batch(
    settings: Settings,
    spark: Any,
    days: Iterable[dt.date],
    *,
    on_stage: Callable[[str], None] | None = None,
    on_day: Callable[[DayResult], None] | None = None,
    dedup: bool = False,
) -> BatchResult:
    """Aggregate ``days`` of the lake into Cassandra; replace each day's rows.

    Runs on the driver; Spark does the reading and aggregating. Cassandra is
    connected (and the schema created if missing) before Spark starts reading, so
    a store that is down fails fast. ``on_stage`` gets a short line per stage,
    ``on_day`` each day's result as soon as it is written. ``dedup`` counts events
    once per eventId (see :func:`aggregate`).

    Raises:
        BatchError: no requested day has data in the lake.
        RetryableSinkError: Cassandra is down or timed out (run again).
        FatalSinkError: Cassandra refused a statement.
    """
    started = time.perf_counter()
    wanted = sorted(set(days))
    present, missing = plan(settings, wanted)
    result = BatchResult(requested=wanted, missing=missing)
    stage = on_stage or (lambda _m: None)
    with CassandraEngagementSink(settings) as sink:
        created = sink.ensure_schema()
        if created:
            stage(f"created {', '.join(created)}")
        stage(f"aggregating {len(present)} day(s) of the lake with Spark")
        spark_started = time.perf_counter()
        rows = aggregate(spark, lake_path(settings), present, dedup=dedup)
        result.spark_seconds = time.perf_counter() - spark_started
        by_day: dict[dt.date, list[CourseDayRow]] = {d: [] for d in present}
        for row in rows:
            by_day[row.date].append(row)
        stage(f"writing {len(rows)} row(s) to Cassandra")
        for day in present:
            day_rows = sorted(by_day[day], key=lambda r: r.course_id)
            written, deleted = sink.replace_day(day, day_rows)
            done = DayResult(day, sum(r.count for r in day_rows), written, deleted)
            result.days.append(done)
            if on_day is not None:
                on_day(done)
    result.seconds = time.perf_counter() - started
    return result
