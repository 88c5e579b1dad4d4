"""Graph sink (Bolt + Cypher): students, regions, access edges, switch activities.

Runs on executors with each task's per-student aggregates, so writes scale with the
distinct (student, region) pairs of a batch, not with its events. Model:
``(:Student {studentId, lastRegion, lastSeen, lastEventId})-[:ACCESSED_FROM
{firstSeen, lastSeen, count}]->(:Region {code})`` and, for every region switch
(within the batch, or from the student's last event of an earlier batch: the
Student node keeps it), ``(:Student)-[:PERFORMED]->(:Activity
{eventId, action, courseId, timestamp, region})-[:IN_REGION]->(:Region)``. A switch
Activity also holds the student's previous event (``prevEventId``, ``prevRegion``,
``prevAt``) and the gap ``gapS`` in seconds, so :func:`multi_region` finds "two
regions within W" with one filter per activity instead of comparing every pair of a
student's activities (the consecutive events of a student that change region are
enough: if two events of different regions are W apart, some consecutive pair
between them changes region within W).

Exactly once: a student's edges change only if ``Student.lastBatch < batch``, set in
the same transaction; activities are merged by eventId. Edges and activities are
written in region order, so two tasks writing at once take the shared Region
nodes' locks in the same order: they wait for each other, never deadlock. Times
are ISO-8601 UTC strings (``...Z``), which compare correctly as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from learntrack.clients import graph_driver
from learntrack.errors import FatalSinkError, RetryableSinkError
from learntrack.sinks.base import Part, Runs, StreamSink

CHUNK = 500
#: Nodes deleted per transaction by :func:`delete_nodes` (the graph sinks' resets).
RESET_CHUNK = 10_000

SCHEMA = (
    "CREATE CONSTRAINT student_id IF NOT EXISTS "
    "FOR (s:Student) REQUIRE s.studentId IS UNIQUE",
    "CREATE CONSTRAINT region_code IF NOT EXISTS "
    "FOR (r:Region) REQUIRE r.code IS UNIQUE",
    "CREATE CONSTRAINT activity_id IF NOT EXISTS "
    "FOR (a:Activity) REQUIRE a.eventId IS UNIQUE",
)

PREVIOUS = """
UNWIND $ids AS id
MATCH (s:Student {studentId: id})
WHERE coalesce(s.lastBatch, -1) < $batch AND s.lastSeen IS NOT NULL
RETURN s.studentId AS studentId, s.lastRegion AS region, s.lastSeen AS seen,
       s.lastEventId AS eventId
"""

UPSERT_STUDENTS = """
UNWIND $rows AS row
MERGE (s:Student {studentId: row.studentId})
WITH s, row WHERE coalesce(s.lastBatch, -1) < $batch
WITH s, row, (s.lastSeen IS NULL OR row.lastAt > s.lastSeen) AS newer
SET s.lastBatch = $batch,
    s.lastRegion = CASE WHEN newer THEN row.lastRegion ELSE s.lastRegion END,
    s.lastEventId = CASE WHEN newer THEN row.lastEventId ELSE s.lastEventId END,
    s.lastSeen = CASE WHEN newer THEN row.lastAt ELSE s.lastSeen END
RETURN collect(s.studentId) AS updated
"""

#: Edges in (region, student) order: two tasks writing at once lock the shared
#: Region nodes in the same order, so they wait for each other, never deadlock.
UPSERT_ACCESS = """
UNWIND $edges AS e
MATCH (s:Student {studentId: e.studentId})
MERGE (r:Region {code: e.code})
MERGE (s)-[a:ACCESSED_FROM]->(r)
ON CREATE SET a.firstSeen = e.first, a.lastSeen = e.last, a.count = e.count
ON MATCH SET a.count = a.count + e.count,
  a.firstSeen = CASE WHEN e.first < a.firstSeen THEN e.first ELSE a.firstSeen END,
  a.lastSeen = CASE WHEN e.last > a.lastSeen THEN e.last ELSE a.lastSeen END
"""

UPSERT_ACTIVITIES = """
UNWIND $acts AS act
MATCH (s:Student {studentId: act.studentId})
MERGE (a:Activity {eventId: act.eventId})
SET a.action = act.action, a.courseId = act.courseId, a.timestamp = act.timestamp,
    a.region = act.region, a.prevEventId = act.prevEventId,
    a.prevRegion = act.prevRegion, a.prevAt = act.prevAt, a.gapS = act.gapS
