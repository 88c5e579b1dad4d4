"""Bench section ``batch``: one simulated day of >= 5M events, lake -> Cassandra.

Runs in the ``learntrack bench`` process, which is also the Spark driver
(:meth:`BenchContext.get_spark`, ``local[2]`` on the bench stack) and the DuckDB
host (in-process, on the same cores).

1. The day is written **straight into the bench stack's lake** with pyarrow, in
   exactly the layout and schema :class:`learntrack.sinks.lake.LakeSink` writes
   (``<lake>/date=D/batch=B/part-*.snappy.parquet``, the lake columns, timestamps
   as INT96 like Spark's default, Spark's schema in the file metadata), from a
   vectorised synthetic population (heavy-tailed students, ~50 courses of Zipf-like
   popularity, the generator's action mix, a daily rhythm). Streaming 5M events
   would exceed the local broker's in-memory limits and measure the stream, not the
   batch.
2. The nightly run as users run it: ``learntrack batch --date D`` in a process of
   its own (its own Spark session, started cold), ``runs`` times, timed from
   spawn to exit. Not in a quick run, which leaves out what starts a process anew.
   Then :func:`learntrack.batch.daily.run_batch` in the bench's Spark session:
   a first run (it warms the session), ``runs`` warm runs (each replaces the
   day's rows, as a re-run does), and ``runs`` with ``dedup=True``
   (``learntrack batch --dedup``: each eventId counted once, for lakes not
   written by the stream) to show what that costs.
3. DuckDB computes the same aggregate on the same Parquet files; the result is
   compared course by course with the rows read back from Cassandra and with the
   generator's own counts.

The day folder and the day's Cassandra rows are removed at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core import BenchContext, Figure, Section
from bench.queries import (
    ACTIONS,
    DEVICES,
    HOUR_MS,
    Events,
    Population,
    draw_events,
    population,
    uuid_chars,
)
from learntrack.errors import LearnTrackError
from learntrack.events import DEFAULT_REGIONS, Action

#: The simulated day: a leap day long past, which no other section writes.
DAY = dt.date(2024, 2, 29)
#: Stream batches the day is spread over, and part files per batch (local[2]).
BATCHES = 20
PARTS = 2
SPARK_VERSION = "4.3.0"


@dataclass(frozen=True)
class Sizes:
    """How big the day is."""

    events: int
    students: int
    courses: int = 50


def sizes(quick: bool) -> Sizes:
    """Full: 5M events of 200k students; quick: 200k of 10k."""
    return Sizes(200_000, 10_000) if quick else Sizes(5_000_000, 200_000)


# -- writing the day ---------------------------------------------------------------
def _spark_metadata() -> dict[bytes, bytes]:
    """The file metadata Spark writes: its version and the row schema (JSON)."""
    from pyspark.sql import types as T  # noqa: N812

    from learntrack.events import spark_schema
    from learntrack.sinks.lake import LAKE_COLUMNS

    fields = {f.name: f for f in spark_schema().fields}
    schema = T.StructType(
        [T.StructField(c, fields[c].dataType, True) for c in LAKE_COLUMNS]
    )
    return {
        b"org.apache.spark.version": SPARK_VERSION.encode(),
        b"org.apache.spark.sql.parquet.row.metadata": schema.json().encode(),
    }


def day_table(rng: np.random.Generator, pop: Population, ev: Events) -> Any:
    """The events as an Arrow table with the lake's columns, in event-time order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from learntrack.sinks.lake import lake_schema

    order = np.argsort(ev.ts_ms, kind="stable")
    student, course, action = ev.student[order], ev.course[order], ev.action[order]
    ts_ms, duration, score = ev.ts_ms[order], ev.duration_ms[order], ev.score[order]
    n = len(order)
    chars = uuid_chars(rng, n)
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    event_id = pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())]
    )
    student_id = pc.take(pa.array(pop.ids), pa.array(student))
    session_no = pa.array(ts_ms // (2 * HOUR_MS)).cast(pa.string())
    columns = {
        "eventId": event_id,
        "studentId": student_id,
        "courseId": pc.take(pa.array(pop.course_ids), pa.array(course)),
        "action": pc.take(pa.array(ACTIONS), pa.array(action)),
        "timestamp": pa.array(ts_ms * 1000, type=pa.timestamp("us", tz="UTC")),
        "region": pc.take(
            pa.array(list(DEFAULT_REGIONS)), pa.array(pop.region[student])
        ),
        "sessionId": pc.binary_join_element_wise(student_id, session_no, "-"),
        "device": pc.take(pa.array(list(DEVICES)), pa.array(pop.device[student])),
        "durationMs": pa.array(duration, type=pa.int64(), mask=duration < 0),
        "score": pa.array(score, type=pa.float64(), mask=np.isnan(score)),
        "schemaVersion": pa.array(np.ones(n, dtype=np.int64)),
    }
    # The lake's other columns (xAPI's verb, objectId, registration) are empty, as
    # in the lake of a stream fed only by the SDK; columns in the lake's order.
    schema = lake_schema()
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema})


