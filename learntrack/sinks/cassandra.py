"""Cassandra: daily course engagement, its schema, and its reads.

Runs in the nightly batch's driver process (schema creation and writes, called by
:mod:`learntrack.batch.daily`), and in the API process and the CLI (reads through
:func:`read_course_engagement`, health through :class:`CassandraEngagementSink`).
Nothing connects at import time; the sink holds picklable settings only until
:meth:`CassandraEngagementSink.open`.

One table answers "how engaged was course C on day D": ``course_engagement``,
partitioned by ``courseid``, clustered by ``date`` (a CQL ``date``) newest first: the
design document's table (``courseid text, date date, count int``) with more
columns. Its columns are defined once (:data:`ENGAGEMENT`); the DDL is created with
``IF NOT EXISTS`` (Cassandra 5.0 locally and in compose, native protocol v5).
Writes are idempotent:
a row is keyed by (course, day), and :meth:`CassandraEngagementSink.replace_day`
makes a day hold exactly the given rows, deleting those of courses that no longer
have events that day. Cassandra cannot list the partitions holding a given day, so a
small index table, ``course_engagement_days`` (day -> course ids), remembers which
courses were written for each day.
"""

from __future__ import annotations

import datetime as dt
import re
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from learntrack.config import Settings
from learntrack.errors import FatalSinkError, RetryableSinkError, SinkError
from learntrack.sinks.base import Sink, SinkStatus

ENGAGEMENT_TABLE = "course_engagement"
DAYS_TABLE = "course_engagement_days"
RELEASE_QUERY = "SELECT release_version FROM system.local"
#: Replication of the keyspace LearnTrack creates (one node, locally and in compose).
REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
#: Requests in flight per ``execute_concurrent_with_args`` call.
CONCURRENCY = 32


@dataclass(frozen=True)
class Column:
    """One column and its CQL type."""

    name: str
    cql_type: str


@dataclass(frozen=True)
class TableSpec:
    """A table: columns, partition key, clustering columns with their order."""

    name: str
    columns: tuple[Column, ...]
    partition_key: tuple[str, ...]
    clustering: tuple[tuple[str, str], ...] = ()

    @property
    def primary_key(self) -> tuple[str, ...]:
        """Partition key then clustering columns."""
        return self.partition_key + tuple(name for name, _order in self.clustering)

    def create_cql(self, keyspace: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for this table in ``keyspace``."""
        cols = ", ".join(f"{c.name} {c.cql_type}" for c in self.columns)
        partition = ", ".join(self.partition_key)
        if len(self.partition_key) > 1:
            partition = f"({partition})"
        key = ", ".join([partition, *(name for name, _o in self.clustering)])
        cql = (
            f"CREATE TABLE IF NOT EXISTS {keyspace}.{self.name} "
            f"({cols}, PRIMARY KEY ({key}))"
        )
        if self.clustering:
            order = ", ".join(f"{name} {o}" for name, o in self.clustering)
            cql += f" WITH CLUSTERING ORDER BY ({order})"
        return cql


#: The day a row describes (UTC).
DAY = Column("date", "date")

#: Daily engagement of one course (original names kept: courseid, date, count).
ENGAGEMENT = TableSpec(
    ENGAGEMENT_TABLE,
    (
        Column("courseid", "text"),
        DAY,
        Column("count", "int"),
        Column("active_students", "bigint"),
        Column("quiz_attempts", "bigint"),
        Column("events_per_student", "double"),
        Column("actions", "map<text, bigint>"),
    ),
    partition_key=("courseid",),
    clustering=(("date", "DESC"),),
)

#: Which courses have a row for a day: without it, listing them would scan every
#: course's partition.
DAYS = TableSpec(
    DAYS_TABLE,
    (DAY, Column("courseid", "text")),
    partition_key=("date",),
    clustering=(("courseid", "ASC"),),
)

TABLES = (ENGAGEMENT, DAYS)
_COLUMNS = ", ".join(c.name for c in ENGAGEMENT.columns)


def keyspace_cql(keyspace: str) -> str:
    """``CREATE KEYSPACE IF NOT EXISTS`` for ``keyspace``."""
    return f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {REPLICATION}"


def schema_cql(keyspace: str) -> list[str]:
    """Every DDL statement of the schema, in order."""
    return [keyspace_cql(keyspace)] + [t.create_cql(keyspace) for t in TABLES]


def server_version(session: Any) -> str:
    """The connected server's release version (one query)."""
    with _errors("read the server version"):
        row = session.execute(RELEASE_QUERY).one()
    return str(row.release_version) if row is not None else ""


def _existing_tables(session: Any, keyspace: str) -> set[str] | None:
    """Tables of ``keyspace``, or None when the keyspace does not exist."""
    if (
        session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces "
            "WHERE keyspace_name = %s",
            (keyspace,),
        ).one()
        is None
    ):
        return None
    rows = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
        (keyspace,),
    )
    return {str(r[0]) for r in rows}