MERGE (s)-[:PERFORMED]->(a)
WITH a, act
MERGE (r:Region {code: act.region})
MERGE (a)-[:IN_REGION]->(r)
RETURN count(a) AS activities
"""


def classify(where: str, err: Exception) -> RetryableSinkError | FatalSinkError:
    """The graph server's one rule for its driver's errors: retryable or fatal.

    Unavailable servers, expired sessions, transient errors and socket errors
    pass. So does a :class:`~neo4j.exceptions.ConstraintError`: the alert sink
    MERGEs the same Student and Activity nodes as the graph sink, and of two
    transactions creating the same new node under a unique constraint Neo4j
    fails one; re-run, its MERGE matches.
    """
    from neo4j.exceptions import (
        ConstraintError,
        ServiceUnavailable,
        SessionExpired,
        TransientError,
    )

    if isinstance(err, ServiceUnavailable | SessionExpired | TransientError | OSError):
        return RetryableSinkError(f"{where}: {err}")
    if isinstance(err, ConstraintError):
        return RetryableSinkError(f"{where}: concurrent MERGE: {err}")
    return FatalSinkError(f"{where}: {type(err).__name__}: {err}")


class GraphSink(StreamSink):
    """Writes per-student access aggregates and switch activities, fenced by batch.

    Rows: ``{studentId, lastRegion, lastAt, regions: [{code, count, first, last}],
    activities: [{eventId, action, courseId, timestamp, region}]}``.
    """

    name = "graph"
    runs_on = Runs.EXECUTOR

    def write_part(self, part: Part) -> list[Any]:
        """The task's students: access edges and switch activities."""
        from learntrack.sinks.fold import graph_rows, switch_activities

        switches = switch_activities(part.events, part.students)
        self.write_batch(part.batch_id, graph_rows(part.students, switches))
        return []

    def open(self) -> None:
        """Connect and make sure constraints exist (idempotent)."""
        self._driver = graph_driver(self.settings)
        try:
            with self._driver.session(database=self.settings.graph.database) as session:
                for statement in SCHEMA:
                    session.run(statement).consume()
        except Exception as err:
            raise classify("graph", err) from err

    def close(self) -> None:
        """Disconnect."""
        self._release("_driver")

    def ping(self) -> None:
        """A Cypher round-trip."""
        with self._driver.session(database=self.settings.graph.database) as session:
            session.run("RETURN 1").consume()

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """One transaction per chunk of students: access edges + activities.

        A :class:`~neo4j.exceptions.ConstraintError` is retryable here: the
        alert sink MERGEs the same Student and Activity nodes from the detection
        query, and of two transactions creating the same new node under a unique
        constraint, Neo4j fails one; re-run, its MERGE matches.
        """
        ordered = sorted(rows, key=lambda r: r["studentId"])
        written = 0
        try:
            with self._driver.session(database=self.settings.graph.database) as session:
                for start in range(0, len(ordered), CHUNK):
                    chunk = [dict(r) for r in ordered[start : start + CHUNK]]
                    acts = [
                        {**a, "studentId": r["studentId"]}
                        for r in chunk
                        for a in r.get("activities", [])
                    ]
                    written += session.execute_write(
                        _write_chunk, chunk, acts, batch_id
                    )
        except Exception as err:
            raise classify("graph", err) from err
        return written

    def reset(self) -> None:
        """Delete every Student, Activity and Region node."""
        self.open()
        try:
            with self._driver.session(database=self.settings.graph.database) as session:
                for label in ("Activity", "Student", "Region"):
                    delete_nodes(session, label)
        finally:
            self.close()


def delete_nodes(session: Any, label: str, chunk: int = RESET_CHUNK) -> int:
    """Delete every ``label`` node, ``chunk`` nodes per transaction; how many.

    Each chunk is a managed transaction, which the driver re-runs on a transient
    error: the local graph server reports a concurrent change to a page
    (``DeadlockDetected``) while it deletes a large graph, and one transaction
    over millions of nodes would also hold them all in memory.
    """
    query = (
        f"MATCH (n:{label}) WITH n LIMIT $chunk DETACH DELETE n RETURN count(*) AS n"
    )

    def one(tx: Any) -> int:
        return int(tx.run(query, chunk=chunk).single()["n"])

    total = 0
    while True:
        deleted = session.execute_write(one)
        total += deleted
        if deleted < chunk:
            return total