def write_day(lake: Path, day: dt.date, table: Any) -> tuple[int, int]:
    """Write ``table`` as the day's folder: BATCHES batches of PARTS files each.

    Returns (files, bytes). Replaces an earlier copy of the day.
    """
    import pyarrow.parquet as pq

    folder = lake / f"date={day.isoformat()}"
    shutil.rmtree(folder, ignore_errors=True)
    table = table.replace_schema_metadata(_spark_metadata())
    bounds = np.linspace(0, table.num_rows, BATCHES * PARTS + 1).astype(int).tolist()
    files = size = 0
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        batch, part = divmod(i, PARTS)
        target = folder / f"batch={batch}"
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"part-{part:05d}-{uuid.uuid4()}.c000.snappy.parquet"
        pq.write_table(
            table.slice(lo, hi - lo),
            path,
            compression="snappy",
            use_deprecated_int96_timestamps=True,
        )
        files += 1
        size += path.stat().st_size
    return files, size


# -- the same aggregate with DuckDB ---------------------------------------------------
DUCKDB_SQL = """
WITH ev AS (SELECT studentId, courseId, action FROM read_parquet(?))
SELECT courseId,
       count(*) AS count,
       count(DISTINCT studentId) AS active,
       count(*) FILTER (WHERE action = 'quiz_attempt') AS quiz,
       count(*) / count(DISTINCT studentId) AS per_student,
       histogram(action) AS actions
FROM ev
GROUP BY courseId
ORDER BY courseId
"""


def duckdb_aggregate(lake: Path, day: dt.date) -> dict[str, dict[str, Any]]:
    """Per course of ``day``: count, active, quiz, per_student, actions (DuckDB).

    Runs in the bench process, a fresh in-memory connection each call (DuckDB's
    default threads: one per core).
    """
    import duckdb

    glob = str(lake / f"date={day.isoformat()}" / "batch=*" / "*.parquet")
    with duckdb.connect() as con:
        rows = con.execute(DUCKDB_SQL, [glob]).fetchall()
    return {
        str(course): {
            "count": int(count),
            "active": int(active),
            "quiz": int(quiz),
            "per_student": float(per),
            "actions": {str(k): int(v) for k, v in dict(actions).items()},
        }
        for course, count, active, quiz, per, actions in rows
    }


def truth(pop: Population, ev: Events) -> dict[str, dict[str, Any]]:
    """The generator's own per-course counts (count, active students, actions)."""
    out: dict[str, dict[str, Any]] = {}
    n_courses = len(pop.course_ids)
    counts = np.bincount(ev.course, minlength=n_courses)
    pairs = np.unique(ev.course.astype(np.int64) * pop.size + ev.student)
    active = np.bincount(pairs // pop.size, minlength=n_courses)
    per_action = np.zeros((n_courses, len(ACTIONS)), dtype=np.int64)
    np.add.at(per_action, (ev.course, ev.action), 1)
    for c, course in enumerate(pop.course_ids):
        if counts[c]:
            out[course] = {
                "count": int(counts[c]),
                "active": int(active[c]),
                "quiz": int(per_action[c, ACTIONS.index(Action.QUIZ_ATTEMPT.value)]),
                "actions": {
                    a: int(k) for a, k in zip(ACTIONS, per_action[c], strict=True) if k
                },
            }
    return out


def compare(
    name: str, got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]
) -> list[str]:
    """Differences of ``got`` from ``want`` (count, active, quiz, actions), in words."""
    problems = []
    for course in sorted(set(got) | set(want)):
        g, w = got.get(course), want.get(course)
        if g is None or w is None:
            problems.append(f"{name}: {course} {'missing' if g is None else 'extra'}")
            continue
        for key in ("count", "active", "quiz", "actions"):
            if g[key] != w[key]:
                problems.append(f"{name}: {course} {key} {g[key]} != {w[key]}")
    return problems


