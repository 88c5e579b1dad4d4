"""MongoDB as the Learning Record Store: statements, documents, attachments.

Runs in the API process (``learntrack api``, the ``/xAPI/`` routes), called from
FastAPI's worker threads with the service's one MongoClient (thread-safe). This
module owns the LRS's names (collections, fields, indexes), its writes and reads,
and which driver errors mean "MongoDB is down" (the activity log's rule,
:func:`learntrack.sinks.mongo.classify`, applies: same server, same driver).

Statements (``xapi_statements``): ``_id`` is the statement id (lower case), so an
id is stored once. ``json`` holds the statement as stored (as sent, plus the
LRS's id, stored, authority, version, timestamp) as JSON text: it comes back
byte for byte, whatever its extension keys (dots, ``$``) or numbers. Beside it,
the fields the queries filter on, each indexed together with ``order``:

- ``agents`` / ``relAgents``: identifier keys of the actor and agent object /
  with authority, instructor, team and sub-statement agents;
- ``verb``; ``acts`` / ``relActs``: the object activity / with the context
  activities and the sub-statement's;
- ``reg``: the registration; ``voided``; ``voids``: the target of a voiding
  statement;
- ``order``: ``<stored, UTC, microseconds>|<position in the request>|<id>``, a
  string that sorts as the LRS stored the statements, and the paging cursor.

A statement whose object is a StatementRef also carries its target's filter
values (when the target is already stored), so a query matching the target
finds the statements that target it, as the specification asks.

Documents (``xapi_documents``): state, activity profile and agent profile
documents, ``_id`` a hash of what identifies the document, with the content as
bytes, its content type, ``etag`` (SHA-1 hex of the content) and ``updated``.
Attachments (``xapi_attachments``): contents by SHA-256. Counts
(``xapi_counts``): one document per outcome, ``$inc`` by every request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from learntrack.errors import FatalSinkError, RetryableSinkError
from learntrack.sinks import mongo

STATEMENTS = "xapi_statements"
DOCUMENTS = "xapi_documents"
ATTACHMENTS = "xapi_attachments"
COUNTS = "xapi_counts"

#: The query fields of a statement document, each indexed with ``order``.
FILTER_FIELDS = ("agents", "relAgents", "verb", "acts", "relActs", "reg")
#: What a document of ``DOCUMENTS`` is (the three document resources).
DOCUMENT_KINDS = ("state", "activityProfile", "agentProfile")


def unavailable_errors() -> tuple[type[Exception], ...]:
    """The driver's errors that mean MongoDB is unreachable (see mongo.py)."""
    return mongo.unavailable_errors()


def classify(where: str, err: Exception) -> RetryableSinkError | FatalSinkError:
    """MongoDB's rule for its driver's errors, named after the LRS collection."""
    return mongo.classify(f"lrs {where}", err)


def ensure_indexes(db: Any) -> None:
    """The LRS's indexes (idempotent; the API creates them on first use)."""
    from pymongo import ASCENDING, DESCENDING

    statements = db[STATEMENTS]
    statements.create_index([("order", DESCENDING)], name="order")
    for name in FILTER_FIELDS:
        statements.create_index(
            [(name, ASCENDING), ("order", DESCENDING)], name=f"{name}_order"
        )
    statements.create_index([("voids", ASCENDING)], name="voids", sparse=True)
    db[DOCUMENTS].create_index(
        [("kind", ASCENDING), ("scope", ASCENDING), ("updated", ASCENDING)],
        name="scope_updated",
    )


# -- statements: names ------------------------------------------------------------
def iso_stored(stored: dt.datetime) -> str:
    """``stored`` as the fixed-width UTC text ``order`` keys start with."""
    return stored.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def order_key(stored: dt.datetime, position: int, statement_id: str) -> str:
    """The sortable key of a statement stored at ``stored``.

    ``position`` is its place in its request, so a list keeps its order.
    """
    return f"{iso_stored(stored)}|{position:06d}|{statement_id}"


def time_bound(when: dt.datetime) -> str:
    """An ``order`` value between the statements stored up to ``when`` and after.

    For ``since`` (exclusive) and ``until`` (inclusive).
    """
    return f"{iso_stored(when)}|~"


@dataclass(frozen=True)
class StatementIndex:
    """What queries filter a statement on (computed by the API from the spec)."""

    agents: frozenset[str]
    related_agents: frozenset[str]
    verb: str
    activities: frozenset[str]
    related_activities: frozenset[str]
    registration: str | None
    voids: str | None = None
    ref: str | None = None


def statement_document(
    statement_id: str,
    json_text: str,
    index: StatementIndex,
    *,
    stored: dt.datetime,
    order: str,
) -> dict[str, Any]:
    """The document of one statement (``json_text``: the statement as stored)."""
    doc: dict[str, Any] = {
        "_id": statement_id,
        "json": json_text,
        "storedAt": stored,
        "order": order,
        "agents": sorted(index.agents),
        "relAgents": sorted(index.related_agents | index.agents),
        "verb": [index.verb],
        "acts": sorted(index.activities),
        "relActs": sorted(index.related_activities | index.activities),
        "reg": [index.registration] if index.registration else [],
        "voided": False,
    }
    if index.voids:
        doc["voids"] = index.voids
    if index.ref:
        doc["ref"] = index.ref
    return doc


