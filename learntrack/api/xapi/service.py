"""The LRS's operations: store, void, publish and read statements; documents.

Runs in the API process, called from FastAPI's worker threads (everything here is
thread-safe). :class:`LrsService` uses the query service's MongoDB client
(:mod:`learntrack.sinks.lrs` holds the names, writes and reads) and two producers
of its own (the activity topic and the dead-letter topic, the SDK's
:class:`~learntrack.producers.ActivityProducer`: ``acks=all``, idempotent).

Storing statements, in this order: every statement of the request is validated
(one invalid: 400, nothing stored or published); ids already stored must hold the
same statement (else 409, nothing stored); the statements are stored, voided
targets marked; then each is mapped with
:func:`learntrack.producers.xapi.map_statement` and published keyed by student,
and the answer waits for Kafka's acknowledgement. A statement the mapping cannot
turn into an event is still stored and goes to the dead-letter topic with its
reason; voiding statements are stored, not published (they are no learner
activity). If Kafka does not acknowledge in time, the answer is 503: the
statements stay stored, and the client's retry publishes them again (the event
id derives from the statement id, so the stores count each once).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from learntrack.api.service import QueryService, UnavailableError
from learntrack.api.xapi.common import XapiError, bad_request
from learntrack.config import Settings
from learntrack.producers.xapi_spec import (
    VOIDED_VERB,
    agent_ifi,
    format_statement,
    prepare_statement,
    same_statement,
    statement_activities,
    statement_agents,
    statement_registration,
)
from learntrack.sinks import lrs

log = logging.getLogger(__name__)

#: usageType of a JWS signature attachment (signed statements).
SIGNATURE = "http://adlnet.gov/expapi/attachments/signature"


@dataclass
class StoreResult:
    """What storing a request's statements did."""

    ids: list[str]
    stored: int = 0
    published: int = 0
    dead_lettered: int = 0


@dataclass
class Page:
    """One page of a statement query: the statements' JSON texts and the cursor."""

    texts: list[str]
    after: str | None
    newest: dt.datetime | None
    hashes: set[str] = field(default_factory=set)