def ensure_schema(session: Any, keyspace: str) -> list[str]:
    """Create the keyspace and tables that are missing; return what was created.

    Idempotent: every statement is ``IF NOT EXISTS``; what existed before is looked
    up first only to report what this call created.
    """
    with _errors("create the schema"):
        existing = _existing_tables(session, keyspace)
        created = [] if existing is not None else [keyspace]
        for statement in schema_cql(keyspace):
            session.execute(statement)
        created += [
            f"{keyspace}.{t.name}" for t in TABLES if t.name not in (existing or set())
        ]
    return created


KEYSPACE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def statements_cql(keyspace: str) -> dict[str, str]:
    """The statements the sink and the reads prepare, for ``keyspace``.

    CQL cannot bind identifiers, so the keyspace name is checked against the same
    pattern as ``LEARNTRACK_CASSANDRA__KEYSPACE`` before it is interpolated; every
    value is a bind marker.
    """
    if not KEYSPACE_PATTERN.match(keyspace):
        msg = f"invalid keyspace name {keyspace!r}"
        raise ValueError(msg)
    rows = f"{keyspace}.{ENGAGEMENT_TABLE}"
    days = f"{keyspace}.{DAYS_TABLE}"
    marks = ", ".join("?" for _ in ENGAGEMENT.columns)
    return {
        "upsert": f"INSERT INTO {rows} ({_COLUMNS}) VALUES ({marks})",  # noqa: S608
        "delete": f"DELETE FROM {rows} WHERE courseid = ? AND date = ?",  # noqa: S608
        "range": (
            f"SELECT {_COLUMNS} FROM {rows} "  # noqa: S608
            "WHERE courseid = ? AND date >= ? AND date <= ?"
        ),
        "index": f"INSERT INTO {days} (date, courseid) VALUES (?, ?)",  # noqa: S608
        "unindex": f"DELETE FROM {days} WHERE date = ? AND courseid = ?",  # noqa: S608
        "courses": f"SELECT courseid FROM {days} WHERE date = ?",  # noqa: S608
    }


def as_day(value: Any) -> dt.date:
    """A ``date`` column's value read back (the driver returns ``datetime.date``)."""
    if isinstance(value, dt.date):
        return value
    return value.date()  # cassandra.util.Date, for days outside datetime's range


