"""MongoDB sinks: the raw activity log and the students' activity summary.

Both run on executors, inside each task of the stream's batch job.
``MongoActivitySink`` inserts every valid event once, ``_id = eventId``, so a replay
only meets duplicate keys (it is the topology's first sink: the events it finds
already stored by another copy are left out of every later sink).
``MongoStudentSink`` applies the task's per-student aggregates, fenced by batch id:
a student document is updated only if its ``streamBatch`` is older than the batch,
in the same single-document update (a student's events are all in one task).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from learntrack.clients import mongo_client
from learntrack.errors import FatalSinkError, RetryableSinkError
from learntrack.events import ActivityEvent
from learntrack.sinks.base import Part, Runs, StreamSink, map_value

ACTIVITIES = "activities"
STUDENTS = "students"
DUPLICATE_KEY = 11000


#: Server error codes that pass: elections, shutdowns, network trouble.
RETRYABLE_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)


def unavailable_errors() -> tuple[type[Exception], ...]:
    """The driver's errors that mean MongoDB is unreachable (all retryable).

    ``ConnectionFailure``: AutoReconnect, network timeouts, server selection.
    """
    from pymongo.errors import ConnectionFailure

    return (ConnectionFailure,)


def _retryable(err: Exception) -> bool:
    from pymongo.errors import OperationFailure

    if isinstance(err, unavailable_errors()):
        return True
    if isinstance(err, OperationFailure):
        return err.code in RETRYABLE_CODES or err.has_error_label("RetryableWriteError")
    return False


def classify(where: str, err: Exception) -> RetryableSinkError | FatalSinkError:
    """MongoDB's one rule for its driver's errors: retryable or fatal, named."""
    if _retryable(err):
        return RetryableSinkError(f"{where}: {err}")
    return FatalSinkError(f"{where}: {err}")


def _raise_unless_duplicates(
    where: str, errors: list[dict[str, Any]], err: Exception
) -> None:
    """Duplicate keys mean "already written"; anything else is classified."""
    other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
    if not other:
        return
    message = f"{where}: {other[0].get('errmsg')}"
    if all(e.get("code") in RETRYABLE_CODES for e in other):
        raise RetryableSinkError(message) from err
    raise FatalSinkError(message) from err


class _MongoSink(StreamSink):
    def open(self) -> None:
        """Connect (executor or driver)."""
        self._client = mongo_client(self.settings)
        self._db = self._client[self.settings.mongo.database]

    def close(self) -> None:
        """Disconnect."""
        self._release("_client")

    def ping(self) -> None:
        """Server round-trip."""
        self._db.command("ping")


#: The activity log's secondary indexes, by name (see ensure_indexes).
ACTIVITY_INDEXES = ("student_latest", "course_time")


def _create_activity_indexes(collection: Any) -> None:
    """The activity log's indexes on ``collection`` (idempotent).

    ``student_latest`` serves a student's latest activities, ``course_time`` a
    course's activity over time.
    """
    from pymongo import ASCENDING, DESCENDING

    collection.create_index(
        [("studentId", ASCENDING), ("timestamp", DESCENDING)], name="student_latest"
    )
    collection.create_index(
        [("courseId", ASCENDING), ("timestamp", DESCENDING)], name="course_time"
    )


def ensure_indexes(settings: Any) -> None:
    """Indexes the six operations rely on (idempotent; runs on the driver)."""
    from pymongo import ASCENDING

    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        _create_activity_indexes(db[ACTIVITIES])
        db[STUDENTS].create_index([("studentId", ASCENDING)], unique=True)


class MongoActivitySink(_MongoSink):
    """Every valid event, once, in ``activities`` (idempotent by eventId).

    Each document records ``firstBatch``, the batch that first inserted it. That
    tells a replay (same batch: the event counts) from an event published twice
    (an earlier batch already has it: every other store must skip it).
    """

    name = "mongo.activities"
    runs_on = Runs.EXECUTOR

    def write_part(self, part: Part) -> list[Any]:
        """Insert the task's events; drop those another copy stored from ``part``."""
        _inserted, earlier = self._insert(part.batch_id, _activity_docs(part))
        if earlier:
            part.drop(set(earlier))
        return []

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """insert_many(ordered=False); duplicate eventIds are skipped."""
        return len(rows) - len(self.write_and_find_earlier(batch_id, rows)[1])

    def write_and_find_earlier(
        self, batch_id: int, rows: Sequence[Any]
    ) -> tuple[int, list[str]]:
        """Insert; return (inserted, eventIds another copy already stored).

        A duplicate key is this very record again (a replay: same batch, same
        partition and offset), which still counts, or another copy of the event:
        stored by an earlier batch, or by another partition's task of this batch.
        The copy in the store decides, so a replay decides the same.
        """
        dicts = [r.asDict() if hasattr(r, "asDict") else dict(r) for r in rows]
        events = {n: [d.get(n) for d in dicts] for n in _FIELDS}
        events["metadata"] = [map_value(m) for m in events["metadata"]]
        return self._insert(batch_id, _activity_docs(Part(batch_id, 0, events)))

    def _insert(
        self, batch_id: int, docs: list[dict[str, Any]]
    ) -> tuple[int, list[str]]:
        from pymongo.errors import BulkWriteError, PyMongoError

        if not docs:
            return 0, []
        try:
            result = self._db[ACTIVITIES].insert_many(docs, ordered=False)
            return len(result.inserted_ids), []
        except BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            _raise_unless_duplicates("activities", errors, err)
            mine = {e["op"]["_id"]: e["op"]["source"] for e in errors}
            try:
                earlier = [
                    d["_id"]
                    for d in self._db[ACTIVITIES].find(
                        {"_id": {"$in": list(mine)}},
                        {"_id": 1, "firstBatch": 1, "source": 1},
                    )
                    if d.get("firstBatch", -1) < batch_id
                    or d.get("source") != mine[d["_id"]]
                ]
            except PyMongoError as find_err:
                raise classify("activities", find_err) from find_err
            return int(err.details.get("nInserted", 0)), earlier
        except PyMongoError as err:
            raise classify("activities", err) from err

    def reset(self) -> None:
        """Drop the activity log."""
        self.open()
        try:
            self._db[ACTIVITIES].drop()
        finally:
            self.close()