class LrsService:
    """The Learning Record Store over MongoDB and Kafka; one per API process."""

    def __init__(self, settings: Settings, queries: QueryService) -> None:
        """Share the query service's MongoDB client; producers open on first use."""
        self.settings = settings
        self._queries = queries
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._indexed = False
        self._producer: Any = None
        self._dlq: Any = None
        self._inflight: dict[int, dt.datetime] = {}
        self._next = 0

    @property
    def db(self) -> Any:
        """The MongoDB database (the LRS's indexes created on first use)."""
        db = self._queries.db
        if not self._indexed:
            lrs.ensure_indexes(db)
            self._indexed = True
        return db

    def _producers(self) -> tuple[Any, Any]:
        from learntrack.producers import ActivityProducer

        with self._lock:
            if self._producer is None:
                self._producer = ActivityProducer(self.settings)
                self._dlq = ActivityProducer(
                    self.settings, topic=self.settings.topics.dlq
                )
            return self._producer, self._dlq

    def close(self) -> None:
        """Flush and close the producers (idempotent)."""
        from learntrack.errors import LearnTrackError

        with self._lock:
            producers, self._producer, self._dlq = (
                (self._producer, self._dlq),
                None,
                None,
            )
        for producer in producers:
            try:
                if producer is not None:
                    producer.close(timeout=10)
            except LearnTrackError:
                log.exception("closing the LRS's producer")

    # -- consistency ------------------------------------------------------------
    def _begin(self, stored: dt.datetime) -> int:
        with self._lock:
            self._next += 1
            self._inflight[self._next] = stored
            return self._next

    def _end(self, token: int) -> None:
        with self._lock:
            self._inflight.pop(token, None)

    def consistent_through(self) -> dt.datetime:
        """Every statement stored before this time is readable now (this process)."""
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            pending = min(self._inflight.values(), default=None)
        if pending is None:
            return now
        return min(now, pending - dt.timedelta(microseconds=1000))

    def count(self, outcome: str, n: int = 1) -> None:
        """Count a request's outcome (never fails the request)."""
        try:
            lrs.count(self.db, outcome, n)
        except Exception:  # noqa: BLE001 - a counter must not turn a 400 into a 503
            log.warning("could not count %s", outcome)

    # -- statements: writes -----------------------------------------------------
    def store(
        self,
        statements: Sequence[dict[str, Any]],
        *,
        authority: dict[str, Any],
        version: str,
        parts: Mapping[str, tuple[str, bytes]] | None = None,
    ) -> StoreResult:
        """Store validated statements, void their targets, publish; their ids.

        Raises XapiError (400 duplicate ids / voiding a voiding statement /
        attachments without their parts, 409 an id holding another statement) and
        UnavailableError (503) when Kafka does not acknowledge.
        """
        parts = dict(parts or {})
        _check_attachments(statements, parts)
        _check_signatures(statements, parts)
        now = dt.datetime.now(dt.UTC)
        # Milliseconds, as ``stored`` is written: since/until compare what
        # clients read back (since=<a statement's stored> excludes it).
        stored_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        token = self._begin(stored_at)
        try:
            # Stored as sent, but each contextActivities value as an array: the
            # specification wants arrays back in every format (Data 2.4.6.2).
            prepared = [
                format_statement(
                    prepare_statement(
                        s, stored=stored_at, authority=authority, version=version
                    ),
                    "exact",
                    [],
                )
                for s in statements
            ]
            # Ids compare case-insensitively; the statement keeps the one sent.
            ids = [str(p["id"]).lower() for p in prepared]
            if len(set(ids)) != len(ids):
                raise bad_request("two statements of the request have the same id")
            db = self.db
            existing = lrs.stored_statements(db, ids)
            self._check_voiding(prepared)
            final: dict[str, dict[str, Any]] = {}
            for sid, p in zip(ids, prepared, strict=True):
                if sid in existing:
                    final[sid] = _same_or_conflict(existing[sid], p)
            new = [
                (i, sid, p)
                for i, (sid, p) in enumerate(zip(ids, prepared, strict=True))
                if sid not in existing
            ]
            docs = [
                lrs.statement_document(
                    sid,
                    dumps(p).decode(),
                    _index(p),
                    stored=stored_at,
                    order=lrs.order_key(stored_at, i, sid),
                )
                for i, sid, p in new
            ]
            lrs.inherit_targets(db, docs)
            lrs.put_attachments(db, parts)
            raced = lrs.insert_statements(db, docs)
            inserted = [sid for _i, sid, _p in new if sid not in raced]
            try:
                if raced:
                    now_stored = lrs.stored_statements(db, raced)
                    for _i, sid, p in new:
                        if sid in raced:
                            final[sid] = _same_or_conflict(now_stored[sid], p)
                for sid, p in zip(ids, prepared, strict=True):
                    final.setdefault(sid, p)
                result = StoreResult(
                    ids=[str(p["id"]) for p in prepared], stored=len(inserted)
                )
                self._publish([final[sid] for sid in ids], result)
            except BaseException:
                # Refused (409) or not published (503): nothing of the request
                # stays stored, so a retry stores and publishes it afresh and no
                # statement is readable that the stream never received.
                lrs.delete_statements(db, inserted)
                raise
            # Voiding once the request is accepted (idempotent: a retry voids again).
            voids = {str(p["object"]["id"]).lower() for p in prepared if _voids(p)}
            lrs.void_statements(db, voids | lrs.voided_targets(db, ids))
            return result
        finally:
            self._end(token)

    def _check_voiding(self, prepared: list[dict[str, Any]]) -> None:
        """400 when a voiding statement targets a voiding statement."""
        targets = {str(p["object"]["id"]).lower() for p in prepared if _voids(p)}
        if not targets:
            return
        in_request = {str(p["id"]).lower() for p in prepared if _voids(p)}
        stored = lrs.stored_statements(self.db, targets)
        for target in targets:
            doc = stored.get(target)
            if target in in_request or (doc is not None and doc.get("voids")):
                msg = f"statement {target} voids another: it cannot be voided"
                raise bad_request(msg)

    def _publish(self, statements: list[dict[str, Any]], result: StoreResult) -> None:
        """Map and publish; wait for the acknowledgements (503 if none come)."""
        from learntrack.producers.sdk import ProducerError
        from learntrack.producers.xapi import XapiMappingError, map_statement

        context = self.settings.event_context()
        events = []
        dead = []
        for stmt in statements:
            if _voids(stmt):
                continue
            try:
                events.append(
                    map_statement(
                        stmt,
                        default_region=self.settings.xapi.default_region,
                        context=context,
                    )
                )
            except XapiMappingError as err:
                dead.append(_dead_letter(err.reason, err.detail, stmt))
            except Exception as err:  # noqa: BLE001 - stored: never refuse it now
                log.exception("mapping statement %s", stmt.get("id"))
                dead.append(_dead_letter("unmappable", repr(err)[:200], stmt))
        producer, dlq = self._producers()
        timeout = self.settings.producer.delivery_timeout_ms / 1000
        with self._publish_lock:
            try:
                for event in events:
                    producer.send_serialized(event.studentId, event.to_json())
                for record in dead:
                    dlq.send_serialized(None, orjson.dumps(record))
                producer.flush(timeout)
                if dead:
                    dlq.flush(timeout)
            except ProducerError as err:
                msg = f"kafka did not take the statements (they are stored): {err}"
                raise UnavailableError(msg) from err
        result.published = len(events)
        result.dead_lettered = len(dead)

    # -- statements: reads ------------------------------------------------------
    def statement(self, statement_id: str, *, voided: bool) -> dict[str, Any]:
        """The stored statement document; 404 when absent (or voided-ness differs)."""
        doc = lrs.statement_by_id(self.db, statement_id.lower(), voided=voided)
        if doc is None:
            raise XapiError(404, f"no statement {statement_id}")
        return doc

    def query(
        self,
        where: lrs.StatementFilter,
        *,
        limit: int,
        ascending: bool,
        after: str | None,
    ) -> Page:
        """One page of the query (``limit`` 0: the server's maximum)."""
        top = self.settings.xapi.max_query_limit
        size = top if limit == 0 else min(limit, top)
        docs = lrs.query_statements(
            self.db, where, limit=size + 1, ascending=ascending, after=after
        )
        more = len(docs) > size
        docs = docs[:size]
        newest = max((d["storedAt"] for d in docs), default=None)
        return Page(
            texts=[d["json"] for d in docs],
            after=docs[-1]["order"] if more else None,
            newest=newest,
        )

    def attachments(self, hashes: set[str]) -> dict[str, tuple[str, bytes]]:
        """Stored attachment contents by SHA-256."""
        return lrs.attachments(self.db, hashes) if hashes else {}

    # -- activities and agents ----------------------------------------------------
    def activity(self, activity_id: str) -> dict[str, Any]:
        """The Activity with the latest definition seen in stored statements."""
        for text in lrs.statements_about_activity(self.db, activity_id):
            found = _definition(loads(text), activity_id)
            if found is not None:
                return {
                    "objectType": "Activity",
                    "id": activity_id,
                    "definition": found,
                }
        return {"objectType": "Activity", "id": activity_id}

    # -- documents ----------------------------------------------------------------
    def document(self, scope: str, doc_id: str) -> dict[str, Any]:
        """A stored document; 404 when absent."""
        doc = lrs.get_document(self.db, scope, doc_id)
        if doc is None:
            raise XapiError(404, "no such document")
        return doc

    def document_ids(
        self, kind: str, scope: str, since: dt.datetime | None
    ) -> list[str]:
        """Ids of the documents in ``scope``."""
        return lrs.document_ids(self.db, kind, scope, since)

    def write_document(
        self,
        kind: str,
        scope: str,
        doc_id: str,
        content: bytes,
        content_type: str,
        *,
        if_match: str | None,
        if_none_match: str | None,
        merge: bool,
        need_precondition: bool,
    ) -> str:
        """PUT (``merge`` False) or POST a document under the ETag rules; its ETag."""
        existing = lrs.get_document(self.db, scope, doc_id)
        _preconditions(existing, if_match, if_none_match, need_precondition)
        if merge:
            content, content_type = _merged(existing, content, content_type)
        written = lrs.write_document(
            self.db,
            kind,
            scope,
            doc_id,
            content=content,
            content_type=content_type,
            previous_etag=existing["etag"] if existing else None,
        )
        if not written:
            raise XapiError(412, "the document changed meanwhile")
        return lrs.etag_of(content)

    def delete_document(self, scope: str, doc_id: str, *, if_match: str | None) -> None:
        """DELETE one document under the ETag rules."""
        existing = lrs.get_document(self.db, scope, doc_id)
        _preconditions(existing, if_match, None, need_precondition=False)
        if existing is not None:
            lrs.delete_document(self.db, scope, doc_id, existing["etag"])

    def delete_documents(self, kind: str, scope: str) -> int:
        """DELETE every document of ``scope`` (the state resource without stateId)."""
        return lrs.delete_documents(self.db, kind, scope)