@dataclass(frozen=True)
class CourseDayRow:
    """One row of ``course_engagement``: one course's engagement on one UTC day."""

    course_id: str
    date: dt.date
    count: int
    active_students: int
    quiz_attempts: int
    events_per_student: float
    actions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The shape the API and the CLI return (camelCase, as the event contract)."""
        return {
            "courseId": self.course_id,
            "date": self.date,
            "count": self.count,
            "activeStudents": self.active_students,
            "quizAttempts": self.quiz_attempts,
            "eventsPerStudent": self.events_per_student,
            "actions": dict(sorted(self.actions.items())),
        }


class CassandraEngagementSink(Sink):
    """Writes :class:`CourseDayRow` rows to ``course_engagement``; reports health.

    Built anywhere from picklable settings; :meth:`open` connects (the batch driver,
    or the API process for ``/health``). The schema is created on the first write,
    never by a health check.
    """

    name = "cassandra"

    def __init__(self, settings: Settings) -> None:
        """Keep the settings; no client until :meth:`open`."""
        super().__init__(settings)
        self.keyspace = settings.cassandra.keyspace
        self.release_version = ""
        self._cluster: Any = None
        self._session: Any = None
        self._statements: dict[str, Any] = {}

    # -- connection ----------------------------------------------------------------
    def open(self) -> None:
        """Connect (no keyspace: every statement names it); read the version."""
        if self._session is not None:
            return
        from learntrack.clients import cassandra_session

        with _errors(f"connect to {self._address()}"):
            self._cluster, self._session = cassandra_session(self.settings)
        try:
            self.release_version = server_version(self._session)
        except SinkError:
            self.close()
            raise

    def close(self) -> None:
        """Shut the driver's cluster down (idempotent)."""
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = self._session = None
        self._statements = {}

    def ping(self) -> None:
        """One round-trip to the server."""
        with _errors("ping"):
            self._require().execute(RELEASE_QUERY).one()

    def status(self) -> SinkStatus:
        """Healthy when the server answers; the detail names its version."""
        try:
            self.open()
            self.ping()
            detail = f"Cassandra {self.release_version}"
        except Exception as err:  # noqa: BLE001 - reported, not raised
            return SinkStatus(self.name, False, f"{type(err).__name__}: {err}"[:200])
        finally:
            self.close()
        return SinkStatus(self.name, True, detail)

    def _address(self) -> str:
        c = self.settings.cassandra
        return f"Cassandra at {','.join(c.contact_points)}:{c.port}"

    def _require(self) -> Any:
        if self._session is None:
            msg = "CassandraEngagementSink used before open()"
            raise FatalSinkError(msg)
        return self._session

    # -- schema ----------------------------------------------------------------------
    def ensure_schema(self) -> list[str]:
        """Create the keyspace and tables if missing (idempotent); prepare writes.

        Checks the server once per connection; returns what it created.
        """
        if self._statements:
            return []
        session = self._require()
        created = ensure_schema(session, self.keyspace)
        texts = statements_cql(self.keyspace)
        with _errors("prepare statements"):
            self._statements = {k: session.prepare(v) for k, v in texts.items()}
        return created

    # -- writes ----------------------------------------------------------------------
    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Upsert ``rows`` (:class:`CourseDayRow`) and their day-index entries.

        Returns how many rows were written.

        Idempotent: rows are keyed by (course, day), so a replay writes the same
        values again. ``batch_id`` is not needed for that and is ignored. Rows of
        other courses on the same days are left alone (see :meth:`replace_day`).
        """
        self.ensure_schema()
        self._run("index", [(r.date, r.course_id) for r in rows])
        self._run(
            "upsert",
            [
                (
                    r.course_id,
                    r.date,
                    r.count,
                    r.active_students,
                    r.quiz_attempts,
                    r.events_per_student,
                    r.actions,
                )
                for r in rows
            ],
        )
        return len(rows)

    def courses_on(self, day: dt.date) -> set[str]:
        """Course ids the day index holds for ``day``."""
        self.ensure_schema()
        with _errors(f"read the courses of {day}"):
            result = self._require().execute(self._statements["courses"], (day,))
            return {str(r.courseid) for r in result}

    def day_engagement(self, day: dt.date) -> list[dict[str, Any]]:
        """Every course's row for ``day``, shaped as :func:`read_course_engagement`."""
        courses = sorted(self.courses_on(day))
        session = self._require()
        return [
            row
            for course in courses
            for row in read_course_engagement(
                session, course, day, day, keyspace=self.keyspace
            )
        ]

    def replace_day(
        self, day: dt.date, rows: Sequence[CourseDayRow]
    ) -> tuple[int, int]:
        """Make ``day`` hold exactly ``rows``; return (rows written, rows deleted).

        Order matters for crash safety: the index is extended before the rows are
        written and shrunk only after stale rows are deleted, so an interrupted run
        leaves at worst extra index entries, which the next run of the day removes.
        """
        if any(r.date != day for r in rows):
            msg = f"replace_day({day}) was given rows of another day"
            raise FatalSinkError(msg)
        before = self.courses_on(day)
        written = self.write_batch(0, rows)
        stale = sorted(before - {r.course_id for r in rows})
        self._run("delete", [(course, day) for course in stale])
        self._run("unindex", [(day, course) for course in stale])
        return written, len(stale)

    def reset(self) -> None:
        """Empty both tables if they exist (the schema stays). Destructive."""
        self.open()
        try:
            session = self._require()
            with _errors("truncate"):
                existing = _existing_tables(session, self.keyspace)
                for table in TABLES:
                    if existing is not None and table.name in existing:
                        session.execute(f"TRUNCATE {self.keyspace}.{table.name}")
        finally:
            self.close()

    def _run(self, statement: str, params: list[tuple[Any, ...]]) -> None:
        """Execute a prepared statement once per parameter tuple, concurrently."""
        if not params:
            return
        from cassandra.concurrent import execute_concurrent_with_args

        with _errors(f"{statement} {len(params)} rows"):
            execute_concurrent_with_args(
                self._require(),
                self._statements[statement],
                params,
                concurrency=CONCURRENCY,
                raise_on_first_error=True,
            )


