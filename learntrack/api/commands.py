"""CLI commands of the query service: api, query, profile, alerts, summary.

Runs in the user's terminal. Like every stage's ``commands`` module, it declares its
command groups (:data:`GROUPS`) and its commands by their path under ``learntrack``
(:data:`COMMANDS`); :mod:`learntrack.cli` registers them. ``learntrack api`` serves
:func:`learntrack.api.app.create_app` under uvicorn; every other command asks the
same :class:`learntrack.api.service.QueryService` the API uses and prints rich
tables, so a terminal and an app get the same answers. An unknown student is a
one-line error (exit 1), a bad value a one-line usage error (exit 2).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from learntrack.api.service import (
    MAX_ALERTS,
    MAX_LATEST,
    MAX_LEADERBOARD,
    InvalidQueryError,
    QueryError,
    QueryService,
)
from learntrack.config import get_settings
from learntrack.errors import ConfigError, PortInUseError
from learntrack.params import command_group, parse_duration, parse_since

console = Console()


@contextmanager
def _service() -> Iterator[QueryService]:
    """A service for one command; store and value errors become one-liners."""
    from learntrack.sinks import mongo, redis

    service = QueryService(get_settings())
    try:
        yield service
    except InvalidQueryError as err:
        raise typer.BadParameter(str(err)) from None
    except (*mongo.unavailable_errors(), *redis.unavailable_errors()) as err:
        store = "MongoDB" if isinstance(err, mongo.unavailable_errors()) else "Redis"
        msg = f"{store} is unavailable ({type(err).__name__}): is the stack up?"
        raise QueryError(msg) from err
    finally:
        service.close()


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(value: object) -> str:
    return "-" if value is None else str(value)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or a one-line error (port taken, bad host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        msg = f"cannot listen on {host}:{port}: {err.strerror}"
        raise ConfigError(msg) from None
    family, _, proto, _, address = infos[0]
    # The protocol must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted
    # connections only then, and without it every response waited ~40 ms for the
    # client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            msg = (
                f"port {port} on {host} is already in use: stop that program or "
                "choose another port (--port or LEARNTRACK_API__PORT)"
            )
            raise PortInUseError(msg) from None
        msg = f"cannot listen on {host}:{port}: {err.strerror}"
        raise ConfigError(msg) from None
    return sock


def api(
    host: Annotated[
        str | None, typer.Option(help="Interface (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default 8000).")
    ] = None,
    dashboard_key: Annotated[
        bool,
        typer.Option(
            "--dashboard-key",
            help="Print the /dashboard link with the read key in it.",
        ),
    ] = False,
) -> None:
    """Serve the query service (HTTP + OpenAPI at /docs) until Ctrl-C."""
    import uvicorn

    from learntrack.api.app import create_app

    settings = get_settings()
    host = host or settings.api.host
    port = port or settings.api.port
    application = create_app(settings)  # ConfigError if the keys are missing
    sock = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    console.print(f"LearnTrack API on {url}  (docs: {url}/docs)", highlight=False)
    key = settings.api.read_key
    fragment = (
        f"#key={key.get_secret_value()}"
        if dashboard_key and key is not None
        else "#key=<LEARNTRACK_API__READ_KEY>"
    )
    console.print(f"dashboard: {url}/dashboard{fragment}", highlight=False)
    server = uvicorn.Server(
        uvicorn.Config(application, log_level="info", access_log=False)
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    console.print("API stopped")


# -- query ----------------------------------------------------------------
def latest(
    student: Annotated[str, typer.Argument(help="Student id.")],
    limit: Annotated[int, typer.Option(min=1, max=MAX_LATEST)] = 20,
) -> None:
    """A student's latest activities, newest first."""
    with _service() as service:
        result = service.latest_activities(student, limit)
    table = Table(
        "time (event)",
        "course",
        "action",
        "region",
        "session",
        "device",
        title=f"Latest activity of {student}",
    )
    for a in result.activities:
        table.add_row(
            _when(a.timestamp),
            a.courseId,
            a.action,
            a.region,
            _show(a.sessionId),
            _show(a.device),
        )
    console.print(table)
    if not result.activities:
        console.print("no activity yet")


def engagement(student: Annotated[str, typer.Argument(help="Student id.")]) -> None:
    """A student's engagement score (decayed to now), rank and recent activity."""
    with _service() as service:
        e = service.engagement(student)
    table = Table("what", "value", title=f"Engagement of {student}")
    table.add_row("score (now)", f"{e.score:,.2f}")
    table.add_row("global rank", _show(e.rank))
    table.add_row("events in the last hour", f"{e.recent.lastHour:,}")
    table.add_row("events in the last 24 h", f"{e.recent.lastDay:,}")
    table.add_row("events in total", f"{e.totalEvents:,}")
    table.add_row("alerts", f"{e.alerts:,}")
    for course, score in sorted(e.courses.items(), key=lambda kv: -kv[1]):
        table.add_row(f"score in {course}", f"{score:,.2f}")
    console.print(table)