# -- helpers (pure) -----------------------------------------------------------------
def dumps(value: Any) -> bytes:
    """JSON bytes; integers beyond 64 bits too (valid JSON orjson refuses)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.encode()


def loads(raw: bytes | str) -> Any:
    """Parse JSON; integers beyond 64 bits too. ValueError if it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:

        def reject(name: str) -> Any:
            raise ValueError(name)

        return json.loads(raw, parse_constant=reject)


def _same_or_conflict(doc: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The stored statement if ``new`` is the same statement; else 409."""
    old = loads(doc["json"])
    if not same_statement(old, new):
        msg = f"statement {new['id']} is already stored, and differs"
        raise XapiError(409, msg)
    return dict(old)


def _voids(stmt: Mapping[str, Any]) -> bool:
    verb = stmt.get("verb")
    return isinstance(verb, Mapping) and verb.get("id") == VOIDED_VERB


def _index(stmt: dict[str, Any]) -> lrs.StatementIndex:
    obj = stmt.get("object") or {}
    ref = obj.get("id", "").lower() if obj.get("objectType") == "StatementRef" else None
    return lrs.StatementIndex(
        agents=frozenset(statement_agents(stmt, related=False)),
        related_agents=frozenset(statement_agents(stmt, related=True)),
        verb=stmt["verb"]["id"],
        activities=frozenset(statement_activities(stmt, related=False)),
        related_activities=frozenset(statement_activities(stmt, related=True)),
        registration=(statement_registration(stmt) or "").lower() or None,
        voids=ref if _voids(stmt) else None,
        ref=ref,
    )


def _dead_letter(reason: str, detail: str, stmt: dict[str, Any]) -> dict[str, Any]:
    """The dead-letter record of a stored statement that maps to no event.

    ``raw`` is capped at the event size limit (the whole statement stays in the
    LRS, where ``statementId`` finds it).
    """
    from learntrack.events import MAX_EVENT_BYTES

    raw = dumps(stmt).decode()
    record = {
        "reason": reason,
        "detail": detail,
        "source": "xapi-lrs",
        "statementId": stmt["id"],
        "raw": raw[:MAX_EVENT_BYTES],
    }
    if len(raw) > MAX_EVENT_BYTES:
        record["truncated"] = True
    return record


def _check_attachments(
    statements: Sequence[Mapping[str, Any]], parts: Mapping[str, tuple[str, bytes]]
) -> None:
    """Every attachment without fileUrl has its part; every part is referenced."""
    needed: set[str] = set()
    for stmt in statements:
        for att in stmt.get("attachments") or []:
            if isinstance(att, Mapping) and "fileUrl" not in att:
                needed.add(str(att.get("sha2")).lower())
    missing = needed - set(parts)
    if missing:
        msg = f"attachment {sorted(missing)[0]} has no part in a multipart/mixed body"
        raise bad_request(msg)
    unused = (
        set(parts)
        - needed
        - {
            str(att.get("sha2")).lower()
            for stmt in statements
            for att in stmt.get("attachments") or []
            if isinstance(att, Mapping)
        }
    )
    if unused:
        raise bad_request(f"part {sorted(unused)[0]} matches no attachment")


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    raise bad_request("multipart/mixed without a boundary")


def _sections(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(headers, content) of each part of a multipart body."""
    chunks = body.split(b"--" + boundary)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):  # noqa: PLR2004
        raise bad_request("malformed multipart/mixed body")
    sections = []
    for chunk in chunks[1:-1]:
        head, sep, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise bad_request("a multipart part has no header/body separator")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        sections.append((headers, content.removesuffix(b"\r\n")))
    return sections