# -- reads -------------------------------------------------------------------------
def read_course_engagement(
    source: Settings | Any,
    course_id: str,
    date_from: dt.date,
    date_to: dt.date,
    *,
    keyspace: str | None = None,
) -> list[dict[str, Any]]:
    """Daily engagement of one course between two days (inclusive), newest first.

    Runs in the API process or the CLI. ``source`` is either the settings (a
    connection is opened and closed around the read) or a connected driver session
    (the caller's, kept open; its keyspace, or ``keyspace``, names the tables). Both
    bounds are inclusive. A schema that does not exist yet (the batch never ran)
    reads as no rows.

    Returns:
        One dict per day: ``courseId``, ``date`` (``datetime.date``), ``count``,
        ``activeStudents``, ``quizAttempts``, ``eventsPerStudent``, ``actions``
        (action -> events).

    Raises:
        ValueError: ``date_from`` is after ``date_to``, or a session without a
            keyspace was given and no ``keyspace``.
        RetryableSinkError: the server is down or timed out.
        FatalSinkError: any other failure of the read.
    """
    if date_from > date_to:
        msg = f"date_from {date_from} is after date_to {date_to}"
        raise ValueError(msg)
    if isinstance(source, Settings):
        from learntrack.clients import cassandra_session

        with _errors(f"connect to Cassandra for {course_id}"):
            cluster, session = cassandra_session(source)
        try:
            return _read(session, keyspace or source.cassandra.keyspace, course_id,
                         date_from, date_to)  # fmt: skip
        finally:
            cluster.shutdown()
    ks = keyspace or getattr(source, "keyspace", None)
    if not ks:
        msg = "the session has no keyspace: pass keyspace=..."
        raise ValueError(msg)
    return _read(source, ks, course_id, date_from, date_to)


#: Per open session (the API keeps one): keyspace -> prepared range read, so a read
#: is one round-trip once the first one found the table.
_PREPARED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _range_statement(session: Any, keyspace: str) -> Any | None:
    """The prepared range read; None while the table does not exist."""
    cached = _PREPARED.get(session, {}).get(keyspace)
    if cached is not None:
        return cached
    tables = _existing_tables(session, keyspace)
    if tables is None or ENGAGEMENT_TABLE not in tables:
        return None  # not cached: the batch may create it any time
    prepared = session.prepare(statements_cql(keyspace)["range"])
    _PREPARED.setdefault(session, {})[keyspace] = prepared
    return prepared


def _read(
    session: Any, keyspace: str, course_id: str, date_from: dt.date, date_to: dt.date
) -> list[dict[str, Any]]:
    with _errors(f"read {course_id}"):
        statement = _range_statement(session, keyspace)
        if statement is None:
            return []
        result = session.execute(statement, (course_id, date_from, date_to))
        rows = [_course_day(r) for r in result]
    # The table is clustered newest first; sorting again costs nothing and keeps the
    # promise on servers whose clustering order differs (a table made by hand).
    rows.sort(key=lambda r: r.date, reverse=True)
    return [r.as_dict() for r in rows]


def _course_day(row: Any) -> CourseDayRow:
    return CourseDayRow(
        course_id=str(row.courseid),
        date=as_day(row.date),
        count=int(row.count or 0),
        active_students=int(row.active_students or 0),
        quiz_attempts=int(row.quiz_attempts or 0),
        events_per_student=float(row.events_per_student or 0.0),
        actions={str(k): int(v) for k, v in (row.actions or {}).items()},
    )


# -- errors ------------------------------------------------------------------------
@contextmanager
def _errors(doing: str) -> Iterator[None]:
    """Turn driver errors into retryable or fatal sink errors (one line each)."""
    from cassandra import (
        DriverException,
        OperationTimedOut,
        ReadTimeout,
        Unavailable,
        WriteTimeout,
    )
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException
    from cassandra.protocol import ErrorMessage

    retryable: tuple[type[BaseException], ...] = (
        NoHostAvailable,
        OperationTimedOut,
        Unavailable,
        ReadTimeout,
        WriteTimeout,
        ConnectionException,
        ConnectionError,
        TimeoutError,
    )
    try:
        yield
    except SinkError:
        raise
    except retryable as err:
        msg = f"cassandra: could not {doing}: {_one_line(err)}"
        raise RetryableSinkError(msg) from err
    except (DriverException, ErrorMessage) as err:
        msg = f"cassandra: could not {doing}: {_one_line(err)}"
        raise FatalSinkError(msg) from err


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]
