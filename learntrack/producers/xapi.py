"""The xAPI mapping: Experience API statements -> activity events on the log.

Runs in the process that receives statements: ``learntrack import-xapi`` (or a
library caller) and the API's xAPI endpoint. :func:`map_statement` is pure: it maps
one xAPI statement (a dict) to one :class:`~learntrack.events.ActivityEvent`, or
raises :class:`XapiMappingError` with a stable reason code. :func:`import_xapi`
reads a JSON-lines file (``.gz`` too), maps each line, publishes the valid events
keyed by ``studentId`` and, on request, every rejected line to the dead-letter
topic. Bad input never stops an import: each bad line is counted under its reason.

Nothing valid is rejected: a statement valid per xAPI becomes an event unless the
event model cannot hold it (its time is before 2000 or too far in the future:
``timestamp_out_of_range``) or it is no activity (a voiding statement:
``voiding``). A part the event cannot hold is left out, never a reason to reject.

The mapping (``docs/xapi.md`` has it as a table):

- ``studentId``: the actor's ``account.name``, else ``mbox`` without ``mailto:``,
  else ``mbox_sha1sum``, else ``openid``. One that does not fit
  :data:`~learntrack.events.ID_PATTERN` becomes a stable id: an ``mbox`` its
  SHA-1 (exactly the statement's ``mbox_sha1sum`` would be), others
  ``account:``/``openid:`` and 40 hex digits of a SHA-256 (:func:`agent_id`). A
  Group without an identifier is ``group:`` and a hash of its members' ids.
- ``action``: the verb IRI through :data:`VERB_ACTIONS` (``completed`` and the
  session verbs depend on the object, see :func:`map_verb`); any other verb is
  :attr:`~learntrack.events.Action.OTHER`. ``verb`` keeps the verb IRI on every
  event.
- ``objectId``: the object Activity's id; a StatementRef's ``urn:uuid:<id>``; a
  SubStatement's own object the same way; none for an Agent or Group (a person is
  no content, and the activity log keeps no second person's address).
- ``courseId``: the first ``context.contextActivities.parent`` id, else the first
  ``grouping`` id (the SubStatement's context next), else the object activity's
  id, reduced by :func:`course_id_from_iri`; else :data:`UNKNOWN_COURSE`.
- ``timestamp``: ``timestamp``, else the statement's ``stored``, else the
  receiver's ``stored`` time; without an offset it is UTC.
- ``region``: a context extension whose key ends in ``/region`` (e.g.
  :data:`REGION_EXTENSION`) naming a configured region, else the default region.
- ``registration``: ``context.registration``; ``sessionId``: a context extension
  whose key ends in ``/session-id`` or ``/sessionid`` (:data:`SESSION_EXTENSIONS`
  first).
- ``score``: ``result.score.scaled`` (or raw/min/max) for quiz attempts, a negative
  one as 0; ``durationMs``: ``result.duration`` (ISO 8601) when it has a fixed
  length of at most a day, else left out and its text kept in ``metadata``.
- ``eventId``: ``uuid5(XAPI_NAMESPACE, statement id)`` (a canonical JSON of the
  statement when it has no id), so importing a file twice yields the same ids and
  the downstream dedup by ``eventId`` keeps one copy.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import math
import re
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from learntrack.config import Settings
from learntrack.errors import LearnTrackError
from learntrack.events import (
    DEFAULT_REGIONS,
    ID_PATTERN,
    IRI_PATTERN,
    MAX_DURATION_MS,
    MAX_EVENT_BYTES,
    MAX_IRI_CHARS,
    MAX_METADATA_VALUE_CHARS,
    Action,
    ActivityEvent,
    describe_error,
)
from learntrack.producers.sdk import ActivityProducer

#: Namespace of the event ids derived from statement ids. Never change it: it is
#: what makes a re-import produce the same ``eventId`` values.
XAPI_NAMESPACE = uuid.UUID("6f1f3f0e-2b7c-5a43-9f27-6c0e1d8a4b52")

#: The context extension LearnTrack reads the region from (any key ending in
#: ``/region`` is accepted too).
REGION_EXTENSION = "https://learntrack.dev/xapi/region"
#: Context extensions a session id is read from, in this order (then any key
#: ending in ``/session-id`` or ``/sessionid``): the video profile's, cmi5's.
SESSION_EXTENSIONS = (
    "https://w3id.org/xapi/video/extensions/session-id",
    "https://w3id.org/xapi/cmi5/context/extensions/sessionid",
)
#: The course of a statement that names no activity at all (e.g. an Agent object
#: without context).
UNKNOWN_COURSE = "unknown"

ADL = "http://adlnet.gov/expapi/verbs/"
#: The verb of a voiding statement: it retracts another statement, it is no activity.
VOIDED = ADL + "voided"
VIDEO = "https://w3id.org/xapi/video/verbs/"
VIDEO_ACTIVITY_TYPE = "https://w3id.org/xapi/video/activity-type/video"
VIDEO_PROFILE = "https://w3id.org/xapi/video"
ASSESSMENT_TYPES = frozenset(
    {
        "http://adlnet.gov/expapi/activities/assessment",
        "http://adlnet.gov/expapi/activities/question",
        "http://adlnet.gov/expapi/activities/interaction",
        "http://adlnet.gov/expapi/activities/cmi.interaction",
    }
)

#: Verb IRI -> action, for objects that are not videos. Any other verb maps to
#: :attr:`~learntrack.events.Action.OTHER`.
VERB_ACTIONS: dict[str, Action] = {
    ADL + "experienced": Action.PAGE_VIEW,
    "http://id.tincanapi.com/verb/viewed": Action.PAGE_VIEW,  # Open edX, Moodle
    ADL + "launched": Action.PAGE_VIEW,
    ADL + "completed": Action.PAGE_VIEW,  # video/assessment objects: see map_verb
    ADL + "attempted": Action.QUIZ_ATTEMPT,
    ADL + "answered": Action.QUIZ_ATTEMPT,
    ADL + "passed": Action.QUIZ_ATTEMPT,
    ADL + "failed": Action.QUIZ_ATTEMPT,
    ADL + "commented": Action.FORUM_POST,
    ADL + "shared": Action.FORUM_POST,
    ADL + "logged-in": Action.LOGIN,
    "https://w3id.org/xapi/adl/verbs/logged-in": Action.LOGIN,  # ADL's w3id IRI
    ADL + "initialized": Action.LOGIN,
    ADL + "logged-out": Action.LOGOUT,
    "https://w3id.org/xapi/adl/verbs/logged-out": Action.LOGOUT,
    ADL + "terminated": Action.LOGOUT,
    ADL + "exited": Action.LOGOUT,
    "https://w3id.org/xapi/dod-isd/verbs/submitted": Action.ASSIGNMENT_SUBMIT,
    "http://activitystrea.ms/schema/1.0/submit": Action.ASSIGNMENT_SUBMIT,
    VIDEO + "played": Action.VIDEO_PLAY,
    VIDEO + "paused": Action.VIDEO_PLAY,
    VIDEO + "seeked": Action.VIDEO_PLAY,
    VIDEO + "initialized": Action.VIDEO_PLAY,
    VIDEO + "terminated": Action.VIDEO_PLAY,
    VIDEO + "completed": Action.VIDEO_COMPLETE,
}

#: Verb IRI -> action when the object is a video (xAPI video profile). The player
#: session verbs describe the video, not an LMS session: they are no login/logout.
VIDEO_VERB_ACTIONS: dict[str, Action] = {
    ADL + "completed": Action.VIDEO_COMPLETE,
    ADL + "initialized": Action.VIDEO_PLAY,
    ADL + "terminated": Action.VIDEO_PLAY,
    ADL + "exited": Action.VIDEO_PLAY,
    ADL + "experienced": Action.VIDEO_PLAY,
}

#: Every reason a line or statement can be rejected for (the DLQ ``reason`` field).
#: Only ``voiding`` and ``timestamp_out_of_range`` (and ``invalid_event`` with a
#: default region that is not configured) can happen to a statement valid per xAPI;
#: the others mean the input is no valid statement.
REASONS: tuple[str, ...] = (
    "bad_json",  # the line is no JSON
    "not_a_statement",  # no JSON object
    "bad_actor",  # no actor, or an actor without any identifier
    "bad_verb",  # no verb, or its id is no absolute IRI
    "voiding",  # a voiding statement: the LRS's business, no activity
    "invalid_timestamp",  # no ISO 8601 time, or no time at all
    "timestamp_out_of_range",  # before 2000 or beyond the tolerated future
    "invalid_event",  # the built event breaks the contract otherwise
    "unreadable",  # the file breaks off (a truncated gzip)
)

_ID_RE = re.compile(ID_PATTERN)
_IRI_RE = re.compile(IRI_PATTERN)
_ID_CHARS_RE = re.compile(r"[^A-Za-z0-9_.:@-]+")
_MAX_ID = 64
_NUM = r"(\d+(?:\.\d+)?)"
_DURATION_RE = re.compile(
    rf"^P(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?\Z"
)
_UNIT_SECONDS = (7 * 86_400, 86_400, 3_600, 60, 1)
#: How many statements between two ``on_progress`` calls.
PROGRESS_EVERY = 1000


class XapiMappingError(LearnTrackError):
    """A statement cannot become an activity event; ``reason`` is a stable code.

    Attributes:
        reason: one of :data:`REASONS`.
        detail: a one-line human explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        """Keep the reason code and the detail; the message joins them."""
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ImportSummary:
    """What one :func:`import_xapi` run did; ``read == imported + sum(rejected)``.

    Attributes:
        read: statements read (non-blank lines).
        imported: events queued to the activity topic (delivered once flushed).
        rejected: reason code -> number of rejected lines.
        dead_lettered: rejected lines published to the dead-letter topic.
    """

    read: int = 0
    imported: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0

    @property
    def rejected_total(self) -> int:
        """Number of rejected lines, all reasons together."""
        return sum(self.rejected.values())

    def rows(self) -> list[tuple[str, int]]:
        """(label, count) rows for a summary table; one row per rejection reason."""
        rows = [
            ("read", self.read),
            ("imported", self.imported),
            ("rejected", self.rejected_total),
        ]
        rows += [(f"rejected: {r}", n) for r, n in sorted(self.rejected.items())]
        rows.append(("dead-lettered", self.dead_lettered))
        return rows