#: The SHA-2 function a hex digest of this length comes from (Data 2.4.11: sha2).
_SHA2_BY_HEX_LENGTH = {56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}


def _attachment_part(headers: dict[str, str], raw: bytes) -> tuple[str, str, bytes]:
    """(sha2, content type, bytes) of one attachment part, its hash checked."""
    sha2 = headers.get("x-experience-api-hash", "").lower()
    if not sha2:
        raise bad_request("an attachment part has no X-Experience-API-Hash")
    encoding = headers.get("content-transfer-encoding", "binary").lower()
    content = raw
    if encoding == "base64":
        try:
            content = base64.b64decode(raw)
        except binascii.Error:
            raise bad_request("an attachment part is not valid base64") from None
    elif encoding != "binary":
        raise bad_request("attachment parts need Content-Transfer-Encoding binary")
    algorithm = _SHA2_BY_HEX_LENGTH.get(len(sha2))
    if algorithm is None:
        raise bad_request(f"part {sha2}: not a SHA-224/256/384/512 hex digest")
    if hashlib.new(algorithm, content).hexdigest() != sha2:
        raise bad_request(f"part {sha2}: its content has another {algorithm}")
    return sha2, headers.get("content-type", "application/octet-stream"), content


_JWS_ALGORITHMS = ("RS256", "RS384", "RS512")