def _cassandra_rows(settings: Any, day: dt.date) -> dict[str, dict[str, Any]]:
    """The day's rows read back from Cassandra, shaped as :func:`duckdb_aggregate`."""
    from learntrack.sinks.cassandra import CassandraEngagementSink

    with CassandraEngagementSink(settings) as sink:
        rows = sink.day_engagement(day)
    return {
        r["courseId"]: {
            "count": r["count"],
            "active": r["activeStudents"],
            "quiz": r["quizAttempts"],
            "per_student": r["eventsPerStudent"],
            "actions": r["actions"],
        }
        for r in rows
    }


def _remove(settings: Any, lake: Path, day: dt.date) -> None:
    """Delete the day's lake folder and its Cassandra rows (and day index)."""
    from learntrack.sinks.cassandra import CassandraEngagementSink

    shutil.rmtree(lake / f"date={day.isoformat()}", ignore_errors=True)
    with CassandraEngagementSink(settings) as sink:
        sink.ensure_schema()
        sink.replace_day(day, [])


def nightly_runs(ctx: BenchContext, day: dt.date, runs: int) -> list[float]:
    """Seconds of ``learntrack batch --date DAY``, each in a new process.

    Spawn to exit: Python's imports, a cold Spark session, the batch, its stop.
    The command's output goes to ``<work>/batch/nightly-N.log``.
    """
    env = {**os.environ, **ctx.env}
    seconds = []
    for n in range(1, runs + 1):
        ctx.report(f"[batch] learntrack batch --date {day}, new process {n}/{runs}")
        log = ctx.work_dir / "batch" / f"nightly-{n}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with log.open("w") as out:
            code = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
                [sys.executable, "-m", "learntrack.cli", "batch", "--date", str(day)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=900,
            ).returncode
        seconds.append(time.perf_counter() - started)
        if code != 0:
            tail = log.read_text().strip().splitlines()[-3:]
            msg = f"learntrack batch exited {code}: {' / '.join(tail)}"
            raise LearnTrackError(msg)
    return seconds


def _session_runs(ctx: BenchContext, spark: Any) -> tuple[Any, list[Any], list[Any]]:
    """run_batch in the bench's session: the first run, warm runs, --dedup runs."""
    from learntrack.batch.daily import run_batch

    ctx.report("[batch] run_batch, first run in this session")
    first = run_batch(ctx.settings, spark, [DAY])
    warm, dedup = [], []
    for i in range(ctx.runs):
        ctx.report(f"[batch] run_batch, warm {i + 1}/{ctx.runs}")
        warm.append(run_batch(ctx.settings, spark, [DAY]))
    for i in range(ctx.runs):
        ctx.report(f"[batch] run_batch --dedup, warm {i + 1}/{ctx.runs}")
        dedup.append(run_batch(ctx.settings, spark, [DAY], dedup=True))
    return first, warm, dedup