# -- statements: writes -----------------------------------------------------------
def inherit_targets(db: Any, docs: Sequence[dict[str, Any]]) -> None:
    """Add to each StatementRef statement its (stored) target's filter values."""
    refs = {d["ref"] for d in docs if d.get("ref")}
    if not refs:
        return
    fields = dict.fromkeys(FILTER_FIELDS, 1)
    known = {
        t["_id"]: t for t in db[STATEMENTS].find({"_id": {"$in": list(refs)}}, fields)
    }
    in_request = {d["_id"]: d for d in docs}
    for doc in docs:
        target = known.get(doc.get("ref", "")) or in_request.get(doc.get("ref", ""))
        if target is None or target is doc:
            continue
        for name in FILTER_FIELDS:
            doc[name] = sorted(set(doc[name]) | set(target.get(name, [])))


def insert_statements(db: Any, docs: Sequence[dict[str, Any]]) -> set[str]:
    """Insert ``docs``; returns the ids that were already stored (not replaced)."""
    from pymongo.errors import BulkWriteError

    if not docs:
        return set()
    try:
        db[STATEMENTS].insert_many(list(docs), ordered=False)
    except BulkWriteError as err:
        errors = err.details.get("writeErrors", [])
        other = [e for e in errors if e.get("code") != mongo.DUPLICATE_KEY]
        if other:
            raise
        return {e["op"]["_id"] for e in errors}
    return set()


def delete_statements(db: Any, ids: Iterable[str]) -> None:
    """Delete the statements ``ids`` (a request that was refused or not published)."""
    wanted = list(ids)
    if wanted:
        db[STATEMENTS].delete_many({"_id": {"$in": wanted}})


def void_statements(db: Any, targets: Iterable[str]) -> int:
    """Mark ``targets`` voided (voiding statements themselves are never voided)."""
    ids = list(targets)
    if not ids:
        return 0
    result = db[STATEMENTS].update_many(
        {"_id": {"$in": ids}, "voids": {"$exists": False}}, {"$set": {"voided": True}}
    )
    return int(result.modified_count)