def _b64url_json(segment: str, what: str) -> Any:
    try:
        return loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        raise bad_request(f"signature: the JWS {what} is not base64url JSON") from None


def _check_signatures(
    statements: Sequence[Mapping[str, Any]], parts: Mapping[str, tuple[str, bytes]]
) -> None:
    """Signed statements: a JWS in compact form, RS256/384/512, over the statement.

    The form is checked; the RSA signature itself is not verified (docs/xapi.md).
    """
    for stmt in statements:
        for att in stmt.get("attachments") or []:
            if not isinstance(att, Mapping) or att.get("usageType") != SIGNATURE:
                continue
            if att.get("contentType") != "application/octet-stream":
                raise bad_request("signature: contentType application/octet-stream")
            part = parts.get(str(att.get("sha2")).lower())
            if part is None:  # referenced by fileUrl: not ours to read
                continue
            segments = part[1].decode("ascii", "replace").strip().split(".")
            if len(segments) != 3:  # noqa: PLR2004 - header.payload.signature
                raise bad_request("signature: not a JWS in compact serialization")
            header = _b64url_json(segments[0], "header")
            if not isinstance(header, dict) or header.get("alg") not in _JWS_ALGORITHMS:
                raise bad_request("signature: alg must be RS256, RS384 or RS512")
            payload = _b64url_json(segments[1], "payload")
            if not isinstance(payload, dict) or not same_statement(
                _unattached(payload), _unattached(stmt)
            ):
                raise bad_request("signature: the JWS payload is another statement")


def _unattached(stmt: Mapping[str, Any]) -> dict[str, Any]:
    """The statement without attachments (the signature is attached after)."""
    return {k: v for k, v in stmt.items() if k != "attachments"}


def parse_multipart(body: bytes, content_type: str) -> tuple[bytes, dict[str, Any]]:
    """(statement JSON, sha2 -> (content type, bytes)) of a multipart/mixed body."""
    sections = _sections(body, _boundary(content_type))
    first_headers, first = sections[0]
    if not first_headers.get("content-type", "").startswith("application/json"):
        raise bad_request("the first part must be application/json statements")
    parts = {}
    for headers, raw in sections[1:]:
        sha2, ctype, content = _attachment_part(headers, raw)
        parts[sha2] = (ctype, content)
    return first, parts


