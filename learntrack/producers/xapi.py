"""The xAPI importer: Experience API statements -> activity events on the log.

Runs in the importing process (``learntrack import-xapi`` or a library caller).
:func:`map_statement` is pure: it maps one xAPI statement (a dict) to one
:class:`~learntrack.events.ActivityEvent`, or raises :class:`XapiMappingError` with a
stable reason code. :func:`import_xapi` reads a JSON-lines file (``.gz`` too), maps
each line, publishes the valid events keyed by ``studentId`` and, on request, every
rejected line to the dead-letter topic. Bad input never stops an import: each bad
line is counted under its reason.

The mapping:

- ``studentId``: ``actor.account.name``, else ``actor.mbox`` without ``mailto:``,
  else ``actor.mbox_sha1sum``; used as is, so an id outside
  :data:`~learntrack.events.ID_PATTERN` is rejected (``bad_actor``), never mangled.
- ``action``: the verb IRI through :data:`VERB_ACTIONS`; ``completed`` and the
  session verbs depend on the object (see :func:`map_verb`).
- ``courseId``: the first ``context.contextActivities.parent`` id, else the first
  ``grouping`` id, else the object's id, reduced by :func:`course_id_from_iri`.
- ``timestamp``: ``timestamp`` (else the LRS's ``stored``); it must carry an offset.
- ``region``: a context extension whose key ends in ``/region`` (e.g.
  :data:`REGION_EXTENSION`), else the importer's default region.
- ``score``: ``result.score.scaled`` (or raw/min/max) for quiz attempts;
  ``durationMs``: ``result.duration`` (ISO 8601); ``sessionId``:
  ``context.registration``.
- ``eventId``: ``uuid5(XAPI_NAMESPACE, statement id)`` (a canonical JSON of the
  statement when it has no id), so importing a file twice yields the same ids and
  the downstream dedup by ``eventId`` keeps one copy.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
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
    ID_PATTERN,
    MAX_EVENT_BYTES,
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

ADL = "http://adlnet.gov/expapi/verbs/"
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

#: Verb IRI -> action, for objects that are not videos.
VERB_ACTIONS: dict[str, Action] = {
    ADL + "experienced": Action.PAGE_VIEW,
    ADL + "launched": Action.PAGE_VIEW,
    ADL + "completed": Action.PAGE_VIEW,  # video/assessment objects: see map_verb
    ADL + "attempted": Action.QUIZ_ATTEMPT,
    ADL + "answered": Action.QUIZ_ATTEMPT,
    ADL + "passed": Action.QUIZ_ATTEMPT,
    ADL + "failed": Action.QUIZ_ATTEMPT,
    ADL + "commented": Action.FORUM_POST,
    ADL + "shared": Action.FORUM_POST,
    ADL + "logged-in": Action.LOGIN,
    ADL + "initialized": Action.LOGIN,
    ADL + "logged-out": Action.LOGOUT,
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

#: Every reason a line can be rejected for (the DLQ ``reason`` field).
REASONS: tuple[str, ...] = (
    "bad_json",
    "not_a_statement",
    "bad_actor",
    "unmapped_verb",
    "no_course",
    "invalid_timestamp",
    "invalid_duration",
    "invalid_event",
    "unreadable",
)

_ID_RE = re.compile(ID_PATTERN)
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
        digest = hashlib.sha256(iri.encode()).hexdigest()[:8]
        text = f"{text[:55]}-{digest}"
    return text


def parse_duration_ms(value: Any) -> int:
    """Milliseconds of an ISO 8601 duration such as ``PT1M30.5S`` or ``P1DT2H``.

    Weeks, days, hours, minutes and seconds only: years and months have no fixed
    length. Raises :class:`XapiMappingError` (``invalid_duration``) otherwise.
    """
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None or value in ("P", "PT") or value.endswith("T"):
        msg = f"result.duration {value!r} is not an ISO 8601 duration (e.g. PT1M30S)"
        raise XapiMappingError("invalid_duration", msg)
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


def _context(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    ctx = stmt.get("context")
    return ctx if isinstance(ctx, Mapping) else {}


def _object(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    obj = stmt.get("object")
    return obj if isinstance(obj, Mapping) else {}


def _is_activity(obj: Mapping[str, Any]) -> bool:
    return obj.get("objectType", "Activity") == "Activity"


def _activity_type(obj: Mapping[str, Any]) -> str | None:
    definition = obj.get("definition")
    if isinstance(definition, Mapping) and isinstance(definition.get("type"), str):
        return str(definition["type"])
    return None


def _is_video(stmt: Mapping[str, Any]) -> bool:
    """True if the object is a video or the statement follows the video profile."""
    if _activity_type(_object(stmt)) == VIDEO_ACTIVITY_TYPE:
        return True
    activities = _context(stmt).get("contextActivities")
    category = activities.get("category") if isinstance(activities, Mapping) else None
    if isinstance(category, Mapping):
        category = [category]
    return isinstance(category, list) and any(
        isinstance(c, Mapping) and c.get("id") == VIDEO_PROFILE for c in category
    )


def map_actor(stmt: Mapping[str, Any]) -> str:
    """The ``studentId`` of a statement's actor (see the module docstring)."""
    actor = stmt.get("actor")
    if not isinstance(actor, Mapping):
        raise XapiMappingError("bad_actor", "statement has no actor")
    account = actor.get("account")
    candidate: Any = None
    if isinstance(account, Mapping) and account.get("name") is not None:
        candidate = account.get("name")
    elif actor.get("mbox") is not None:
        candidate = actor.get("mbox")
        if isinstance(candidate, str):
            candidate = candidate.removeprefix("mailto:")
    elif actor.get("mbox_sha1sum") is not None:
        candidate = actor.get("mbox_sha1sum")
    if candidate is None:
        msg = "actor has no account.name, mbox or mbox_sha1sum"
        raise XapiMappingError("bad_actor", msg)
    if not isinstance(candidate, str) or not _ID_RE.fullmatch(candidate):
        msg = f"actor id {str(candidate)[:80]!r} does not match {ID_PATTERN}"
        raise XapiMappingError("bad_actor", msg)
    return candidate