def _write_chunk(
    tx: Any, rows: list[dict[str, Any]], acts: list[Any], batch: int
) -> int:
    firsts = [a for a in acts if a.get("isFirst")]
    if firsts:
        # The event before a student's first one of this batch: the Student node's
        # last event, read in the same transaction, before it moves forward.
        before = {
            r["studentId"]: r
            for r in tx.run(PREVIOUS, ids=[a["studentId"] for a in firsts], batch=batch)
        }
        for act in firsts:
            prev = before.get(act["studentId"])
            if (
                prev is not None
                and prev["region"] != act["region"]
                and prev["seen"] <= act["timestamp"]
            ):
                act["prevEventId"] = prev["eventId"]
                act["prevRegion"] = prev["region"]
                act["prevAt"] = prev["seen"]
                act["gapS"] = _seconds_between(prev["seen"], act["timestamp"])
    # A first event that does not change region is no switch: not an Activity.
    acts = [a for a in acts if not a.get("isFirst") or "prevEventId" in a]
    record = tx.run(UPSERT_STUDENTS, rows=rows, batch=batch).single()
    updated = set(record["updated"]) if record else set()
    if not updated:
        return 0
    # Only students updated by this batch (not fenced) get their edges and
    # activities; activities are MERGEd by eventId, so a replay is harmless anyway.
    edges = sorted(
        (
            {"studentId": r["studentId"], **reg}
            for r in rows
            if r["studentId"] in updated
            for reg in r["regions"]
        ),
        key=lambda e: (e["code"], e["studentId"]),
    )
    tx.run(UPSERT_ACCESS, edges=edges).consume()
    acts = sorted(
        (
            {k: v for k, v in a.items() if k != "isFirst"}
            for a in acts
            if a["studentId"] in updated
        ),
        key=lambda a: (a["region"], a["eventId"]),
    )
    if acts:
        tx.run(UPSERT_ACTIVITIES, acts=acts).consume()
    return len(updated)


def _seconds_between(earlier: str, later: str) -> float:
    """Seconds from one ISO-8601 UTC time to another."""
    import datetime as dt

    return (
        dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)
    ).total_seconds()


MULTI_REGION = """
MATCH (s:Student)-[:PERFORMED]->(a:Activity)
WHERE a.gapS IS NOT NULL AND a.gapS <= $window AND a.timestamp >= $since
WITH s, a ORDER BY a.timestamp
WITH s, collect({eventId: a.eventId, region: a.region, at: a.timestamp,
                 prevEventId: a.prevEventId, prevRegion: a.prevRegion,
                 prevAt: a.prevAt, gapS: a.gapS}) AS evidence
RETURN s.studentId AS studentId, evidence
ORDER BY studentId
LIMIT $limit
"""


def multi_region(
    settings: Any, window_s: float, since: str = "", limit: int = 1000
) -> list[dict[str, Any]]:
    """Students with two regions within ``window_s`` seconds, with the evidence.

    Runs wherever it is called (CLI, API). One pass over the switch activities
    (filtered on their stored gap), grouped by student: linear in the number of
    switches, never the product of a student's activities. ``since`` is an
    ISO-8601 UTC time (activities at or after it).
    """
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        result = session.run(
            MULTI_REGION, window=float(window_s), since=since, limit=int(limit)
        )
        out = []
        for record in result:
            evidence = list(record["evidence"])
            regions = sorted(
                {e["region"] for e in evidence} | {e["prevRegion"] for e in evidence}
            )
            out.append(
                {
                    "studentId": record["studentId"],
                    "regions": regions,
                    "evidence": evidence,
                }
            )
    return out


# -- reads (verify, tests) ----------------------------------------------------------
ACCESS_COUNTS = (
    "MATCH (s:Student)-[a:ACCESSED_FROM]->(r:Region) "
    "RETURN s.studentId AS sid, r.code AS code, a.count AS n"
)
SWITCH_ACTIVITIES = (
    "UNWIND $rows AS row "
    "MATCH (s:Student {studentId: row.sid})-[:PERFORMED]->(a:Activity)"
    "-[:IN_REGION]->(r:Region {code: row.region}) "
    "WHERE a.eventId IN row.eids "
    "RETURN count(DISTINCT s) AS n"
)


def access_counts(session: Any) -> dict[tuple[str, str], int]:
    """Every ``ACCESSED_FROM`` edge's count, by (studentId, region code)."""
    return {(r["sid"], r["code"]): r["n"] for r in session.run(ACCESS_COUNTS)}


def students_with_switch(session: Any, rows: list[dict[str, Any]]) -> int:
    """How many ``rows`` (``{sid, eids, region}``) have their switch in the graph.

    That is: one of the row's events is an Activity the student PERFORMED
    IN_REGION the row's region.
    """
    record = session.run(SWITCH_ACTIVITIES, rows=rows).single()
    return int(record["n"]) if record else 0