def multipart_answer(
    result: bytes, files: Mapping[str, tuple[str, bytes]]
) -> tuple[bytes, str]:
    """A multipart/mixed body: ``result`` JSON, then each attachment; its type."""
    boundary = uuid.uuid4().hex
    out = [
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode(),
        result,
        b"\r\n",
    ]
    for sha2, (ctype, content) in files.items():
        out += [
            (
                f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                "Content-Transfer-Encoding: binary\r\n"
                f"X-Experience-API-Hash: {sha2}\r\n\r\n"
            ).encode(),
            content,
            b"\r\n",
        ]
    out.append(f"--{boundary}--".encode())
    return b"".join(out), f'multipart/mixed; boundary="{boundary}"'


def attachment_hashes(stmt: Mapping[str, Any]) -> set[str]:
    """SHA-256 of the attachments a statement names."""
    return {
        str(a["sha2"]).lower()
        for a in stmt.get("attachments") or []
        if isinstance(a, Mapping) and isinstance(a.get("sha2"), str)
    }


def formatted(text: str, fmt: str, langs: list[str]) -> bytes:
    """A stored statement's JSON in ``fmt`` (exact: the stored bytes)."""
    if fmt == "exact":
        return text.encode()
    return dumps(format_statement(loads(text), fmt, langs))


def _definition(stmt: Mapping[str, Any], activity_id: str) -> dict[str, Any] | None:
    """The definition of ``activity_id`` in a statement (object, context, sub)."""
    candidates: list[Any] = [stmt.get("object")]
    context = stmt.get("context")
    if isinstance(context, Mapping) and isinstance(
        context.get("contextActivities"), Mapping
    ):
        for value in context["contextActivities"].values():
            candidates += value if isinstance(value, list) else [value]
    obj = stmt.get("object")
    if isinstance(obj, Mapping) and obj.get("objectType") == "SubStatement":
        candidates.append(obj.get("object"))
    for c in candidates:
        if (
            isinstance(c, Mapping)
            and c.get("id") == activity_id
            and c.get("objectType", "Activity") == "Activity"
            and isinstance(c.get("definition"), Mapping)
        ):
            return dict(c["definition"])
    return None


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def _preconditions(
    existing: dict[str, Any] | None,
    if_match: str | None,
    if_none_match: str | None,
    need_precondition: bool,
) -> None:
    """412 / 409 by the document's ETag and the request's headers."""
    if if_match is not None and (
        existing is None or not _etag_matches(if_match, existing["etag"])
    ):
        raise XapiError(412, "If-Match does not match the document's ETag")
    if (
        if_none_match is not None
        and existing is not None
        and (_etag_matches(if_none_match, existing["etag"]))
    ):
        raise XapiError(412, "If-None-Match: the document exists")
    if need_precondition and existing is not None and if_match is if_none_match is None:
        msg = "the document exists: send If-Match (its ETag) or If-None-Match"
        raise XapiError(409, msg)


def _json_object(content: bytes, content_type: str, what: str) -> dict[str, Any]:
    if not content_type.split(";", 1)[0].strip().lower() == "application/json":
        raise bad_request(f"POST merges JSON: the {what} is not application/json")
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise bad_request(f"POST merges JSON: the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise bad_request(f"POST merges JSON objects: the {what} is not one")
    return value


def _merged(
    existing: dict[str, Any] | None, content: bytes, content_type: str
) -> tuple[bytes, str]:
    """POST: the stored JSON object with the posted one's properties on top."""
    posted = _json_object(content, content_type, "posted document")
    if existing is None:
        return orjson.dumps(posted), "application/json"
    stored = _json_object(
        bytes(existing["content"]), existing["contentType"], "stored document"
    )
    return orjson.dumps({**stored, **posted}), "application/json"


def agent_key(agent: Mapping[str, Any]) -> str:
    """The identifier key of a (validated) agent parameter."""
    key = agent_ifi(agent)
    if key is None:
        raise bad_request("agent needs an identifier")
    return key
