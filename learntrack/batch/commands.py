"""CLI commands of the nightly batch: ``learntrack batch``, ``query course(s)``.

Runs in the user's terminal. Like every stage's ``commands`` module, it declares its
commands by their path under ``learntrack`` (:data:`COMMANDS`; its groups in
:data:`GROUPS`: none, ``query`` is the query service's); :mod:`learntrack.cli`
registers them.
Bad arguments are click usage errors (one line, exit code 2); a batch that cannot
run (no lake data, Cassandra down) is a LearnTrack error (one line, exit code 1).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from learntrack.params import Cluster, Master, parse_day

console = Console()

#: Days ``query course`` shows when no range is given (ending today, UTC).
DEFAULT_QUERY_DAYS = 7


def batch_days(
    date: str | None, date_from: str | None, date_to: str | None, yesterday: bool
) -> list[dt.date]:
    """The days a ``batch`` invocation asks for (exactly one way of asking)."""
    from learntrack.batch import daily

    ways = sum(
        (date is not None, yesterday, date_from is not None or date_to is not None)
    )
    if ways != 1:
        msg = "give exactly one of --date D, --from D1 --to D2, --yesterday"
        raise typer.BadParameter(msg)
    if yesterday:
        return [daily.yesterday()]
    if date is not None:
        return [parse_day(date, "--date")]
    if date_from is None or date_to is None:
        raise typer.BadParameter("--from and --to go together")
    first, last = parse_day(date_from, "--from"), parse_day(date_to, "--to")
    try:
        return daily.day_range(first, last)
    except daily.BatchError as err:
        raise typer.BadParameter(str(err)) from None


def batch(  # noqa: PLR0917 - typer passes options as parameters
    date: Annotated[
        str | None, typer.Option("--date", help="One UTC day, YYYY-MM-DD.")
    ] = None,
    date_from: Annotated[
        str | None, typer.Option("--from", help="First day of a range (inclusive).")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day of a range (inclusive).")
    ] = None,
    yesterday: Annotated[
        bool, typer.Option("--yesterday", help="Yesterday (UTC): the nightly run.")
    ] = False,
    master: Master = None,
    cluster: Cluster = False,
    dedup: Annotated[
        bool,
        typer.Option(
            "--dedup",
            help="Count each eventId once (for lakes not written by the stream).",
        ),
    ] = False,
) -> None:
    """Aggregate days of the lake into Cassandra's daily course engagement.

    Re-running a day replaces its rows (late events are picked up that way).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from learntrack.batch.daily import DayResult, plan, run_batch
    from learntrack.config import get_settings
    from learntrack.errors import RetryableSinkError
    from learntrack.sinks.cassandra import CassandraEngagementSink

    days = batch_days(date, date_from, date_to, yesterday)
    settings = get_settings()
    present, missing = plan(settings, days)  # before Spark: fails in a second
    if missing:
        shown = ", ".join(str(d) for d in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""  # noqa: PLR2004
        console.print(
            f"[yellow]no lake data for {len(missing)} of {len(days)} day(s):[/] "
            f"{shown}{more} (left as they are in Cassandra)"
        )
    health = CassandraEngagementSink(settings).status()
    if not health.healthy:
        raise RetryableSinkError(f"cassandra is not reachable: {health.detail}")
    spark, owned = _spark(
        settings, settings.spark.cluster_master_url if cluster else master
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task("starting", total=len(present))

            def on_stage(line: str) -> None:
                progress.update(task, description=line)

            def on_day(day: DayResult) -> None:
                progress.update(task, advance=1, description=f"wrote {day.date}")

            result = run_batch(
                settings,
                spark,
                present,
                on_stage=on_stage,
                on_day=on_day,
                dedup=dedup,
            )
    finally:
        if owned:
            spark.stop()
    table = Table("day", "events", "rows written", "rows deleted", title="Daily batch")
    for d in result.days:
        table.add_row(
            str(d.date), f"{d.events:,}", f"{d.rows_written:,}", f"{d.rows_deleted:,}"
        )
    console.print(table)
    console.print(
        f"{len(result.days)} day(s), {result.events:,} events, "
        f"{result.rows_written:,} rows written, {result.rows_deleted:,} deleted "
        f"in {result.seconds:.1f} s (Spark {result.spark_seconds:.1f} s)"
    )


def _spark(settings: Any, master: str | None) -> tuple[Any, bool]:
    """A SparkSession, and whether this command started it (and must stop it)."""
    from pyspark.sql import SparkSession

    from learntrack.spark import build_spark

    owned = SparkSession.getActiveSession() is None
    with console.status("starting Spark..."):
        return build_spark(settings, master), owned


def query_course(
    course: Annotated[str, typer.Argument(help="Course id, e.g. C001.")],
    date_from: Annotated[
        str | None,
        typer.Option("--from", help="First day (default: 6 days before --to)."),
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day (default: today, UTC).")
    ] = None,
) -> None:
    """Daily engagement of a course (from the nightly batch), newest first."""
    from learntrack.config import get_settings
    from learntrack.events import ID_PATTERN
    from learntrack.sinks.cassandra import read_course_engagement

    if not re.fullmatch(ID_PATTERN, course):
        raise typer.BadParameter(
            f"invalid course id {course!r}: letters, digits and _ . : @ - only",
            param_hint="COURSE",
        )
    last = parse_day(date_to, "--to") if date_to else dt.datetime.now(dt.UTC).date()
    first = (
        parse_day(date_from, "--from")
        if date_from
        else last - dt.timedelta(days=DEFAULT_QUERY_DAYS - 1)
    )
    if first > last:
        raise typer.BadParameter(f"--from {first} is after --to {last}")
    rows = read_course_engagement(get_settings(), course, first, last)
    if not rows:
        console.print(f"no daily engagement for {course} from {first} to {last}")
        return
    table = Table(title=f"{course}: {first} to {last}")
    for header in ("date", "events", "active", "quizzes", "per student"):
        table.add_column(header, justify="left" if header == "date" else "right")
    table.add_column("actions", no_wrap=True)
    for r in rows:
        acts = sorted(r["actions"].items(), key=lambda kv: (-kv[1], kv[0]))
        table.add_row(
            str(r["date"]),
            f"{r['count']:,}",
            f"{r['activeStudents']:,}",
            f"{r['quizAttempts']:,}",
            f"{r['eventsPerStudent']:.2f}",
            "\n".join(f"{a} {n:,}" for a, n in acts),
            end_section=True,
        )
    console.print(table)


def query_courses(
    date: Annotated[
        str | None,
        typer.Option("--date", help="The UTC day, YYYY-MM-DD (default: yesterday)."),
    ] = None,
) -> None:
    """Every course's engagement on one day (from the nightly batch), busiest first."""
    from learntrack.batch.daily import yesterday
    from learntrack.config import get_settings
    from learntrack.sinks.cassandra import CassandraEngagementSink

    day = parse_day(date, "--date") if date else yesterday()
    sink = CassandraEngagementSink(get_settings())
    sink.open()
    try:
        rows = sink.day_engagement(day)
    finally:
        sink.close()
    if not rows:
        console.print(f"no engagement on {day}: run `learntrack batch --date {day}`")
        return
    rows.sort(key=lambda r: (-r["count"], r["courseId"]))
    table = Table(title=f"Course engagement on {day}")
    for header in (
        "course",
        "events",
        "active",
        "quizzes",
        "per student",
        "top action",
    ):
        table.add_column(header, justify="left" if header == "course" else "right")
    for r in rows:
        top = max(r["actions"].items(), key=lambda kv: (kv[1], kv[0]), default=("-", 0))
        table.add_row(
            r["courseId"],
            f"{r['count']:,}",
            f"{r['activeStudents']:,}",
            f"{r['quizAttempts']:,}",
            f"{r['eventsPerStudent']:.2f}",
            f"{top[0]} {top[1]:,}",
        )
    console.print(table)
    console.print(
        f"{len(rows)} courses, {sum(r['count'] for r in rows):,} events "
        f"(one course over time: learntrack query course C --from D1 --to D2)"
    )


#: Command groups this module introduces (none: ``query`` is the query service's).
GROUPS: dict[str, typer.Typer] = {}

#: This module's commands, by their path under ``learntrack``, in help order.
COMMANDS = {
    "batch": batch,
    "query course": query_course,
    "query courses": query_courses,
}