def voided_targets(db: Any, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` a stored voiding statement targets (stored before them)."""
    found = db[STATEMENTS].find({"voids": {"$in": list(ids)}}, {"voids": 1})
    return {d["voids"] for d in found}


# -- statements: reads ------------------------------------------------------------
def stored_statements(db: Any, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Map id -> document (``json``, ``voided``, ``voids``...) of those stored."""
    wanted = list(ids)
    if not wanted:
        return {}
    return {d["_id"]: d for d in db[STATEMENTS].find({"_id": {"$in": wanted}})}


def statement_by_id(
    db: Any, statement_id: str, *, voided: bool
) -> dict[str, Any] | None:
    """The stored statement ``statement_id`` if its voided flag is ``voided``."""
    doc: dict[str, Any] | None = db[STATEMENTS].find_one(
        {"_id": statement_id, "voided": voided}
    )
    return doc


@dataclass(frozen=True)
class StatementFilter:
    """The filters of GET /xAPI/statements (None: not filtered on)."""

    agent: str | None = None
    related_agents: bool = False
    verb: str | None = None
    activity: str | None = None
    related_activities: bool = False
    registration: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def query(self) -> dict[str, Any]:
        """The MongoDB filter (voided statements are never listed)."""
        q: dict[str, Any] = {"voided": False}
        if self.agent is not None:
            q["relAgents" if self.related_agents else "agents"] = self.agent
        if self.verb is not None:
            q["verb"] = self.verb
        if self.activity is not None:
            q["relActs" if self.related_activities else "acts"] = self.activity
        if self.registration is not None:
            q["reg"] = self.registration
        bounds: dict[str, str] = {}
        if self.since is not None:
            bounds["$gt"] = time_bound(self.since)
        if self.until is not None:
            bounds["$lt"] = time_bound(self.until)
        if bounds:
            q["order"] = bounds
        return q


def query_statements(
    db: Any,
    where: StatementFilter,
    *,
    limit: int,
    ascending: bool,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` statement documents matching ``where``, in stored order.

    ``after``: the ``order`` of the last statement of the previous page (the
    paging cursor); statements stored later never shift a descending page.
    """
    from pymongo import ASCENDING, DESCENDING

    q = where.query()
    if after is not None:
        bound = q.setdefault("order", {})
        if ascending:
            bound["$gt"] = max(bound.get("$gt", after), after)
        else:
            bound["$lt"] = min(bound.get("$lt", after), after)
    cursor = (
        db[STATEMENTS]
        .find(q, {"json": 1, "order": 1, "storedAt": 1})
        .sort([("order", ASCENDING if ascending else DESCENDING)])
        .limit(limit)
    )
    return list(cursor)


def statements_about_activity(db: Any, activity_id: str, limit: int = 20) -> list[str]:
    """JSON of the latest statements naming ``activity_id`` (object or context)."""
    from pymongo import DESCENDING

    cursor = (
        db[STATEMENTS]
        .find({"relActs": activity_id}, {"json": 1})
        .sort([("order", DESCENDING)])
        .limit(limit)
    )
    return [d["json"] for d in cursor]


# -- attachments ------------------------------------------------------------------
def put_attachments(db: Any, parts: Mapping[str, tuple[str, bytes]]) -> None:
    """Store attachment contents by SHA-256 (idempotent: same hash, same bytes)."""
    from pymongo import UpdateOne

    ops = [
        UpdateOne(
            {"_id": sha2},
            {"$setOnInsert": {"contentType": ctype, "content": content}},
            upsert=True,
        )
        for sha2, (ctype, content) in parts.items()
    ]
    if ops:
        db[ATTACHMENTS].bulk_write(ops, ordered=False)


def attachments(db: Any, hashes: Iterable[str]) -> dict[str, tuple[str, bytes]]:
    """SHA-256 -> (content type, bytes) of those stored."""
    found = db[ATTACHMENTS].find({"_id": {"$in": list(hashes)}})
    return {d["_id"]: (d["contentType"], bytes(d["content"])) for d in found}


# -- documents --------------------------------------------------------------------
def document_scope(kind: str, **ids: str | None) -> str:
    """What a document belongs to (activity, agent, registration) as one key."""
    parts = [kind, *(f"{k}={ids[k]}" for k in sorted(ids) if ids[k] is not None)]
    return "\x1f".join(parts)


def document_id(scope: str, doc_id: str) -> str:
    """The ``_id`` of document ``doc_id`` in ``scope``."""
    return hashlib.sha256(f"{scope}\x1e{doc_id}".encode()).hexdigest()


def etag_of(content: bytes) -> str:
    """A document's ETag: the SHA-1 of its content, hex."""
    return hashlib.sha1(content, usedforsecurity=False).hexdigest()


def get_document(db: Any, scope: str, doc_id: str) -> dict[str, Any] | None:
    """The stored document (``content``, ``contentType``, ``etag``, ``updated``)."""
    doc: dict[str, Any] | None = db[DOCUMENTS].find_one(
        {"_id": document_id(scope, doc_id)}
    )
    return doc


def write_document(
    db: Any,
    kind: str,
    scope: str,
    doc_id: str,
    *,
    content: bytes,
    content_type: str,
    previous_etag: str | None,
) -> bool:
    """Create (``previous_etag`` None) or replace the document holding that ETag.

    Returns False when another writer got there first (created it, or changed
    it since ``previous_etag`` was read): the caller answers 412.
    """
    from pymongo.errors import DuplicateKeyError

    key = document_id(scope, doc_id)
    doc = {
        "_id": key,
        "kind": kind,
        "scope": scope,
        "docId": doc_id,
        "content": content,
        "contentType": content_type,
        "etag": etag_of(content),
        "updated": dt.datetime.now(dt.UTC),
    }
    if previous_etag is None:
        try:
            db[DOCUMENTS].insert_one(doc)
        except DuplicateKeyError:
            return False
        return True
    result = db[DOCUMENTS].replace_one({"_id": key, "etag": previous_etag}, doc)
    return bool(result.matched_count)


def delete_document(db: Any, scope: str, doc_id: str, etag: str | None) -> bool:
    """Delete one document (only if it still has ``etag``, when given)."""
    q: dict[str, Any] = {"_id": document_id(scope, doc_id)}
    if etag is not None:
        q["etag"] = etag
    return bool(db[DOCUMENTS].delete_one(q).deleted_count)


def delete_documents(db: Any, kind: str, scope: str) -> int:
    """Delete every document of ``scope`` (DELETE of the state resource)."""
    return int(db[DOCUMENTS].delete_many({"kind": kind, "scope": scope}).deleted_count)


def document_ids(
    db: Any, kind: str, scope: str, since: dt.datetime | None = None
) -> list[str]:
    """Ids of the documents of ``scope`` (updated after ``since``, when given)."""
    q: dict[str, Any] = {"kind": kind, "scope": scope}
    if since is not None:
        q["updated"] = {"$gt": since}
    return [d["docId"] for d in db[DOCUMENTS].find(q, {"docId": 1}).sort("docId")]


# -- counts -----------------------------------------------------------------------
def count(db: Any, outcome: str, n: int = 1) -> None:
    """Add ``n`` to the counter of ``outcome`` (accepted, rejected:400...)."""
    if n:
        db[COUNTS].update_one({"_id": outcome}, {"$inc": {"n": n}}, upsert=True)


def read_counts(db: Any) -> dict[str, int]:
    """Every counter: outcome -> count."""
    return {d["_id"]: int(d["n"]) for d in db[COUNTS].find()}