# -- mapping (pure) -------------------------------------------------------------
def statement_event_id(stmt: Mapping[str, Any]) -> uuid.UUID:
    """The deterministic ``eventId`` of a statement.

    ``uuid5(XAPI_NAMESPACE, id)`` with the statement id in canonical UUID form (so
    case does not matter); without an id, over a canonical JSON of the statement.
    """
    sid = stmt.get("id")
    if isinstance(sid, str) and sid.strip():
        try:
            name = str(uuid.UUID(sid.strip()))
        except ValueError:
            name = sid.strip()
    else:
        name = json.dumps(
            stmt, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
    return uuid.uuid5(XAPI_NAMESPACE, name)


def _digest(text: str, chars: int = 40) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def course_id_from_iri(iri: str) -> str | None:
    """A course id (fitting ``ID_PATTERN``) from an activity IRI; None if empty.

    The last non-empty path segment (else the fragment, else the host), with every
    run of disallowed characters replaced by ``_``. Ids longer than 64 characters
    keep 55 and get ``-`` and 8 hex digits of the IRI's SHA-256, so two long IRIs
    do not collide. Deterministic.
    """
    try:
        parts = urlsplit(iri.strip())
        path, fragment, netloc = parts.path, parts.fragment, parts.netloc
    except ValueError:  # e.g. a broken IPv6 host: take the text as a path
        path, fragment, netloc = iri, "", ""
    segments = [s for s in path.split("/") if s]
    raw = segments[-1] if segments else fragment or netloc
    text = _ID_CHARS_RE.sub("_", unquote(raw)).strip("_")
    if not text:
        return None
    if len(text) > _MAX_ID:
        text = f"{text[:55]}-{_digest(iri, 8)}"
    return text


def shorten_iri(iri: str) -> str:
    """``iri`` if it fits the event (:data:`~learntrack.events.MAX_IRI_CHARS`).

    A longer one keeps its first characters and ends in ``~sha256:`` and 16 hex
    digits of the whole IRI's SHA-256: no longer an address to follow, but a
    stable identifier that two long IRIs do not share. Deterministic.
    """
    if len(iri) <= MAX_IRI_CHARS:
        return iri
    tail = f"~sha256:{_digest(iri, 16)}"
    return iri[: MAX_IRI_CHARS - len(tail)] + tail


def parse_duration_ms(value: Any) -> int | None:
    """Milliseconds of an ISO 8601 duration such as ``PT1M30.5S`` or ``P1DT2H``.

    Weeks, days, hours, minutes and seconds only: years and months have no fixed
    length. None for anything else (a text that is no such duration, a number).
    """
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None or value in ("P", "PT") or value.endswith("T"):
        return None
    seconds = sum(
        (
            Decimal(g) * unit
            for g, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
            if g
        ),
        Decimal(0),
    )
    return int((seconds * 1000).to_integral_value())


def _first_id(activities: Any) -> str | None:
    """The id of the first activity of a contextActivities entry (list or object)."""
    if isinstance(activities, Mapping):
        activities = [activities]
    if isinstance(activities, list) and activities:
        first = activities[0]
        if isinstance(first, Mapping) and isinstance(first.get("id"), str):
            return str(first["id"])
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _context(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(stmt.get("context"))


def _object(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(stmt.get("object"))


def _is_activity(obj: Mapping[str, Any]) -> bool:
    return obj.get("objectType", "Activity") == "Activity"


def _sub_statement(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object when it is a SubStatement, else an empty mapping."""
    obj = _object(stmt)
    return obj if obj.get("objectType") == "SubStatement" else {}


def _target(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    """The activity acted on: the object, or a SubStatement's object; else empty."""
    obj = _object(stmt)
    if obj.get("objectType") == "SubStatement":
        obj = _object(obj)
    return obj if obj and _is_activity(obj) else {}


def _activity_type(obj: Mapping[str, Any]) -> str | None:
    definition = obj.get("definition")
    if isinstance(definition, Mapping) and isinstance(definition.get("type"), str):
        return str(definition["type"])
    return None


def _is_video(stmt: Mapping[str, Any]) -> bool:
    """True if the object is a video or the statement follows the video profile."""
    if _activity_type(_target(stmt)) == VIDEO_ACTIVITY_TYPE:
        return True
    activities = _context(stmt).get("contextActivities")
    category = activities.get("category") if isinstance(activities, Mapping) else None
    if isinstance(category, Mapping):
        category = [category]
    return isinstance(category, list) and any(
        isinstance(c, Mapping) and c.get("id") == VIDEO_PROFILE for c in category
    )


def _own_id(agent: Mapping[str, Any]) -> str | None:
    """The student id of an agent's own identifier (IFI); None without one."""
    account = agent.get("account")
    name = account.get("name") if isinstance(account, Mapping) else None
    if isinstance(name, str) and name:
        return name if _ID_RE.fullmatch(name) else f"account:{_digest(name)}"
    mbox = agent.get("mbox")
    if isinstance(mbox, str) and mbox.strip():
        address = mbox.strip().removeprefix("mailto:")
        if _ID_RE.fullmatch(address):
            return address
        # What mbox_sha1sum is defined as: the SHA-1 of the mailto IRI.
        return hashlib.sha1(f"mailto:{address}".encode()).hexdigest()  # noqa: S324
    sha1 = agent.get("mbox_sha1sum")
    if isinstance(sha1, str) and sha1:
        return sha1 if _ID_RE.fullmatch(sha1) else f"sha1:{_digest(sha1)}"
    openid = agent.get("openid")
    if isinstance(openid, str) and openid:
        return openid if _ID_RE.fullmatch(openid) else f"openid:{_digest(openid)}"
    return None


def agent_id(agent: Mapping[str, Any]) -> str | None:
    """The student id of an Agent or Group (fits ``ID_PATTERN``); None if unknown.

    Its own identifier first (``account.name``, ``mbox``, ``mbox_sha1sum``,
    ``openid``): as it is when it fits ``ID_PATTERN``, else a stable hash of it (an
    ``mbox`` becomes its SHA-1, the ``mbox_sha1sum`` the same person has in
    other statements). A Group without one (anonymous) is ``group:`` and a hash of
    its members' sorted ids, so the same members are the same student.
    Deterministic.
    """
    own = _own_id(agent)
    if own is not None or agent.get("objectType") != "Group":
        return own
    members = agent.get("member")
    ids = sorted(
        {m for m in map(_own_id, members) if m is not None}
        if isinstance(members, list) and all(isinstance(m, Mapping) for m in members)
        else set()
    )
    return f"group:{_digest(chr(10).join(ids))}" if ids else None


def map_actor(stmt: Mapping[str, Any]) -> str:
    """The ``studentId`` of a statement's actor (see :func:`agent_id`).

    Raises:
        XapiMappingError: ``bad_actor``, the statement has no actor or the actor
            no identifier (no valid xAPI statement has either).
    """
    actor = stmt.get("actor")
    if not isinstance(actor, Mapping):
        raise XapiMappingError("bad_actor", "statement has no actor")
    student = agent_id(actor)
    if student is None:
        msg = (
            "actor has no account, mbox, mbox_sha1sum or openid (nor a member with one)"
        )
        raise XapiMappingError("bad_actor", msg)
    return student


def verb_iri(stmt: Mapping[str, Any]) -> str:
    """The statement's verb IRI, shortened to fit (:func:`shorten_iri`).

    Raises:
        XapiMappingError: ``bad_verb``, no verb id or one that is no absolute IRI.
    """
    verb = stmt.get("verb")
    verb_id = verb.get("id") if isinstance(verb, Mapping) else None
    if not isinstance(verb_id, str):
        raise XapiMappingError("bad_verb", "statement has no verb id")
    if not _IRI_RE.fullmatch(verb_id[:MAX_IRI_CHARS]):
        msg = f"verb id {verb_id[:200]!r} is no absolute IRI"
        raise XapiMappingError("bad_verb", msg)
    return shorten_iri(verb_id)


def map_verb(stmt: Mapping[str, Any]) -> Action:
    """The action of a statement's verb, given its object; never fails on a verb.

    :data:`VIDEO_VERB_ACTIONS` applies first when the object is a video (or the
    statement declares the video profile); ``completed`` on an assessment or
    question is a quiz attempt; then :data:`VERB_ACTIONS`; any other verb is
    :attr:`~learntrack.events.Action.OTHER` (its IRI goes to the event's
    ``verb``).

    Raises:
        XapiMappingError: ``bad_verb`` (see :func:`verb_iri`).
    """
    verb_id = verb_iri(stmt)
    if _is_video(stmt) and verb_id in VIDEO_VERB_ACTIONS:
        return VIDEO_VERB_ACTIONS[verb_id]
    if verb_id == ADL + "completed" and _activity_type(_target(stmt)) in (
        ASSESSMENT_TYPES
    ):
        return Action.QUIZ_ATTEMPT
    return VERB_ACTIONS.get(verb_id, Action.OTHER)


def map_object(stmt: Mapping[str, Any]) -> str | None:
    """The ``objectId``: what the statement is about, as an IRI; None for a person.

    An Activity's id; a StatementRef as ``urn:uuid:<id>``; for a SubStatement its
    own object the same way. None for an Agent or Group object (a person is no
    content, and the activity log keeps no second person's identifier) and for an
    id that is no absolute IRI. Shortened to fit (:func:`shorten_iri`).
    """
    obj = _object(stmt)
    if obj.get("objectType") == "SubStatement":
        obj = _object(obj)
    kind, oid = obj.get("objectType", "Activity"), obj.get("id")
    if not isinstance(oid, str):
        return None
    if kind == "StatementRef":
        try:
            return f"urn:uuid:{uuid.UUID(oid.strip())}"
        except ValueError:
            return None
    if kind != "Activity" or not _IRI_RE.fullmatch(oid[:MAX_IRI_CHARS]):
        return None
    return shorten_iri(oid)


def map_course(stmt: Mapping[str, Any]) -> str:
    """The ``courseId``; never fails (see the module docstring for the order).

    An IRI that reduces to no id (only disallowed characters) gives ``c-`` and 16
    hex digits of its SHA-256; a statement naming no activity at all,
    :data:`UNKNOWN_COURSE`.
    """
    candidates: list[str | None] = []
    for ctx in (_context(stmt), _context(_sub_statement(stmt))):
        activities = _mapping(ctx.get("contextActivities"))
        candidates += [
            _first_id(activities.get("parent")),
            _first_id(activities.get("grouping")),
        ]
    target_id = _target(stmt).get("id")
    candidates.append(target_id if isinstance(target_id, str) else None)
    for iri in candidates:
        if iri is not None and iri.strip():
            return course_id_from_iri(iri) or f"c-{_digest(iri, 16)}"
    return UNKNOWN_COURSE


def map_timestamp(
    stmt: Mapping[str, Any], stored: dt.datetime | None = None
) -> dt.datetime:
    """The event time: ``timestamp``, else ``stored``, else the given ``stored``.

    ISO 8601 as Python reads it; a time without an offset is UTC (xAPI only says
    a timestamp *should* carry one). ``stored`` is when the receiver (the LRS, the
    importer) stored the statement.

    Raises:
        XapiMappingError: ``invalid_timestamp``, a time that is no ISO 8601, or
            no time at all.
    """
    value, source = stmt.get("timestamp"), "timestamp"
    if value is None:
        value, source = stmt.get("stored"), "stored"
    if value is None and stored is not None:
        parsed = stored
    elif not isinstance(value, str):
        msg = "statement has no timestamp" if value is None else "timestamp not text"
        raise XapiMappingError("invalid_timestamp", msg)
    else:
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            msg = f"{source} {value[:80]!r} is not ISO 8601"
            raise XapiMappingError("invalid_timestamp", msg) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _extension(
    extensions: Mapping[str, Any], first: tuple[str, ...], *ends: str
) -> Any:
    """The value of the first key of ``first`` present, else of a key with an end."""
    for key in first:
        if key in extensions:
            return extensions[key]
    for key in sorted(k for k in extensions if isinstance(k, str)):
        if key.endswith(ends):
            return extensions[key]
    return None


def _region_value(stmt: Mapping[str, Any]) -> Any:
    """The region extension's value (:data:`REGION_EXTENSION` first); None if none."""
    extensions = _mapping(_context(stmt).get("extensions"))
    return _extension(extensions, (REGION_EXTENSION,), "/region")


def map_region(
    stmt: Mapping[str, Any],
    default_region: str,
    regions: frozenset[str] | None = None,
) -> str:
    """The region extension's region if it is one of ``regions``, else the default.

    Case aside (``eu`` is ``EU``); ``regions`` defaults to
    :data:`~learntrack.events.DEFAULT_REGIONS`.
    """
    wanted = regions or frozenset(DEFAULT_REGIONS)
    value = _region_value(stmt)
    if isinstance(value, str):
        for candidate in (value, value.strip().upper()):
            if candidate in wanted:
                return candidate
    return default_region


def map_session(stmt: Mapping[str, Any]) -> str | None:
    """The ``sessionId``: a session-id context extension (:data:`SESSION_EXTENSIONS`).

    As it is when it fits ``ID_PATTERN`` (a UUID does), else ``session:`` and a
    hash of it; None when absent or not text (or an integer).
    """
    value = _extension(
        _mapping(_context(stmt).get("extensions")),
        SESSION_EXTENSIONS,
        "/session-id",
        "/sessionid",
    )
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return value if _ID_RE.fullmatch(value) else f"session:{_digest(value)}"


def map_registration(stmt: Mapping[str, Any]) -> uuid.UUID | None:
    """``context.registration`` as a UUID; None when absent or no UUID."""
    value = _context(stmt).get("registration")
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def map_score(result: Mapping[str, Any]) -> float | None:
    """A quiz score in 0..1 from ``result.score``; None when there is none.

    ``scaled`` when it is in xAPI's -1..1 (a negative one counts as 0), else
    ``(raw - min) / (max - min)`` clipped to 0..1; anything else is no score.
    """
    score = _mapping(result.get("score"))
    scaled = _number(score.get("scaled"))
    if scaled is not None and -1.0 <= scaled <= 1.0:
        return max(scaled, 0.0)
    raw, low, high = (_number(score.get(k)) for k in ("raw", "min", "max"))
    if raw is not None and low is not None and high is not None and high > low:
        return min(max((raw - low) / (high - low), 0.0), 1.0)
    return None


def _short_text(value: Any) -> str | None:
    """``value`` if it is text short enough for a metadata value."""
    if isinstance(value, str) and len(value) <= MAX_METADATA_VALUE_CHARS:
        return value
    return None


def map_statement(
    stmt: Mapping[str, Any],
    *,
    default_region: str,
    context: dict[str, Any],
    stored: dt.datetime | None = None,
) -> ActivityEvent:
    """Map one xAPI statement to a validated :class:`ActivityEvent`.

    Pure; runs in the process that received the statement (the importer, the
    API's LRS). ``context`` is the event validation context
    (``settings.event_context()``); ``default_region`` applies when the statement
    names no configured region; ``stored`` is the receiver's storage time, the
    event time of a statement with neither ``timestamp`` nor ``stored``. The LRS
    passes each statement it has validated and stored, with its stored time; the
    mapping itself checks only what it reads, so it also takes the looser
    statements of a file.

    Every statement valid per xAPI maps, except a voiding statement (``voiding``:
    it retracts another, which is the LRS's business, not an activity) and one
    whose time the event model cannot hold (``timestamp_out_of_range``: before
    2000-01-01 or beyond the configured future tolerance); the caller
    dead-letters those with their reason.

    Raises:
        XapiMappingError: the statement cannot be mapped; ``reason`` is one of
            :data:`REASONS` (``invalid_event`` when the built event breaks the
            contract otherwise, with the field named in the detail).
    """
    if not isinstance(stmt, Mapping):
        msg = f"a statement is a JSON object, not {type(stmt).__name__}"
        raise XapiMappingError("not_a_statement", msg)
    student = map_actor(stmt)
    verb = verb_iri(stmt)
    if verb == VOIDED:
        msg = "a voiding statement retracts another statement; it is no activity"
        raise XapiMappingError("voiding", msg)
    action = map_verb(stmt)
    metadata: dict[str, Any] = {"source": "xapi"}
    data: dict[str, Any] = {
        "eventId": statement_event_id(stmt),
        "studentId": student,
        "courseId": map_course(stmt),
        "action": action,
        "timestamp": map_timestamp(stmt, stored),
        "region": map_region(stmt, default_region, context.get("regions")),
        "sessionId": map_session(stmt),
        "verb": verb,
        "objectId": map_object(stmt),
        "registration": map_registration(stmt),
        "metadata": metadata,
    }
    result = _mapping(stmt.get("result"))
    if result.get("duration") is not None:
        ms = parse_duration_ms(result["duration"])
        if ms is not None and ms <= MAX_DURATION_MS:
            data["durationMs"] = ms
        elif (text := _short_text(result["duration"])) is not None:
            metadata["duration"] = text  # P1M, P2D...: kept, but not as durationMs
    if action is Action.QUIZ_ATTEMPT:
        data["score"] = map_score(result)
    asked = _short_text(_region_value(stmt))
    if asked is not None and asked.strip().upper() != data["region"].upper():
        metadata["region"] = asked  # no configured region: kept, the default used
    try:
        return ActivityEvent.model_validate(data, context=context)
    except ValidationError as err:
        fields = {item["loc"][:1] for item in err.errors()}
        reason = "timestamp_out_of_range" if fields == {("timestamp",)} else None
        raise XapiMappingError(reason or "invalid_event", describe_error(err)) from err


# -- import (publishes) ---------------------------------------------------------
Reader = IO[bytes] | gzip.GzipFile


def _open(path: Path) -> Reader:
    """The file as bytes, gunzipped when its name ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


Line = tuple[int, bytes, XapiMappingError | None]


def _numbered_lines(handle: Reader) -> Iterator[Line]:
    """(line number, raw line, None); a file breaking off ends with an error item."""
    number = 0
    try:
        for number, raw in enumerate(handle, start=1):
            yield number, raw, None
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip
        detail = f"file breaks off after line {number}: {err}"
        yield number + 1, b"", XapiMappingError("unreadable", detail)


def _map_line(
    raw: bytes, default_region: str, context: dict[str, Any], stored: dt.datetime
) -> ActivityEvent | XapiMappingError:
    """The event of one line, or the mapping error saying why there is none."""
    try:
        stmt = json.loads(raw)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return XapiMappingError("bad_json", str(err)[:200])
    try:
        return map_statement(
            stmt, default_region=default_region, context=context, stored=stored
        )
    except XapiMappingError as err:
        return err


def dlq_record(
    error: XapiMappingError, file: str, line: int, raw: bytes
) -> dict[str, Any]:
    """The dead-letter record of a rejected line (``raw`` capped at 64 KiB)."""
    text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
    record: dict[str, Any] = {
        "reason": error.reason,
        "detail": error.detail,
        "source": "xapi",
        "file": file,
        "line": line,
        "raw": text[:MAX_EVENT_BYTES],
    }
    if len(text) > MAX_EVENT_BYTES:
        record["truncated"] = True
    return record


def import_xapi(
    path: Path,
    settings: Settings,
    *,
    default_region: str = "EU",
    send_dlq: bool = False,
    producer: ActivityProducer | None = None,
    dlq_producer: ActivityProducer | None = None,
    on_progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Import a JSON-lines file of xAPI statements (gzip if it ends in ``.gz``).

    Runs in the importing process. Blank lines are skipped; every other line is
    mapped with :func:`map_statement` and its event queued with key ``studentId``.
    The import's start is the stored time of the file's statements: the event time
    of one with neither ``timestamp`` nor ``stored`` (so only such a statement's
    time differs between two imports of a file; its ``eventId`` does not).
    A bad line is counted under its reason and, with ``send_dlq`` (implied by a
    ``dlq_producer``), published unkeyed to the dead-letter topic as JSON
    ``{"reason", "detail", "source": "xapi", "file", "line", "raw"}`` (see
    :func:`dlq_record`). A file that breaks off (a truncated gzip) counts one
    ``unreadable`` line and ends the import. Line numbers count blank lines too.

    Producers passed in are flushed, not closed; those created here (default
    ``ActivityProducer(settings)`` and one on ``settings.topics.dlq``) are closed.

    Args:
        path: the file to read.
        settings: LearnTrack settings (validation context, producers).
        default_region: region of statements without a region extension.
        send_dlq: publish rejected lines to the dead-letter topic.
        producer: where valid events go.
        dlq_producer: where rejected lines go.
        on_progress: called with the running summary every
            :data:`PROGRESS_EVERY` statements and once at the end.

    Returns:
        The counts; every queued record is delivered when this returns.

    Raises:
        LearnTrackError: the file cannot be opened.
        learntrack.producers.ProducerError: delivery failed (broker down...).
    """
    summary = ImportSummary()
    context = settings.event_context()
    stored = dt.datetime.now(dt.UTC)
    try:
        handle = _open(path)
    except OSError as err:
        msg = f"cannot read {path}: {err.strerror or err}"
        raise LearnTrackError(msg) from err
    with ExitStack() as owned:
        owned.enter_context(handle)
        if producer is None:
            producer = owned.enter_context(ActivityProducer(settings))
        if send_dlq and dlq_producer is None:
            dlq_producer = owned.enter_context(
                ActivityProducer(settings, topic=settings.topics.dlq)
            )
        for number, raw, broken in _numbered_lines(handle):
            if broken is None and not raw.strip():
                continue
            summary.read += 1
            outcome = broken or _map_line(raw, default_region, context, stored)
            if isinstance(outcome, XapiMappingError):
                summary.rejected[outcome.reason] += 1
                if dlq_producer is not None:
                    record = dlq_record(outcome, path.name, number, raw)
                    dlq_producer.send_serialized(None, json.dumps(record).encode())
                    summary.dead_lettered += 1
            else:
                producer.send_serialized(outcome.studentId, outcome.to_json())
                summary.imported += 1
            if on_progress is not None and summary.read % PROGRESS_EVERY == 0:
                on_progress(summary)
        try:
            producer.flush()
        finally:
            if dlq_producer is not None:
                dlq_producer.flush()
    if on_progress is not None:
        on_progress(summary)
    return summary