def map_verb(stmt: Mapping[str, Any]) -> Action:
    """The action of a statement's verb, given its object.

    :data:`VIDEO_VERB_ACTIONS` applies first when the object is a video (or the
    statement declares the video profile); ``completed`` on an assessment or
    question is a quiz attempt; otherwise :data:`VERB_ACTIONS`.
    """
    verb = stmt.get("verb")
    verb_id = verb.get("id") if isinstance(verb, Mapping) else None
    if not isinstance(verb_id, str):
        raise XapiMappingError("unmapped_verb", "statement has no verb id")
    if _is_video(stmt) and verb_id in VIDEO_VERB_ACTIONS:
        return VIDEO_VERB_ACTIONS[verb_id]
    if verb_id == ADL + "completed" and _activity_type(_object(stmt)) in (
        ASSESSMENT_TYPES
    ):
        return Action.QUIZ_ATTEMPT
    try:
        return VERB_ACTIONS[verb_id]
    except KeyError:
        msg = f"no action for verb {verb_id[:200]!r}"
        raise XapiMappingError("unmapped_verb", msg) from None


def map_course(stmt: Mapping[str, Any]) -> str:
    """The ``courseId``: parent, else grouping, else the object activity's id."""
    activities = _context(stmt).get("contextActivities")
    iri = None
    if isinstance(activities, Mapping):
        iri = _first_id(activities.get("parent")) or _first_id(
            activities.get("grouping")
        )
    obj = _object(stmt)
    if iri is None and _is_activity(obj) and isinstance(obj.get("id"), str):
        iri = str(obj["id"])
    course = course_id_from_iri(iri) if iri else None
    if course is None:
        msg = "no parent/grouping context activity and no activity object id"
        raise XapiMappingError("no_course", msg)
    return course