# -- the section -------------------------------------------------------------------
def run(ctx: BenchContext) -> Section:
    """Write the day, time the batch (new process, warm) and DuckDB, compare."""
    from learntrack.sinks.lake import lake_path

    size = sizes(ctx.quick)
    settings = ctx.settings
    lake = lake_path(settings)
    section = Section(
        "batch",
        f"Nightly batch: one simulated day of {size.events:,} events, "
        "lake to Cassandra (and DuckDB on the same files)",
    )
    ctx.report(f"[batch] writing {size.events:,} events of {DAY} into the lake")
    started = time.perf_counter()
    rng = np.random.default_rng(2024)
    pop = population(rng, size.students, size.courses)
    midnight = dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.UTC)
    day_start_ms = int(midnight.timestamp()) * 1000
    ev = draw_events(rng, pop, size.events, day_start_ms, 1)
    files, nbytes = write_day(lake, DAY, day_table(rng, pop, ev))
    write_s = time.perf_counter() - started
    try:
        nightly = [] if ctx.quick else nightly_runs(ctx, DAY, ctx.runs)
        spark_start_s = None
        if ctx.spark is None:
            ctx.report("[batch] starting Spark")
            spark_start_s = time.perf_counter()
            ctx.get_spark()
            spark_start_s = time.perf_counter() - spark_start_s
        spark = ctx.get_spark()
        cold, warm, dedup = _session_runs(ctx, spark)
        stored = _cassandra_rows(settings, DAY)
        ctx.report("[batch] DuckDB")
        duck_aggregate = duckdb_aggregate(lake, DAY)  # warm-up (and the result)
        duck_s = []
        for _ in range(ctx.runs):
            t0 = time.perf_counter()
            duckdb_aggregate(lake, DAY)
            duck_s.append(time.perf_counter() - t0)
    finally:
        _remove(settings, lake, DAY)

    expected = truth(pop, ev)
    problems = (
        compare("Cassandra vs generator", stored, expected)
        + compare("DuckDB vs generator", duck_aggregate, expected)
        + compare("Cassandra vs DuckDB", stored, duck_aggregate)
    )
    per_student_diff = max(
        (
            abs(stored[c]["per_student"] - d["per_student"])
            for c, d in duck_aggregate.items()
            if c in stored
        ),
        default=0.0,
    )
    spark_agg = [w.spark_seconds for w in warm]
    ratios = [s / d for s, d in zip(spark_agg, duck_s, strict=True)]
    rate = size.events / statistics.median(w.seconds for w in warm)
    new_process = (
        [
            Figure.of(
                "learntrack batch --date DAY, a new process (cold)",
                "s",
                nightly,
                "the nightly run as users run it: lake -> Spark (local[2]) -> "
                "Cassandra, wall time from spawn to exit (imports, a new Spark "
                "session, the batch)",
                at_most=60,
            )
        ]
        if nightly
        else []
    )  # not in a quick run
    section.figures = [
        *new_process,
        Figure.of(
            "run_batch, warm",
            "s",
            [w.seconds for w in warm],
            f"the same day again ({ctx.runs} runs; each replaces the day's rows); "
            f"{rate:,.0f} events/s",
            at_most=60,
        ),
        Figure.of(
            "Spark aggregate inside run_batch (warm)",
            "s",
            spark_agg,
            "read + one-pass per-course aggregate (count, distinct students, "
            "a conditional count per action), collected",
        ),
        Figure.of(
            "run_batch --dedup (warm)",
            "s",
            [d.seconds for d in dedup],
            "the same, each eventId counted once (a shuffle of every event; for "
            "lakes not written by the stream, which writes each event once)",
        ),
        Figure.of(
            "DuckDB, same aggregate",
            "s",
            duck_s,
            "same files, same aggregate; in-process, one thread per core; "
            "after one warm-up run",
        ),
        Figure.of(
            "Spark / DuckDB (aggregate, warm)",
            "x",
            ratios,
            "per run: Spark's aggregate time over DuckDB's",
            at_most=5,
        ),
    ]
    agreement = (
        f"**Results agree**: Cassandra's {len(stored)} rows for {DAY}, DuckDB's "
        f"{len(duck_aggregate)} courses and the generator's own counts are equal, "
        "course by course, on events, active students, quiz attempts and per-action "
        f"counts; events per student differ by at most {per_student_diff:.1e}."
        if not problems
        else f"**Results disagree** ({len(problems)} differences): "
        + "; ".join(problems[:20])
        + ("; ..." if len(problems) > 20 else "")  # noqa: PLR2004
    )
    section.text = [
        f"The day ({DAY}, {size.events:,} events of {size.students:,} students over "
        f"{size.courses} courses) was written straight into the bench stack's lake "
        "with pyarrow, in the layout and schema the stream's lake sink writes "
        f"({BATCHES} batch folders of {PARTS} snappy Parquet files, INT96 "
        f"timestamps): {files} files, {nbytes / 2**20:,.0f} MiB, written in "
        f"{write_s:.1f} s (generation included). It was not streamed: a full-size "
        "day (5M events) would exceed the local broker's in-memory limits.",
        "",
        (
            f"`learntrack batch --date {DAY}` in a new process: "
            + ", ".join(f"{x:.1f} s" for x in nightly)
            if nightly
            else "`learntrack batch` in a new process: not in a quick run"
        )
        + ". In the bench's Spark session, run_batch: the first run "
        f"{cold.seconds:.1f} s (Spark {cold.spark_seconds:.1f} s, "
        f"{cold.rows_written} rows written; one run, it warms the session); warm "
        + ", ".join(f"{w.seconds:.1f} s (Spark {w.spark_seconds:.1f} s)" for w in warm)
        + ". "
        + (
            f"Starting the SparkSession took {spark_start_s:.1f} s (not included)."
            if spark_start_s is not None
            else "The SparkSession was already running (started by an earlier section)."
        ),
        "",
        agreement,
        "",
        "Reproduce: `learntrack bench --only batch` (`--quick`: "
        f"{sizes(True).events:,} events).",
    ]
    return section