def _summary_update(r: Any, batch_id: int) -> dict[str, Any]:
    """One student's batch summary as update operators (no pipeline).

    Counts add up (``$inc``); ``lastAt`` and ``last`` only move forward in event
    time (``$max``), so a late event does not overwrite a newer region or course:
    ``last`` is ``{at, eventId, region, course}``, and MongoDB orders documents
    field by field, ``at`` first, then the eventId (the fold's tie-break). Update
    operators cost mongod about half of the aggregation-pipeline update they
    replace (measured: 60 vs 105 µs a student).
    """
    inc: dict[str, int] = {"activity.total": r["total"]}
    for action, n in r["actions"].items():
        inc[f"activity.byAction.{action}"] = n
    return {
        "$set": {"streamBatch": batch_id},
        "$inc": inc,
        "$max": {
            "activity.lastAt": r["lastAt"],
            "activity.last": {
                "at": r["lastAt"],
                "eventId": r.get("lastEventId", ""),
                "region": r["lastRegion"],
                "course": r["lastCourse"],
            },
        },
    }


def activity_summary(stored: dict[str, Any]) -> dict[str, Any]:
    """A student document's ``activity`` as readers see it (``lastRegion``...)."""
    last = stored.get("last") or {}
    out = {k: v for k, v in stored.items() if k != "last"}
    # A document written before ``last`` existed carries lastRegion / lastCourse
    # for its lastAt; ``last`` counts once it is as new as lastAt (a late event
    # sets ``last`` on such a document without moving lastAt).
    at, newest = last.get("at"), stored.get("lastAt")
    if at is not None and (newest is None or at >= newest):
        out["lastRegion"], out["lastCourse"] = last.get("region"), last.get("course")
    return out


#: The event's fields a document holds only when set (None-default ones in the
#: model); ``schemaVersion`` is not stored.
_OPTIONAL = tuple(
    name
    for name, f in ActivityEvent.model_fields.items()
    if f.default is None and name != "schemaVersion"
)
#: Every field of an activity document's source row (the event's, its source).
_FIELDS = (
    *(n for n in ActivityEvent.model_fields if n != "schemaVersion"),
    "partition",
    "offset",
)


def _activity_docs(part: Part) -> list[dict[str, Any]]:
    """The task's events as activity documents, built from the columns directly."""
    ev = part.events
    optional = [(name, ev[name]) for name in _OPTIONAL if name in ev]
    docs = []
    for i, (eid, sid, cid, action, ts, region, partition, offset) in enumerate(
        zip(
            ev["eventId"], ev["studentId"], ev["courseId"], ev["action"],
            ev["timestamp"], ev["region"], ev["partition"], ev["offset"],
            strict=True,
        )
    ):  # fmt: skip
        doc = {
            "firstBatch": part.batch_id,
            "_id": eid,
            "eventId": eid,
            "studentId": sid,
            "courseId": cid,
            "action": action,
            "timestamp": ts,
            "region": region,
            "source": {"partition": partition, "offset": offset},
        }
        for name, values in optional:
            if values[i] is not None:
                doc[name] = values[i]
        docs.append(doc)
    return docs


class MongoStudentSink(_MongoSink):
    """Per-student activity summary in ``students`` (fenced by batch id).

    Rows: ``{studentId, total, actions: {a: n}, lastAt, lastRegion, lastCourse}``.
    Profile fields (name, email, progress...) are never touched.
    """

    name = "mongo.students"
    runs_on = Runs.EXECUTOR

    def write_part(self, part: Part) -> list[Any]:
        """The task's students' summaries."""
        from learntrack.sinks.fold import mongo_rows

        self.write_batch(part.batch_id, mongo_rows(part.students))
        return []

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """One conditional upsert per student; a replayed batch matches nothing."""
        from pymongo import UpdateOne
        from pymongo.errors import BulkWriteError, PyMongoError

        ops = []
        for r in rows:
            ops.append(
                UpdateOne(
                    {
                        "studentId": r["studentId"],
                        "streamBatch": {"$not": {"$gte": batch_id}},  # or missing
                    },
                    _summary_update(r, batch_id),
                    upsert=True,
                )
            )
        if not ops:
            return 0
        try:
            result = self._db[STUDENTS].bulk_write(ops, ordered=False)
            return int(result.upserted_count + result.modified_count)
        except BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            # A duplicate key here means: the student is already at this batch.
            _raise_unless_duplicates("students", errors, err)
            return int(
                err.details.get("nUpserted", 0) + err.details.get("nModified", 0)
            )
        except PyMongoError as err:
            raise classify("students", err) from err

    def reset(self) -> None:
        """Remove the stream's fields (profiles stay)."""
        self.open()
        try:
            self._db[STUDENTS].update_many(
                {}, {"$unset": {"activity": "", "streamBatch": ""}}
            )
        finally:
            self.close()