def map_timestamp(stmt: Mapping[str, Any]) -> dt.datetime:
    """The event time: ``timestamp``, else ``stored``; must carry a UTC offset."""
    value = stmt.get("timestamp")
    source = "timestamp"
    if value is None:
        value, source = stmt.get("stored"), "stored"
    if not isinstance(value, str):
        msg = "statement has no timestamp" if value is None else "timestamp not text"
        raise XapiMappingError("invalid_timestamp", msg)
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        msg = f"{source} {value[:80]!r} is not ISO 8601"
        raise XapiMappingError("invalid_timestamp", msg) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        msg = f"{source} {value[:80]!r} has no timezone offset"
        raise XapiMappingError("invalid_timestamp", msg)
    return parsed


def map_region(stmt: Mapping[str, Any], default_region: str) -> Any:
    """The region context extension (:data:`REGION_EXTENSION` first), else default."""
    extensions = _context(stmt).get("extensions")
    if isinstance(extensions, Mapping):
        if REGION_EXTENSION in extensions:
            return extensions[REGION_EXTENSION]
        for key in sorted(k for k in extensions if isinstance(k, str)):
            if key.endswith("/region"):
                return extensions[key]
    return default_region


def _score(result: Mapping[str, Any]) -> Any:
    """``score.scaled``, else ``(raw - min) / (max - min)``; None when absent."""
    score = result.get("score")
    if not isinstance(score, Mapping):
        return None
    scaled = score.get("scaled")
    if scaled is not None:
        if isinstance(scaled, bool) or not isinstance(scaled, int | float):
            msg = f"score: result.score.scaled {scaled!r} is not a number"
            raise XapiMappingError("invalid_event", msg)
        return scaled
    numbers: list[Any] = [score.get("raw"), score.get("min"), score.get("max")]
    if all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        raw, low, high = (float(n) for n in numbers)
        if high > low:
            return (raw - low) / (high - low)
    return None


def map_statement(
    stmt: Mapping[str, Any], *, default_region: str, context: dict[str, Any]
) -> ActivityEvent:
    """Map one xAPI statement to a validated :class:`ActivityEvent`.

    Pure; runs in the importing process. ``context`` is the event validation
    context (``settings.event_context()``); ``default_region`` applies when the
    statement has no region extension.

    Raises:
        XapiMappingError: the statement cannot be mapped; ``reason`` is one of
            :data:`REASONS` (``invalid_event`` when the built event breaks the
            contract, with the field named in the detail).
    """
    if not isinstance(stmt, Mapping):
        msg = f"a statement is a JSON object, not {type(stmt).__name__}"
        raise XapiMappingError("not_a_statement", msg)
    student = map_actor(stmt)
    action = map_verb(stmt)
    course = map_course(stmt)
    timestamp = map_timestamp(stmt)
    data: dict[str, Any] = {
        "eventId": statement_event_id(stmt),
        "studentId": student,
        "courseId": course,
        "action": action,
        "timestamp": timestamp,
        "region": map_region(stmt, default_region),
        "metadata": {"source": "xapi", "verb": stmt["verb"]["id"]},
    }
    result = stmt.get("result")
    if isinstance(result, Mapping):
        if result.get("duration") is not None:
            data["durationMs"] = parse_duration_ms(result["duration"])
        if action is Action.QUIZ_ATTEMPT:
            score = _score(result)
            if score is not None:
                data["score"] = score
    registration = _context(stmt).get("registration")
    if isinstance(registration, str) and _ID_RE.fullmatch(registration):
        data["sessionId"] = registration
    try:
        return ActivityEvent.model_validate(data, context=context)
    except ValidationError as err:
        raise XapiMappingError("invalid_event", describe_error(err)) from err


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
    raw: bytes, default_region: str, context: dict[str, Any]
) -> ActivityEvent | XapiMappingError:
    """The event of one line, or the mapping error saying why there is none."""
    try:
        stmt = json.loads(raw)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return XapiMappingError("bad_json", str(err)[:200])
    try:
        return map_statement(stmt, default_region=default_region, context=context)
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
            outcome = broken or _map_line(raw, default_region, context)
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