def leaderboard(
    course: Annotated[
        str | None, typer.Option(help="A course id (default: global).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LEADERBOARD)] = 10,
) -> None:
    """The most engaged students, globally or in one course."""
    with _service() as service:
        board = service.leaderboard(course, limit)
    title = f"Most engaged in {course}" if course else "Most engaged students"
    table = Table("#", "student", "name", "score", title=title)
    for entry in board.entries:
        table.add_row(
            str(entry.rank),
            entry.studentId,
            _show(entry.name),
            f"{entry.score:,.2f}",
        )
    console.print(table)
    if not board.entries:
        console.print("no scores yet")


# -- profile --------------------------------------------------------------
def profile_show(
    student: Annotated[str, typer.Argument(help="Student id.")],
) -> None:
    """A student's profile and activity summary."""
    with _service() as service:
        s = service.student(student)
    table = Table("field", "value", title=f"Student {student}")
    table.add_row("name", _show(s.name))
    table.add_row("email", _show(s.email))
    table.add_row("speciality", _show(s.speciality))
    table.add_row("level", _show(s.studentLevel))
    table.add_row("progress", "-" if s.progress is None else f"{s.progress:g} %")
    table.add_row("last updated", _when(s.lastUpdated))
    if s.activity is not None:
        table.add_row("events", f"{s.activity.total:,}")
        table.add_row("last activity", _when(s.activity.lastAt))
        table.add_row("last course / region", f"{s.activity.lastCourse or '-'} / "
                      f"{s.activity.lastRegion or '-'}")  # fmt: skip
    console.print(table)


def profile_update(  # noqa: PLR0917 - typer options are parameters
    student: Annotated[str, typer.Argument(help="Student id.")],
    progress: Annotated[float | None, typer.Option(help="0 to 100.")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option()] = None,
    speciality: Annotated[str | None, typer.Option()] = None,
    level: Annotated[str | None, typer.Option(help="studentLevel.")] = None,
) -> None:
    """Change profile fields (at least one); sets lastUpdated."""
    from learntrack.api.models import StudentPatch

    given = {
        "progress": progress,
        "email": email,
        "name": name,
        "speciality": speciality,
        "studentLevel": level,
    }
    try:
        patch = StudentPatch(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        text = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'profile'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise typer.BadParameter(text) from None
    with _service() as service:
        s = service.update_student(student, patch)
    changed = ", ".join(sorted(patch.changes()))
    console.print(f"updated {s.studentId}: {changed} (at {_when(s.lastUpdated)})")


# -- alerts ---------------------------------------------------------------
def alerts(
    since: Annotated[
        str | None,
        typer.Option(help="2h, 7d (that long ago) or an ISO date-time."),
    ] = None,
    student: Annotated[str | None, typer.Option(help="Only this student.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_ALERTS)] = 50,
) -> None:
    """Multi-region alerts, newest first."""
    start = parse_since(since) if since else None
    with _service() as service:
        found = service.alerts(start, student, limit)
    table = Table("time (event)", "student", "kind", "regions", "gap", title="Alerts")
    for a in found.alerts:
        table.add_row(
            _when(a.timestamp),
            a.studentId,
            a.kind,
            " -> ".join([a.first.region, a.second.region]),
            f"{a.gapSeconds:,.0f} s",
        )
    console.print(table)
    if not found.alerts:
        console.print("no alerts")


def query_multi_region(
    window: Annotated[
        str, typer.Option(help="Two regions within this span (e.g. 30m).")
    ] = "30m",
    since: Annotated[
        str | None,
        typer.Option(help="Only activity since (e.g. 24h, or an ISO date-time)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Students who acted from two or more regions within the window (graph)."""
    span = parse_duration(window)
    if span.total_seconds() <= 0:
        raise typer.BadParameter("--window must be positive")
    start = parse_since(since) if since else None
    with _service() as service:
        found = service.multi_region(span.total_seconds(), start, limit)
    if as_json:
        console.print_json(json.dumps(found))
        return
    table = Table(
        "student", "regions", "switches", "closest switch (UTC)", "gap", "events",
        title=f"Students in two or more regions within {window}",
    )  # fmt: skip
    for row in found:
        best = min(row["evidence"], key=lambda e: e["gapS"])
        table.add_row(
            row["studentId"],
            " ".join(row["regions"]),
            str(len(row["evidence"])),
            f"{best['prevAt'][:16]} {best['prevRegion']} -> "
            f"{best['at'][11:16]} {best['region']}",
            f"{best['gapS'] / 60:.1f} min",
            f"{best['prevEventId'][:8]}.. {best['eventId'][:8]}..",
        )
    console.print(table)
    if found:
        console.print("full event ids: add --json")
    console.print(f"{len(found):,} students")


def summary(
    top: Annotated[int, typer.Option(min=1, max=100, help="Leaderboard size.")] = 10,
) -> None:
    """What the stream has produced: events, students, top engaged students, DLQ."""
    with _service() as service:
        now = service.summary(top)
    head = Table("what", "count", title="LearnTrack now")
    head.add_row("events stored (MongoDB activities)", f"{now['events']:,}")
    head.add_row("students with activity", f"{now['activeStudents']:,}")
    head.add_row("records in the activity topic", f"{now['activityTopic']:,}")
    head.add_row("dead-lettered records (DLQ topic)", f"{now['deadLetters']:,}")
    console.print(head)
    board = Table("#", "student", "name", "events", "level", title="Most engaged")
    for rank, leader in enumerate(now["leaders"], 1):
        doc = leader["profile"]
        board.add_row(
            str(rank),
            leader["studentId"],
            str(doc.get("name", "-")),
            f"{doc.get('activity', {}).get('total', 0):,}",
            str(doc.get("studentLevel", "-")),
        )
    console.print(board)


#: Command groups this module introduces: name -> the group (its help, its options).
GROUPS = {
    "query": command_group("Ask the stores what apps, teachers and analysts ask."),
    "profile": command_group("Show and change student profiles."),
}

#: This module's commands, by their path under ``learntrack``, in help order.
COMMANDS = {
    "api": api,
    "query latest": latest,
    "query engagement": engagement,
    "query leaderboard": leaderboard,
    "query multi-region": query_multi_region,
    "profile show": profile_show,
    "profile update": profile_update,
    "alerts": alerts,
    "summary": summary,
}
