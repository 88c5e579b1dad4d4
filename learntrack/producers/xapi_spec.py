"""The xAPI specification as code: statement validation, comparison and queries.

Pure: no I/O, no clock, no randomness except the statement ids
:func:`prepare_statement` draws. Runs wherever it is called: in the API process
(the ``/xAPI/`` resources validate, compare and format statements with it) and in
the importer. Every function takes and returns plain JSON values (dicts, lists,
strings, numbers), so its results pickle and serialize as they are.

What it implements, by section of the specification (ADL xAPI 1.0.3, Part Two
"Data" and Part Three "Communication"; IEEE 9274.1.1 "xAPI 2.0" where it differs):

- :func:`validate_statement` / :func:`validate_statements`: the statement rules of
  Data 2.2 (formatting: no unknown properties, no nulls outside extensions, exact
  case of keys and enumerated values, typed values), 2.3.2 (voiding), 2.4.1 to
  2.4.11 (every property) and 4.1 to 4.6 (extensions, language maps, IRIs, UUIDs,
  timestamps, durations). A failure raises :class:`StatementError` naming the
  place (``statement[3].actor.mbox``) and a stable reason code (:data:`REASONS`).
- :func:`prepare_statement`: what the LRS fills in before storing (Data 2.4.1,
  2.4.7 to 2.4.10).
- :func:`same_statement`: the Statement Comparison Requirements (Data 2.3.1).
- :func:`format_statement`: the ``format`` parameter of GET statements
  (Communication 2.1.3) and the contextActivities array rule (Data 2.4.6.2).
- :func:`parse_json`: request bodies with no property used twice (Data 2.2.s2.b2).
- Query helpers: :func:`parse_agent_param`, :func:`agent_ifi`, :func:`person_object`,
  :func:`statement_agents`, :func:`statement_activities`,
  :func:`statement_registration`, :func:`voided_statement_id`,
  :func:`parse_timestamp`, :func:`parse_uuid`, :func:`parse_iri`,
  :func:`parse_accept_language` and :func:`parse_version_header` (Communication
  2.1.3, 3.3).

Where the text leaves room, the rule is "never refuse a valid statement"; the
choices made (each one is tested in ``tests/test_xapi_spec.py``):

- IRIs and IRLs: an absolute IRI (``scheme ":" rest``), any non-ASCII character
  allowed, no whitespace, control characters, ``<>"{}|^``, backslash or backtick; any
  scheme (no ``http`` demanded); percent-escapes are not checked (Data 2.2.s4.b6
  allows best effort).
- Language tags (map keys): RFC 5646 well-formedness (the ABNF, case-insensitive,
  the irregular grandfathered tags, no repeated extension singleton). A language
  map must have at least one entry (as the ADL conformance suite expects).
  ``context.language`` is any non-empty string: the conformance suite sends
  50-letter values there and expects them stored. An empty contextActivities
  object is refused (the conformance suite expects it; the text says only
  SHOULD NOT for empty objects, which are otherwise accepted).
- Timestamps: ISO 8601 calendar date and time, extended or basic format, ``T``
  (or a space, as RFC 3339 allows) between them, seconds and fractions optional
  (any number of fraction digits, ``.`` or ``,``), offset ``Z``, ``+hh``,
  ``+hhmm`` or ``+hh:mm``. A negative zero offset (``-00``, ``-0000``,
  ``-00:00``) is refused, as the conformance suite expects. Without an offset a
  timestamp is accepted in 1.0.x (the offset is a SHOULD there) and read as UTC;
  2.0 requires the offset. Week and ordinal dates are not accepted.
- Durations: ISO 8601 ``PnYnMnDTnHnMnS`` or ``PnW`` (weeks alone), a fraction
  (``.`` or ``,``) on the last component only; also ``PnS`` (the specification's
  own example ``P16559.14S``).
- Score: ``min`` equal to ``max`` is accepted (the text says "less than", the
  conformance suite only refuses ``min > max``).
- Interaction component lists that do not match the interactionType are accepted
  (the LRS MAY refuse them, Data 2.4.4.1.s13.b3); lists or correctResponsesPattern
  without any interactionType are refused (an interaction activity MUST have one).
- An anonymous Group's ``member`` list may be empty, except in ``authority``
  (exactly two Agents, the 3-legged OAuth form).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from learntrack.errors import LearnTrackError

#: Versions of the X-Experience-API-Version header this module knows. Any
#: ``1.0.x`` is accepted too, as Communication 3.3.s3.b5 requires.
SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "2.0.0")

#: The reserved verb of voiding statements (Data 2.3.2).
VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
#: The usageType of a statement signature attachment (Data 2.6).
SIGNATURE_USAGE_TYPE = "http://adlnet.gov/expapi/attachments/signature"
#: The values of the ``format`` query parameter (Communication 2.1.3).
FORMATS: tuple[str, ...] = ("exact", "ids", "canonical")
#: The interactionType values (Data 2.4.4.1.s8), exact case.
INTERACTION_TYPES: frozenset[str] = frozenset(
    {
        "true-false",
        "choice",
        "fill-in",
        "long-fill-in",
        "matching",
        "performance",
        "sequencing",
        "likert",
        "numeric",
        "other",
    }
)

#: Every :attr:`StatementError.reason`.
REASONS: tuple[str, ...] = (
    "bad_json",  # a body or JSON parameter does not parse (or uses NaN/Infinity)
    "duplicate_property",  # one object uses a property twice (Data 2.2.s2.b2)
    "bad_type",  # a value of the wrong JSON type (string for number, ...)
    "null_value",  # null outside extensions
    "missing_field",  # a required property is absent
    "unknown_property",  # a property the specification does not define (or wrong case)
    "empty_batch",  # a POST body that is an empty list
    "duplicate_id",  # two statements of one batch share an id
    "bad_uuid",
    "bad_iri",  # an IRI or IRL
    "bad_timestamp",
    "bad_duration",
    "bad_language_map",  # not an object, empty, a bad tag or a non-string value
    "bad_actor",  # an Agent or Group breaking its rules (IFIs, members, objectType)
    "bad_object",  # the statement's object (objectType, activity definition)
    "bad_result",  # score bounds
    "bad_context",  # revision/platform placement, contextActivities, contextAgents
    "bad_extension",  # an extensions map or a key that is no IRI
    "bad_attachment",  # contentType, length, sha2, signature attachment rules
    "bad_substatement",  # id/stored/version/authority in a SubStatement, nesting
    "bad_version",  # the statement's version or the version header
    "voiding",  # a voided verb whose object is not a StatementRef
    "bad_parameter",  # a query parameter value (format)
)


class StatementError(LearnTrackError, ValueError):
    """A statement (or a parameter) breaks the xAPI specification.

    ``str(err)`` is one line: ``<path>: <problem>``.

    Attributes:
        reason: a stable short code, one of :data:`REASONS`.
        path: where, e.g. ``statement[3].actor.mbox`` (a parameter's name for
            parameters).
        detail: the problem in words, one line.
    """

    def __init__(self, reason: str, path: str, detail: str) -> None:
        """Keep reason, path and detail; the message joins path and detail."""
        detail = " ".join(detail.split())
        super().__init__(f"{path}: {detail}")
        self.reason = reason
        self.path = path
        self.detail = detail


# -- small checks ---------------------------------------------------------------
def _fail(reason: str, path: str, detail: str) -> NoReturn:
    raise StatementError(reason, path, detail)


def _key(path: str, key: object) -> str:
    return f"{path}.{key}"


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


_KIND_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int in Python
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def _kind(value: object) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    for kind, name in _KIND_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."  # noqa: PLR2004


def _not_null(value: object, path: str) -> None:
    if value is None:
        _fail("null_value", path, "null is not allowed here (only in extensions)")


def _fields(
    value: object,
    path: str,
    allowed: frozenset[str],
    required: Iterable[str] = (),
    *,
    what: str = "an object",
) -> dict[str, Any]:
    """``value`` as an object with only ``allowed`` keys, no nulls, ``required``."""
    _not_null(value, path)
    if not isinstance(value, dict):
        _fail("bad_type", path, f"expected {what}, got {_kind(value)}")
    for key, item in value.items():
        if key not in allowed:
            hint = next((k for k in allowed if k.lower() == str(key).lower()), None)
            detail = f"unknown property {str(key)!r}"
            if hint is not None:
                detail += f" (property names are case-sensitive: use {hint!r})"
            _fail("unknown_property", _key(path, key), detail)
        _not_null(item, _key(path, key))
    for key in required:
        if key not in value:
            _fail("missing_field", _key(path, key), f"required property {key!r}")
    return value


def _string(value: object, path: str) -> str:
    _not_null(value, path)
    if not isinstance(value, str):
        _fail("bad_type", path, f"expected a string, got {_kind(value)}")
    return value


def _number(value: object, path: str) -> float:
    _not_null(value, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail("bad_type", path, f"expected a number, got {_kind(value)}")
    if not math.isfinite(value):
        _fail("bad_type", path, "expected a finite number")
    return float(value)


def _boolean(value: object, path: str) -> bool:
    _not_null(value, path)
    if not isinstance(value, bool):
        _fail("bad_type", path, f"expected true or false, got {_kind(value)}")
    return value


def _array(value: object, path: str) -> list[Any]:
    _not_null(value, path)
    if not isinstance(value, list):
        _fail("bad_type", path, f"expected an array, got {_kind(value)}")
    return value


# -- IRIs, UUIDs, language tags -------------------------------------------------
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*"
# Characters no IRI contains (RFC 3987): whitespace, C0/C1 controls, <>"{}|\^`.
_IRI_RE = re.compile(rf"^{_SCHEME}:[^\s<>\"{{}}|\\^`\x00-\x1f\x7f-\x9f]*\Z")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_SHA1_RE = re.compile(r"^[0-9a-fA-F]{40}\Z")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+\Z")
_MAILTO_RE = re.compile(r"^mailto:([^@\s<>\"{}|\\^`]+)@([^@\s<>\"{}|\\^`]+)\Z", re.I)
_MEDIA_TYPE_RE = re.compile(
    r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*(;.*)?\Z", re.S
)

# RFC 5646 section 2.1 (langtag / privateuse; grandfathered tags below).
_LANGTAG_RE = re.compile(
    r"""^(?:
      (?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})  # language [-extlang]
      (?:-[A-Za-z]{4})?                                      # script
      (?:-(?:[A-Za-z]{2}|[0-9]{3}))?                         # region
      (?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*         # variants
      (?P<ext>(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*) # extensions
      (?:-[xX](?:-[A-Za-z0-9]{1,8})+)?                       # private use
    | [xX](?:-[A-Za-z0-9]{1,8})+                             # private use only
    )\Z""",
    re.VERBOSE,
)
# The irregular grandfathered tags; the regular ones match the ABNF above.
_GRANDFATHERED = frozenset(
    t.lower()
    for t in (
        "en-GB-oed i-ami i-bnn i-default i-enochian i-hak i-klingon i-lux i-mingo "
        "i-navajo i-pwn i-tao i-tay i-tsu sgn-BE-FR sgn-BE-NL sgn-CH-DE"
    ).split()
)


def is_language_tag(text: str) -> bool:
    """True if ``text`` is a well-formed RFC 5646 language tag (case-insensitive).

    The ABNF of RFC 5646 section 2.1 plus its rule that an extension singleton
    appears at most once; the irregular grandfathered tags (``i-enochian``...)
    are accepted. Registered subtags are not checked (Data 2.2.s4.b2 asks for the
    "sequence of token lengths").
    """
    if text.lower() in _GRANDFATHERED:
        return True
    match = _LANGTAG_RE.match(text)
    if match is None:
        return False
    extensions = match.group("ext") or ""
    singletons = [s.lower() for s in extensions.split("-") if len(s) == 1]
    return len(singletons) == len(set(singletons))


def is_iri(text: str) -> bool:
    """True if ``text`` is an absolute IRI (best effort, Data 2.2.s4.b6).

    ``scheme ":" rest``: any scheme, non-ASCII characters allowed; no whitespace,
    control characters, ``<>"{}|^``, backslash or backtick anywhere.
    """
    return bool(_IRI_RE.match(text))


def _iri(value: object, path: str, what: str = "IRI") -> str:
    text = _string(value, path)
    if not is_iri(text):
        _fail("bad_iri", path, f"{_short(text)} is not an absolute {what}")
    return text


def _uuid(value: object, path: str) -> str:
    text = _string(value, path)
    if not _UUID_RE.match(text):
        _fail("bad_uuid", path, f"{_short(text)} is not a UUID in standard form")
    return text


def _language_map(value: object, path: str) -> dict[str, Any]:
    _not_null(value, path)
    if not isinstance(value, dict):
        _fail(
            "bad_language_map", path, f"a language map is an object, not {_kind(value)}"
        )
    if not value:
        _fail("bad_language_map", path, "a language map needs at least one entry")
    for tag, text in value.items():
        if not is_language_tag(tag):
            _fail(
                "bad_language_map", _key(path, tag), f"{tag!r} is not an RFC 5646 tag"
            )
        _not_null(text, _key(path, tag))
        if not isinstance(text, str):
            _fail(
                "bad_language_map",
                _key(path, tag),
                f"expected a string, got {_kind(text)}",
            )
    return value


def _extensions(value: object, path: str) -> None:
    _not_null(value, path)
    if not isinstance(value, dict):
        _fail("bad_extension", path, f"extensions are an object, not {_kind(value)}")
    for key in value:  # values are free (Data 4.1.s3.b2), null included
        if not is_iri(key):
            _fail(
                "bad_extension",
                _key(path, key),
                f"extension key {_short(key)} is no IRI",
            )


# -- timestamps and durations ---------------------------------------------------
_TIME_EXTENDED = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?\Z"
)
_TIME_BASIC = re.compile(
    r"^(\d{4})(\d{2})(\d{2})[Tt](\d{2})(\d{2})(?:(\d{2})(?:[.,](\d+))?)?"
    r"(Z|z|[+-]\d{2}(?:\d{2})?)?\Z"
)
_HOURS_PER_DAY = 24
_LEAP_SECOND = 60
_MAX_OFFSET_HOURS = 23
_MAX_MINUTE = 59


def _offset(text: str | None, value: str, path: str, *, required: bool) -> dt.tzinfo:
    if text is None:
        if required:
            _fail("bad_timestamp", path, f"{_short(value)} has no time zone offset")
        return dt.UTC
    if text in ("Z", "z"):
        return dt.UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > _MAX_OFFSET_HOURS or minutes > _MAX_MINUTE:
        _fail("bad_timestamp", path, f"{_short(value)} has an impossible offset")
    if text[0] == "-" and hours == minutes == 0:
        msg = f"{_short(value)}: a negative zero offset (-00:00) is not allowed"
        _fail("bad_timestamp", path, msg)
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-delta if text[0] == "-" else delta)


def parse_timestamp(
    value: object, *, path: str = "timestamp", version: str = "1.0.3"
) -> dt.datetime:
    """An xAPI Timestamp (Data 4.5) as an aware datetime, by the statements' rules.

    Used for statement properties and for the ``since``/``until`` parameters.
    Fractions beyond microseconds are truncated; a leap second (``:60``) becomes
    ``:59.999999``; ``24:00`` is the next day's midnight; no offset means UTC
    (refused in 2.0).

    Raises:
        StatementError: ``bad_type`` or ``bad_timestamp``.
    """
    text = _string(value, path)
    match = _TIME_EXTENDED.match(text) or _TIME_BASIC.match(text)
    if match is None:
        _fail("bad_timestamp", path, f"{_short(text)} is not an ISO 8601 date and time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tz = _offset(offset, text, path, required=_is_v2(version))
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    sec = int(second or 0)
    extra = dt.timedelta()
    if int(hour) == _HOURS_PER_DAY and int(minute) == sec == micro == 0:
        hour, extra = "0", dt.timedelta(days=1)
    if sec == _LEAP_SECOND:
        sec, micro = 59, 999_999
    try:
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), sec, micro, tz
        )
        return moment + extra
    except (ValueError, OverflowError):
        _fail("bad_timestamp", path, f"{_short(text)} is not a real date and time")


def format_timestamp(moment: dt.datetime) -> str:
    """A timestamp as the LRS writes it: UTC, milliseconds, ``Z``.

    ``2026-12-06T16:05:04.123Z``. ``moment`` must be timezone-aware.
    """
    if moment.tzinfo is None:
        msg = "format_timestamp needs a timezone-aware datetime"
        raise ValueError(msg)
    text = moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION_RE = re.compile(
    rf"^P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}D)?(?:(T)(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?\Z"
)
_DURATION_ALONE_RE = re.compile(rf"^P{_NUM}[WS]\Z")


def is_duration(text: str) -> bool:
    """True if ``text`` is an ISO 8601 duration as xAPI allows (Data 4.6).

    ``PnYnMnDTnHnMnS`` (at least one component, ``T`` only before a time
    component, a fraction on the last component only), ``PnW`` (weeks cannot be
    combined) or ``PnS`` (the specification's example ``P16559.14S``).
    """
    if _DURATION_ALONE_RE.match(text):
        return True
    match = _DURATION_RE.match(text)
    if match is None:
        return False
    years, months, days, t_mark, hours, minutes, seconds = match.groups()
    parts = [p for p in (years, months, days, hours, minutes, seconds) if p]
    if not parts or (t_mark and not (hours or minutes or seconds)):
        return False
    return not any(("." in p or "," in p) for p in parts[:-1])


def _duration(value: object, path: str) -> None:
    text = _string(value, path)
    if not is_duration(text):
        _fail("bad_duration", path, f"{_short(text)} is not an ISO 8601 duration")


# -- versions -------------------------------------------------------------------
_HEADER_V1 = re.compile(r"^1\.0(?:\.\d+(?:[-+][0-9A-Za-z.+-]*)?)?\Z")
_HEADER_V2 = re.compile(r"^2\.0(?:\.\d+(?:[-+][0-9A-Za-z.+-]*)?)?\Z")


def parse_version_header(value: str | None) -> str:
    """The X-Experience-API-Version a request speaks, normalized (Communication 3.3).

    ``1.0`` reads as ``1.0.0`` and ``2.0`` as ``2.0.0``; any ``1.0.x`` and
    ``2.0.x`` is accepted (the LRS MUST accept every ``1.0.`` patch). The result
    is what :func:`validate_statement` takes as ``version``.

    Raises:
        StatementError: ``bad_version`` when the header is missing, before 1.0.0 or
            1.1.0 and later (the LRS answers 400).
    """
    path = "X-Experience-API-Version"
    if value is None or not value.strip():
        _fail("bad_version", path, "the header is required on every request")
    text = value.strip()
    if _HEADER_V1.match(text) or _HEADER_V2.match(text):
        return text if text.count(".") >= 2 else text + ".0"  # noqa: PLR2004
    known = ", ".join(SUPPORTED_VERSIONS)
    _fail("bad_version", path, f"version {_short(text)} is not supported ({known})")


def _is_v2(version: str) -> bool:
    return version.startswith("2.")


def statement_version(version: str) -> str:
    """The statement ``version`` the LRS sets when missing: ``1.0.0`` or ``2.0.0``.

    Data 2.4.10: statements of every 1.0.x request carry ``1.0.0``; IEEE 9274.1.1
    uses ``2.0.0``. ``version`` is a request version (:func:`parse_version_header`).
    """
    return "2.0.0" if _is_v2(parse_version_header(version)) else "1.0.0"


# -- the validator --------------------------------------------------------------
_IFIS = ("mbox", "mbox_sha1sum", "openid", "account")
_AGENT_KEYS = frozenset({"objectType", "name", *_IFIS})
_GROUP_KEYS = frozenset({"objectType", "name", "member", *_IFIS})
_ACCOUNT_KEYS = frozenset({"homePage", "name"})
_VERB_KEYS = frozenset({"id", "display"})
_ACTIVITY_KEYS = frozenset({"objectType", "id", "definition"})
_COMPONENT_LISTS = ("choices", "scale", "source", "target", "steps")
_DEFINITION_KEYS = frozenset(
    {
        "name",
        "description",
        "type",
        "moreInfo",
        "extensions",
        "interactionType",
        "correctResponsesPattern",
        *_COMPONENT_LISTS,
    }
)
_COMPONENT_KEYS = frozenset({"id", "description"})
_STATEMENT_REF_KEYS = frozenset({"objectType", "id"})
_RESULT_KEYS = frozenset(
    {"score", "success", "completion", "response", "duration", "extensions"}
)
_SCORE_KEYS = frozenset({"scaled", "raw", "min", "max"})
_CONTEXT_KEYS = frozenset(
    {
        "registration",
        "instructor",
        "team",
        "contextActivities",
        "revision",
        "platform",
        "language",
        "statement",
        "extensions",
    }
)
_CONTEXT_KEYS_V2 = _CONTEXT_KEYS | {"contextAgents", "contextGroups"}
_CONTEXT_ACTIVITY_KEYS = frozenset({"parent", "grouping", "category", "other"})
_CONTEXT_AGENT_KEYS = frozenset({"objectType", "agent", "relevantTypes"})
_CONTEXT_GROUP_KEYS = frozenset({"objectType", "group", "relevantTypes"})
_ATTACHMENT_KEYS = frozenset(
    {"usageType", "display", "description", "contentType", "length", "sha2", "fileUrl"}
)
_ATTACHMENT_REQUIRED = ("usageType", "display", "contentType", "length", "sha2")
_STATEMENT_KEYS = frozenset(
    {
        "id",
        "actor",
        "verb",
        "object",
        "result",
        "context",
        "timestamp",
        "stored",
        "authority",
        "version",
        "attachments",
    }
)
_SUBSTATEMENT_FORBIDDEN = ("id", "stored", "version", "authority")
_SUBSTATEMENT_KEYS = (_STATEMENT_KEYS - set(_SUBSTATEMENT_FORBIDDEN)) | {"objectType"}
_REQUIRED = ("actor", "verb", "object")
_OBJECT_TYPES = ("Activity", "Agent", "Group", "StatementRef", "SubStatement")
_AUTHORITY_MEMBERS = 2
_STATEMENT_VERSION_V1 = re.compile(r"^1\.0(?:\.\d+(?:[-+][0-9A-Za-z.+-]*)?)?\Z")
_STATEMENT_VERSION_V2 = re.compile(r"^[12]\.0(?:\.\d+(?:[-+][0-9A-Za-z.+-]*)?)?\Z")


class _Validator:
    """The statement rules of one request version (1.0.x or 2.0.x)."""

    def __init__(self, version: str) -> None:
        self.v2 = _is_v2(parse_version_header(version))

    # agents and groups (Data 2.4.2)
    def ifis(self, obj: dict[str, Any], path: str) -> int:
        """Check each IFI present; return how many there are."""
        if "mbox" in obj:
            mbox = _string(obj["mbox"], _key(path, "mbox"))
            if not _MAILTO_RE.match(mbox):
                msg = f"{_short(mbox)} is not a mailto: IRI of one email address"
                _fail("bad_actor", _key(path, "mbox"), msg)
        if "mbox_sha1sum" in obj:
            sha1 = _string(obj["mbox_sha1sum"], _key(path, "mbox_sha1sum"))
            if not _SHA1_RE.match(sha1):
                msg = f"{_short(sha1)} is not 40 hex digits (a SHA-1)"
                _fail("bad_actor", _key(path, "mbox_sha1sum"), msg)
        if "openid" in obj:
            _iri(obj["openid"], _key(path, "openid"), "URI")
        if "account" in obj:
            where = _key(path, "account")
            account = _fields(
                obj["account"], where, _ACCOUNT_KEYS, ("homePage", "name")
            )
            _iri(account["homePage"], _key(where, "homePage"), "IRL")
            _string(account["name"], _key(where, "name"))
        return sum(1 for k in _IFIS if k in obj)

    def agent(self, value: object, path: str) -> dict[str, Any]:
        """An Agent: optional objectType ``Agent``, exactly one IFI."""
        obj = _fields(value, path, _AGENT_KEYS)
        if "objectType" in obj and obj["objectType"] != "Agent":
            msg = f"objectType {_short(obj['objectType'])} here must be 'Agent'"
            _fail("bad_actor", _key(path, "objectType"), msg)
        if "name" in obj:
            _string(obj["name"], _key(path, "name"))
        count = self.ifis(obj, path)
        if count != 1:
            msg = f"an Agent has exactly one of {', '.join(_IFIS)} (found {count})"
            _fail("bad_actor", path, msg)
        return obj

    def group(
        self, value: object, path: str, *, members: int | None = None
    ) -> dict[str, Any]:
        """A Group: identified (one IFI) or anonymous (member list, no IFI).

        ``members``: the exact number of members required (authority).
        """
        obj = _fields(value, path, _GROUP_KEYS, ("objectType",))
        if obj["objectType"] != "Group":
            msg = f"objectType {_short(obj['objectType'])} here must be 'Group'"
            _fail("bad_actor", _key(path, "objectType"), msg)
        if "name" in obj:
            _string(obj["name"], _key(path, "name"))
        count = self.ifis(obj, path)
        if count > 1:
            _fail("bad_actor", path, f"a Group has at most one IFI (found {count})")
        if "member" in obj:
            where = _key(path, "member")
            for i, member in enumerate(_array(obj["member"], where)):
                if isinstance(member, dict) and member.get("objectType") == "Group":
                    msg = "a Group's members are Agents, never Groups"
                    _fail("bad_actor", _key(_index(where, i), "objectType"), msg)
                self.agent(member, _index(where, i))
        elif count == 0:
            msg = "an anonymous Group (no IFI) must list its member Agents"
            _fail("missing_field", _key(path, "member"), msg)
        if members is not None and (count or len(obj.get("member", [])) != members):
            msg = f"a Group as authority is anonymous with exactly {members} Agents"
            _fail("bad_actor", path, msg)
        return obj

    def actor(self, value: object, path: str) -> dict[str, Any]:
        """An Agent or a Group, by objectType."""
        if isinstance(value, dict) and value.get("objectType") == "Group":
            return self.group(value, path)
        if isinstance(value, dict) and value.get("objectType", "Agent") != "Agent":
            msg = f"objectType {_short(value['objectType'])} must be 'Agent' or 'Group'"
            _fail("bad_actor", _key(path, "objectType"), msg)
        return self.agent(value, path)

    # verb (Data 2.4.3)
    def verb(self, value: object, path: str) -> dict[str, Any]:
        """A Verb: id IRI, optional display language map."""
        obj = _fields(value, path, _VERB_KEYS, ("id",))
        _iri(obj["id"], _key(path, "id"))
        if "display" in obj:
            _language_map(obj["display"], _key(path, "display"))
        return obj

    # objects (Data 2.4.4)
    def activity(self, value: object, path: str, reason: str) -> dict[str, Any]:
        """An Activity: id IRI, optional objectType ``Activity`` and definition."""
        obj = _fields(value, path, _ACTIVITY_KEYS, ("id",))
        if "objectType" in obj and obj["objectType"] != "Activity":
            msg = f"objectType {_short(obj['objectType'])} here must be 'Activity'"
            _fail(reason, _key(path, "objectType"), msg)
        _iri(obj["id"], _key(path, "id"))
        if "definition" in obj:
            self.definition(obj["definition"], _key(path, "definition"))
        return obj

    def definition(self, value: object, path: str) -> None:
        """An Activity Definition, interaction properties included."""
        obj = _fields(value, path, _DEFINITION_KEYS)
        for key in ("name", "description"):
            if key in obj:
                _language_map(obj[key], _key(path, key))
        if "type" in obj:
            _iri(obj["type"], _key(path, "type"))
        if "moreInfo" in obj:
            _iri(obj["moreInfo"], _key(path, "moreInfo"), "IRL")
        if "extensions" in obj:
            _extensions(obj["extensions"], _key(path, "extensions"))
        if "interactionType" in obj:
            kind = _string(obj["interactionType"], _key(path, "interactionType"))
            if kind not in INTERACTION_TYPES:
                known = ", ".join(sorted(INTERACTION_TYPES))
                msg = f"{_short(kind)} is not one of {known}"
                _fail("bad_object", _key(path, "interactionType"), msg)
        if "correctResponsesPattern" in obj:
            where = _key(path, "correctResponsesPattern")
            for i, item in enumerate(_array(obj["correctResponsesPattern"], where)):
                _string(item, _index(where, i))
        for key in _COMPONENT_LISTS:
            if key in obj:
                self.components(obj[key], _key(path, key))
        interaction = [
            k for k in ("correctResponsesPattern", *_COMPONENT_LISTS) if k in obj
        ]
        if interaction and "interactionType" not in obj:
            msg = f"an interaction activity ({interaction[0]}) needs an interactionType"
            _fail("bad_object", _key(path, "interactionType"), msg)

    def components(self, value: object, path: str) -> None:
        """An interaction component list: objects with distinct string ids."""
        seen: set[str] = set()
        for i, item in enumerate(_array(value, path)):
            where = _index(path, i)
            component = _fields(item, where, _COMPONENT_KEYS, ("id",))
            ident = _string(component["id"], _key(where, "id"))
            if ident in seen:
                msg = f"interaction component id {_short(ident)} appears twice"
                _fail("bad_object", _key(where, "id"), msg)
            seen.add(ident)
            if "description" in component:
                _language_map(component["description"], _key(where, "description"))

    def statement_ref(self, value: object, path: str, reason: str) -> dict[str, Any]:
        """A Statement Reference: objectType ``StatementRef`` and a UUID id."""
        obj = _fields(value, path, _STATEMENT_REF_KEYS, ("objectType", "id"))
        if obj["objectType"] != "StatementRef":
            msg = f"objectType {_short(obj['objectType'])} here must be 'StatementRef'"
            _fail(reason, _key(path, "objectType"), msg)
        _uuid(obj["id"], _key(path, "id"))
        return obj

    def statement_object(self, value: object, path: str, *, nested: bool) -> str:
        """The statement's object, by objectType; returns the objectType."""
        _not_null(value, path)
        if not isinstance(value, dict):
            _fail("bad_type", path, f"expected an object, got {_kind(value)}")
        kind = value.get("objectType", "Activity")
        if "objectType" not in value and any(k in value for k in (*_IFIS, "member")):
            msg = "an Agent or Group as the object must give its objectType"
            _fail("bad_object", _key(path, "objectType"), msg)
        if kind == "Activity":
            self.activity(value, path, "bad_object")
        elif kind == "Agent":
            self.agent(value, path)
        elif kind == "Group":
            self.group(value, path)
        elif kind == "StatementRef":
            self.statement_ref(value, path, "bad_object")
        elif kind == "SubStatement":
            if nested:
                msg = "a SubStatement cannot contain another SubStatement"
                _fail("bad_substatement", _key(path, "objectType"), msg)
            self.statement(value, path, sub=True)
        else:
            msg = f"objectType {_short(kind)} is not one of {', '.join(_OBJECT_TYPES)}"
            _fail("bad_object", _key(path, "objectType"), msg)
        return str(kind)

    # result (Data 2.4.5)
    def result(self, value: object, path: str) -> None:
        """A Result: score bounds, booleans, response, duration, extensions."""
        obj = _fields(value, path, _RESULT_KEYS)
        if "score" in obj:
            self.score(obj["score"], _key(path, "score"))
        for key in ("success", "completion"):
            if key in obj:
                _boolean(obj[key], _key(path, key))
        if "response" in obj:
            _string(obj["response"], _key(path, "response"))
        if "duration" in obj:
            _duration(obj["duration"], _key(path, "duration"))
        if "extensions" in obj:
            _extensions(obj["extensions"], _key(path, "extensions"))

    def score(self, value: object, path: str) -> None:
        """A Score: scaled in [-1, 1], min <= raw <= max."""
        obj = _fields(value, path, _SCORE_KEYS)
        nums = {k: _number(obj[k], _key(path, k)) for k in _SCORE_KEYS if k in obj}
        if "scaled" in nums and not -1 <= nums["scaled"] <= 1:
            _fail("bad_result", _key(path, "scaled"), "scaled must be between -1 and 1")
        low, high, raw = nums.get("min"), nums.get("max"), nums.get("raw")
        if low is not None and high is not None and low > high:
            _fail("bad_result", _key(path, "min"), "min must not be greater than max")
        if raw is not None and low is not None and raw < low:
            _fail("bad_result", _key(path, "raw"), "raw must not be less than min")
        if raw is not None and high is not None and raw > high:
            _fail("bad_result", _key(path, "raw"), "raw must not be greater than max")

    # context (Data 2.4.6; contextAgents/contextGroups: 2.0)
    def context(self, value: object, path: str, object_type: str) -> None:
        """A Context; revision/platform only when the object is an Activity."""
        obj = _fields(value, path, _CONTEXT_KEYS_V2 if self.v2 else _CONTEXT_KEYS)
        if "registration" in obj:
            _uuid(obj["registration"], _key(path, "registration"))
        if "instructor" in obj:
            self.actor(obj["instructor"], _key(path, "instructor"))
        if "team" in obj:
            self.group(obj["team"], _key(path, "team"))
        if "contextActivities" in obj:
            self.context_activities(
                obj["contextActivities"], _key(path, "contextActivities")
            )
        for key in ("revision", "platform"):
            if key in obj:
                _string(obj[key], _key(path, key))
                if object_type != "Activity":
                    msg = f"{key} is only allowed when the object is an Activity"
                    _fail("bad_context", _key(path, key), msg)
        if "language" in obj and not _string(obj["language"], _key(path, "language")):
            _fail("bad_context", _key(path, "language"), "language is an empty string")
        if "statement" in obj:
            self.statement_ref(obj["statement"], _key(path, "statement"), "bad_context")
        if "extensions" in obj:
            _extensions(obj["extensions"], _key(path, "extensions"))
        if "contextAgents" in obj:
            self.context_members(obj["contextAgents"], _key(path, "contextAgents"))
        if "contextGroups" in obj:
            self.context_members(obj["contextGroups"], _key(path, "contextGroups"))

    def context_activities(self, value: object, path: str) -> None:
        """contextActivities: parent/grouping/category/other, each Activity or list."""
        obj = _fields(value, path, _CONTEXT_ACTIVITY_KEYS)
        if not obj:  # as the ADL conformance suite expects
            _fail("bad_context", path, "contextActivities needs at least one entry")
        for key, item in obj.items():
            where = _key(path, key)
            if isinstance(item, list):
                for i, activity in enumerate(item):
                    self.activity(activity, _index(where, i), "bad_context")
            elif isinstance(item, dict):
                self.activity(item, where, "bad_context")
            else:
                msg = f"expected an Activity or an array of them, got {_kind(item)}"
                _fail("bad_context", where, msg)

    def context_members(self, value: object, path: str) -> None:
        """The 2.0 contextAgents / contextGroups: typed entries, relevantTypes IRIs."""
        agents = path.endswith("contextAgents")
        kind, member = (
            ("contextAgent", "agent") if agents else ("contextGroup", "group")
        )
        allowed = _CONTEXT_AGENT_KEYS if agents else _CONTEXT_GROUP_KEYS
        for i, item in enumerate(_array(value, path)):
            where = _index(path, i)
            entry = _fields(item, where, allowed, ("objectType", member))
            if entry["objectType"] != kind:
                msg = f"objectType {_short(entry['objectType'])} here must be {kind!r}"
                _fail("bad_context", _key(where, "objectType"), msg)
            if agents:
                self.agent(entry["agent"], _key(where, "agent"))
            else:
                self.group(entry["group"], _key(where, "group"))
            if "relevantTypes" in entry:
                types = _array(entry["relevantTypes"], _key(where, "relevantTypes"))
                if not types:
                    msg = "relevantTypes, when present, lists at least one IRI"
                    _fail("bad_context", _key(where, "relevantTypes"), msg)
                for j, iri in enumerate(types):
                    _iri(iri, _index(_key(where, "relevantTypes"), j))

    # attachments (Data 2.4.11, 2.6)
    def attachments(self, value: object, path: str) -> None:
        """Attachment metadata; a signature attachment is application/octet-stream."""
        for i, item in enumerate(_array(value, path)):
            where = _index(path, i)
            obj = _fields(item, where, _ATTACHMENT_KEYS, _ATTACHMENT_REQUIRED)
            usage = _iri(obj["usageType"], _key(where, "usageType"))
            _language_map(obj["display"], _key(where, "display"))
            if "description" in obj:
                _language_map(obj["description"], _key(where, "description"))
            content_type = _string(obj["contentType"], _key(where, "contentType"))
            if not _MEDIA_TYPE_RE.match(content_type):
                msg = f"{_short(content_type)} is not an Internet Media Type"
                _fail("bad_attachment", _key(where, "contentType"), msg)
            length = _number(obj["length"], _key(where, "length"))
            if length < 0 or length != int(length):
                msg = "length is a non-negative integer (octets)"
                _fail("bad_attachment", _key(where, "length"), msg)
            sha2 = _string(obj["sha2"], _key(where, "sha2"))
            if not _HEX_RE.match(sha2) or len(sha2) not in {56, 64, 96, 128}:
                msg = f"{_short(sha2)} is not a hex SHA-2 digest"
                _fail("bad_attachment", _key(where, "sha2"), msg)
            if "fileUrl" in obj:
                _iri(obj["fileUrl"], _key(where, "fileUrl"), "IRL")
            if (
                usage == SIGNATURE_USAGE_TYPE
                and content_type != "application/octet-stream"
            ):
                msg = "a signature attachment has contentType application/octet-stream"
                _fail("bad_attachment", _key(where, "contentType"), msg)

    # the statement (Data 2.2, 2.4)
    def statement(self, value: object, path: str, *, sub: bool = False) -> None:
        """A Statement, or a SubStatement with ``sub`` (Data 2.4.4.3)."""
        if sub and isinstance(value, dict):
            for key in _SUBSTATEMENT_FORBIDDEN:
                if key in value:
                    msg = f"a SubStatement must not have {key!r}"
                    _fail("bad_substatement", _key(path, key), msg)
        allowed = _SUBSTATEMENT_KEYS if sub else _STATEMENT_KEYS
        obj = _fields(value, path, allowed, _REQUIRED, what="a statement object")
        if "id" in obj:
            _uuid(obj["id"], _key(path, "id"))
        self.actor(obj["actor"], _key(path, "actor"))
        verb = self.verb(obj["verb"], _key(path, "verb"))
        object_type = self.statement_object(
            obj["object"], _key(path, "object"), nested=sub
        )
        if "result" in obj:
            self.result(obj["result"], _key(path, "result"))
        if "context" in obj:
            self.context(obj["context"], _key(path, "context"), object_type)
        self.lrs_properties(obj, path)
        if "attachments" in obj:
            self.attachments(obj["attachments"], _key(path, "attachments"))
        if verb["id"] == VOIDED_VERB and object_type != "StatementRef":
            msg = (
                "a voiding statement's object is a StatementRef to the voided statement"
            )
            _fail("voiding", _key(path, "object"), msg)

    def lrs_properties(self, obj: dict[str, Any], path: str) -> None:
        """timestamp, stored, authority and version (Data 2.4.7 to 2.4.10)."""
        for key in ("timestamp", "stored"):
            if key in obj:
                version = "2.0.0" if self.v2 else "1.0.0"
                parse_timestamp(obj[key], path=_key(path, key), version=version)
        if "authority" in obj:
            self.authority(obj["authority"], _key(path, "authority"))
        if "version" in obj:
            text = _string(obj["version"], _key(path, "version"))
            pattern = _STATEMENT_VERSION_V2 if self.v2 else _STATEMENT_VERSION_V1
            if not pattern.match(text):
                allowed = "1.0.x or 2.0.x" if self.v2 else "1.0.x"
                msg = f"version {_short(text)} is not {allowed}"
                _fail("bad_version", _key(path, "version"), msg)

    def authority(self, value: object, path: str) -> None:
        """An Agent, or an anonymous Group of exactly two Agents (3-legged OAuth)."""
        if isinstance(value, dict) and value.get("objectType") == "Group":
            self.group(value, path, members=_AUTHORITY_MEMBERS)
        else:
            self.actor(value, path)


def validate_statement(
    statement: object, *, version: str = "1.0.3", path: str = "statement"
) -> None:
    """Check one statement against the specification, field by field.

    Pure; runs in the API process and the importer. ``version`` is the request's
    X-Experience-API-Version (``1.0.0``..``1.0.3``, ``2.0.0``; see
    :func:`parse_version_header`): 2.0 adds ``contextAgents``/``contextGroups``,
    statement version ``2.0.x`` and requires timestamp offsets.

    Raises:
        StatementError: the first rule broken, with its reason and path.
    """
    _Validator(version).statement(statement, path)


def validate_statements(
    body: object, *, version: str = "1.0.3"
) -> list[dict[str, Any]]:
    """The statements of a POST body: one statement or a non-empty list of them.

    Each is checked with :func:`validate_statement` (paths ``statement`` for a
    single one, ``statement[i]`` in a list); two statements of one list with the
    same id are refused (Communication 2.1.2.s2.b6, ``duplicate_id``).

    Returns:
        The statements, as a list (the same dicts, not copies).

    Raises:
        StatementError: the first statement breaking a rule.
    """
    validator = _Validator(version)
    if isinstance(body, dict):
        validator.statement(body, "statement")
        return [body]
    _not_null(body, "statement")
    if not isinstance(body, list):
        msg = f"expected a statement or an array of statements, got {_kind(body)}"
        _fail("bad_type", "statement", msg)
    if not body:
        _fail("empty_batch", "statement", "the array of statements is empty")
    seen: dict[str, int] = {}
    for i, item in enumerate(body):
        validator.statement(item, _index("statement", i))
        if "id" in item:
            ident = item["id"].lower()
            if ident in seen:
                msg = f"id {item['id']} is also the id of statement[{seen[ident]}]"
                _fail("duplicate_id", _key(_index("statement", i), "id"), msg)
            seen[ident] = i
    return list(body)


# -- what the LRS fills in ------------------------------------------------------
def prepare_statement(
    statement: Mapping[str, Any],
    *,
    stored: dt.datetime,
    authority: Mapping[str, Any],
    version: str,
) -> dict[str, Any]:
    """The statement as the LRS stores it; ``statement`` itself is not changed.

    A deep copy with: ``id`` a new UUID4 when missing (Data 2.4.1.s2.b1);
    ``timestamp`` = ``stored`` when missing (2.4.7.s3.b2); ``stored`` set
    (2.4.8.s3.b2: always overwritten); ``authority`` replaced by the credentials'
    (2.4.9.s3.b4); ``version`` set to ``1.0.0`` (or ``2.0.0`` for a 2.0 request)
    when missing (2.4.10.s3.b3). Everything else exactly as sent. Runs in the API
    process; not idempotent when the id is missing (a new one each call).

    Args:
        statement: a statement that passed :func:`validate_statement`.
        stored: when the LRS stores it; timezone-aware (written in UTC, ms).
        authority: the Agent (or Group) of the request's credentials.
        version: the request's X-Experience-API-Version.
    """
    prepared = copy.deepcopy(dict(statement))
    stamp = format_timestamp(stored)
    prepared.setdefault("id", str(uuid.uuid4()))
    prepared.setdefault("timestamp", stamp)
    prepared["stored"] = stamp
    prepared["authority"] = copy.deepcopy(dict(authority))
    prepared.setdefault("version", statement_version(version))
    return prepared


# -- statement comparison (Data 2.3.1) ------------------------------------------
def _canonical_mbox(mbox: str) -> str:
    """``mailto:`` lowercased and the address's domain lowercased (2.4.2.3.s4.b1)."""
    match = _MAILTO_RE.match(mbox)
    if match is None:
        return mbox
    return f"mailto:{match.group(1)}@{match.group(2).lower()}"


def _canonical_agent(agent: Any) -> Any:
    if not isinstance(agent, dict):
        return agent
    out = {k: v for k, v in agent.items() if k != "member"}
    if out.get("objectType") == "Agent":
        del out["objectType"]
    if isinstance(out.get("mbox"), str):
        out["mbox"] = _canonical_mbox(out["mbox"])
    if isinstance(out.get("mbox_sha1sum"), str):
        out["mbox_sha1sum"] = out["mbox_sha1sum"].lower()
    if isinstance(agent.get("member"), list):  # an unordered list (2.4.2.2.s3.b4)
        members = [_canonical_agent(m) for m in agent["member"]]
        out["member"] = sorted(members, key=lambda m: json.dumps(m, sort_keys=True))
    return out


def _canonical_uuid(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _canonical_instant(value: Any) -> Any:
    """A timestamp as its instant, to the millisecond (Data 4.5.s1.b7)."""
    try:
        return format_timestamp(parse_timestamp(value, version="1.0.3"))
    except (StatementError, OverflowError):  # invalid, or beyond year 9999 in UTC
        return value


def _canonical_duration(value: Any) -> Any:
    """A duration string with its seconds' fraction cut to 0.01 s (Data 4.6.s1.b5)."""
    if not isinstance(value, str):
        return value
    match = re.search(r"(\d+)[.,](\d+)S\Z", value)
    if match is None:
        return value
    fraction = match.group(2)[:2].rstrip("0")
    seconds = match.group(1) + (f".{fraction}" if fraction else "")
    return value[: match.start()] + seconds + "S"


def _canonical_activity(activity: Any) -> Any:
    """An Activity as its id: definitions are not part of the statement (2.3.1.b2)."""
    if (
        isinstance(activity, dict)
        and activity.get("objectType", "Activity") == "Activity"
    ):
        return {"id": activity.get("id")}
    return activity


def _canonical_object(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("objectType", "Activity")
    if kind == "Activity":
        return _canonical_activity(obj)
    if kind in ("Agent", "Group"):
        return {**_canonical_agent(obj), "objectType": kind}
    if kind == "StatementRef":
        return {**obj, "id": _canonical_uuid(obj.get("id"))}
    if kind == "SubStatement":
        return _canonical_statement(obj)
    return obj


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _canonical_context(context: Any) -> Any:
    if not isinstance(context, dict):
        return context
    out = dict(context)
    if "registration" in out:
        out["registration"] = _canonical_uuid(out["registration"])
    for key in ("instructor", "team"):
        if key in out:
            out[key] = _canonical_agent(out[key])
    if isinstance(out.get("contextActivities"), dict):
        out["contextActivities"] = {
            k: [_canonical_activity(a) for a in _as_list(v)]
            for k, v in out["contextActivities"].items()
        }
    if isinstance(out.get("statement"), dict):
        ref = out["statement"]
        out["statement"] = {**ref, "id": _canonical_uuid(ref.get("id"))}
    if isinstance(out.get("language"), str):
        out["language"] = out["language"].lower()
    for key, member in (("contextAgents", "agent"), ("contextGroups", "group")):
        if isinstance(out.get(key), list):
            out[key] = [
                {**e, member: _canonical_agent(e.get(member))}
                if isinstance(e, dict)
                else e
                for e in out[key]
            ]
    return out


def _canonical_statement(stmt: Mapping[str, Any]) -> dict[str, Any]:
    """A statement with every difference the LRS may introduce removed."""
    out: dict[str, Any] = {}
    for key, value in stmt.items():
        if key in ("stored", "authority", "version", "attachments"):
            continue  # set by the LRS / not part of the statement (2.3.1)
        if key in ("actor",):
            out[key] = _canonical_agent(value)
        elif key == "verb":  # display is not part of the statement (2.3.1.b3)
            out[key] = {"id": value.get("id")} if isinstance(value, dict) else value
        elif key == "object":
            out[key] = _canonical_object(value)
        elif key == "context":
            out[key] = _canonical_context(value)
        elif key == "result" and isinstance(value, dict) and "duration" in value:
            out[key] = {**value, "duration": _canonical_duration(value["duration"])}
        elif key == "timestamp":
            out[key] = _canonical_instant(value)
        elif key == "id":
            out[key] = _canonical_uuid(value)
        else:
            out[key] = value
    return out


def same_statement(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True if ``a`` and ``b`` are the same statement by Data 2.3.1's comparison.

    Differences the LRS may have caused are ignored: ``stored``, ``authority``,
    ``version``; ``id`` and ``timestamp`` when one side lacks them (the LRS fills
    them in); the verb's ``display`` and Activity ``definition`` (not part of the
    statement); the order of a Group's members; ``objectType`` ``Activity`` /
    ``Agent`` given or left to its default; a single contextActivities Activity
    or a list of it; attachments (not part of the statement, 2.3.1.b6). Case is
    ignored for UUIDs, mbox domains, mbox_sha1sum hex and the context language
    tag. Timestamps compare as instants to the millisecond; durations as strings
    with seconds cut to 0.01 s. Everything else must be equal (JSON equality:
    ``1`` equals ``1.0``). Used to answer 409 to a PUT/POST of a known id.
    """
    left, right = _canonical_statement(a), _canonical_statement(b)
    for key in ("id", "timestamp"):
        if key not in left or key not in right:
            left.pop(key, None)
            right.pop(key, None)
    return left == right


# -- agents, activities, registrations: the query keys --------------------------
def agent_ifi(agent: Mapping[str, Any]) -> str | None:
    """The canonical key of an Agent's or identified Group's IFI; None if it has none.

    ``mbox:mailto:a@example.com`` (domain lowercased), ``mbox_sha1sum:<hex>``
    (lowercased), ``openid:<uri>``, ``account:<homePage>|<name>``. Two agents with
    equal keys are the same agent for the ``agent`` filter (Communication 2.1.3).
    Index the stored statements by these keys.
    """
    mbox = agent.get("mbox")
    if isinstance(mbox, str):
        return "mbox:" + _canonical_mbox(mbox)
    sha1 = agent.get("mbox_sha1sum")
    if isinstance(sha1, str):
        return "mbox_sha1sum:" + sha1.lower()
    openid = agent.get("openid")
    if isinstance(openid, str):
        return "openid:" + openid
    account = agent.get("account")
    if isinstance(account, Mapping):
        return f"account:{account.get('homePage')}|{account.get('name')}"
    return None


def parse_json(text: str | bytes, *, path: str = "statement") -> Any:
    """A request body (or a JSON parameter) parsed, as strictly as statements need.

    Refuses an object that uses a property twice (Data 2.2.s2.b2: a statement MUST
    use each property no more than one time; ``json.loads`` would keep the last)
    and the non-JSON constants ``NaN`` and ``Infinity``.

    Raises:
        StatementError: ``bad_json`` or ``duplicate_property``, at ``path``.
    """

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                _fail("duplicate_property", path, f"property {key!r} appears twice")
            seen.add(key)
        return dict(pairs)

    def constant(name: str) -> NoReturn:
        _fail("bad_json", path, f"{name} is not a JSON value")

    try:
        return json.loads(text, object_pairs_hook=unique, parse_constant=constant)
    except StatementError:
        raise
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        _fail("bad_json", path, f"not JSON: {err}")


def person_object(agent: Mapping[str, Any]) -> dict[str, Any]:
    """The Person object the Agents resource returns for one Agent (Communication 2.4).

    ``{"objectType": "Person", "name": [...], "mbox": [...], ...}``: each property
    the agent has, as a one-element array (the LRS knows no other identities of
    the person).
    """
    person: dict[str, Any] = {"objectType": "Person"}
    for key in ("name", *_IFIS):
        if key in agent:
            person[key] = [copy.deepcopy(agent[key])]
    return person


def parse_agent_param(text: str) -> dict[str, Any]:
    """The ``agent`` query parameter: a JSON Agent or identified Group.

    Validated as in statements (Data 2.2.s4.b4); an anonymous Group is refused
    (it has no IFI to match on).

    Raises:
        StatementError: ``bad_json`` (not JSON) or the agent's rule broken
            (``bad_actor``...), path ``agent``.
    """
    agent = _Validator("1.0.3").actor(parse_json(text, path="agent"), "agent")
    if agent_ifi(agent) is None:
        _fail(
            "bad_actor",
            "agent",
            "the agent parameter needs an IFI (no anonymous Group)",
        )
    return agent


def _agent_keys(agent: Any) -> set[str]:
    """The IFI key of an Agent/Group plus its members' (a Group matches its members)."""
    if not isinstance(agent, Mapping):
        return set()
    keys = {agent_ifi(agent)}
    for member in agent.get("member") or []:
        if isinstance(member, Mapping):
            keys.add(agent_ifi(member))
    return {k for k in keys if k is not None}


def _context(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    context = stmt.get("context")
    return context if isinstance(context, Mapping) else {}


def _object(stmt: Mapping[str, Any]) -> Mapping[str, Any]:
    obj = stmt.get("object")
    return obj if isinstance(obj, Mapping) else {}


def statement_agents(stmt: Mapping[str, Any], *, related: bool) -> set[str]:
    """The :func:`agent_ifi` keys a statement matches for the ``agent`` filter.

    Without ``related``: the actor and the object when it is an Agent or Group,
    each with its Group members. With ``related`` (``related_agents=true``): also
    the authority, context instructor and team (and 2.0's contextAgents and
    contextGroups), and the same properties of a SubStatement object. The
    StatementRef rule (a statement targeting a matching one matches) needs the
    store: the caller applies it.
    """
    keys = _agent_keys(stmt.get("actor"))
    obj = _object(stmt)
    if obj.get("objectType") in ("Agent", "Group"):
        keys |= _agent_keys(obj)
    if related:
        keys |= _agent_keys(stmt.get("authority"))
        context = _context(stmt)
        keys |= _agent_keys(context.get("instructor"))
        keys |= _agent_keys(context.get("team"))
        for entry in context.get("contextAgents") or []:
            if isinstance(entry, Mapping):
                keys |= _agent_keys(entry.get("agent"))
        for entry in context.get("contextGroups") or []:
            if isinstance(entry, Mapping):
                keys |= _agent_keys(entry.get("group"))
        if obj.get("objectType") == "SubStatement":
            keys |= statement_agents(obj, related=True)
    return keys


def _activity_ids(value: Any) -> set[str]:
    return {
        a["id"]
        for a in _as_list(value)
        if isinstance(a, Mapping) and isinstance(a.get("id"), str)
    }


def statement_activities(stmt: Mapping[str, Any], *, related: bool) -> set[str]:
    """The activity ids a statement matches for the ``activity`` filter.

    Without ``related``: the object's id when it is an Activity. With ``related``
    (``related_activities=true``): also every context activity (parent, grouping,
    category, other) and the same of a SubStatement object.
    """
    obj = _object(stmt)
    ids = (
        _activity_ids(obj) if obj.get("objectType", "Activity") == "Activity" else set()
    )
    if related:
        activities = _context(stmt).get("contextActivities")
        if isinstance(activities, Mapping):
            for value in activities.values():
                ids |= _activity_ids(value)
        if obj.get("objectType") == "SubStatement":
            ids |= statement_activities(obj, related=True)
    return ids


def statement_registration(stmt: Mapping[str, Any]) -> str | None:
    """The context registration, lowercased (UUIDs compare case-insensitively)."""
    registration = _context(stmt).get("registration")
    return registration.lower() if isinstance(registration, str) else None


def voided_statement_id(stmt: Mapping[str, Any]) -> str | None:
    """The id (lowercased) a voiding statement voids; None for other statements."""
    verb = stmt.get("verb")
    obj = _object(stmt)
    if (
        isinstance(verb, Mapping)
        and verb.get("id") == VOIDED_VERB
        and obj.get("objectType") == "StatementRef"
        and isinstance(obj.get("id"), str)
    ):
        return str(obj["id"]).lower()
    return None


def parse_uuid(text: str, *, path: str = "statementId") -> str:
    """A UUID parameter (statementId, registration...), lowercased.

    Raises:
        StatementError: ``bad_uuid``.
    """
    return _uuid(text, path).lower()


def parse_iri(text: str, *, path: str = "activity") -> str:
    """An IRI parameter (verb, activity), unchanged (compared as a simple string).

    Raises:
        StatementError: ``bad_iri``.
    """
    return _iri(text, path)


# -- the format parameter -------------------------------------------------------
def parse_accept_language(header: str | None) -> list[str]:
    """The language ranges of an Accept-Language header, most preferred first.

    ``"fr-CH, fr;q=0.9, en;q=0.8, *;q=0.5"`` -> ``["fr-CH", "fr", "en", "*"]``;
    ranges with ``q=0`` are dropped; a bad q counts as 1. None or empty -> [].
    """
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, number = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 1.0
        if quality > 0:
            ranges.append((-quality, position, pieces[0]))
    return [tag for _, _, tag in sorted(ranges)]


def _pick_language(language_map: Any, languages: list[str]) -> Any:
    """One entry of a language map, chosen by ``languages`` (RFC 4647 lookup)."""
    if not isinstance(language_map, dict) or not language_map:
        return language_map
    keys = list(language_map)
    lowered = {k.lower(): k for k in keys}
    for wanted in languages:
        wanted_lower = wanted.lower()
        if wanted_lower == "*":
            return {keys[0]: language_map[keys[0]]}
        if wanted_lower in lowered:
            return {lowered[wanted_lower]: language_map[lowered[wanted_lower]]}
        for key in keys:
            if key.lower().startswith(wanted_lower + "-"):
                return {key: language_map[key]}
    for wanted in languages:  # then truncated: en-US falls back to en
        parts = wanted.lower().split("-")
        while len(parts) > 1:
            parts.pop()
            if "-".join(parts) in lowered:
                key = lowered["-".join(parts)]
                return {key: language_map[key]}
    return {keys[0]: language_map[keys[0]]}


def _agent_ids(agent: Any) -> Any:
    """An Agent/Group reduced to what identifies it (format=ids)."""
    if not isinstance(agent, dict):
        return agent
    kind = "Group" if agent.get("objectType") == "Group" else "Agent"
    out: dict[str, Any] = {"objectType": kind}
    ifi = next((k for k in _IFIS if k in agent), None)
    if ifi is not None:
        out[ifi] = copy.deepcopy(agent[ifi])
    elif isinstance(agent.get("member"), list):
        out["member"] = [_agent_ids(m) for m in agent["member"]]
    return out


def _activity_format(activity: Any, fmt: str, languages: list[str]) -> Any:
    if not isinstance(activity, dict):
        return activity
    if fmt == "ids":
        return {"objectType": "Activity", "id": activity.get("id")}
    out = copy.deepcopy(activity)
    definition = out.get("definition")
    if fmt == "canonical" and isinstance(definition, dict):
        for key in ("name", "description"):
            if key in definition:
                definition[key] = _pick_language(definition[key], languages)
        for key in _COMPONENT_LISTS:
            for component in definition.get(key) or []:
                if isinstance(component, dict) and "description" in component:
                    component["description"] = _pick_language(
                        component["description"], languages
                    )
    return out


def _format_object(obj: Any, fmt: str, languages: list[str]) -> Any:
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("objectType", "Activity")
    if kind == "Activity":
        return _activity_format(obj, fmt, languages)
    if kind in ("Agent", "Group"):
        return _agent_ids(obj) if fmt == "ids" else copy.deepcopy(obj)
    if kind == "SubStatement":
        return format_statement(obj, fmt, languages)
    return copy.deepcopy(obj)


def _format_context(context: Any, fmt: str, languages: list[str]) -> Any:
    if not isinstance(context, dict):
        return context
    out = copy.deepcopy(context)
    if fmt == "ids":
        for key in ("instructor", "team"):
            if key in out:
                out[key] = _agent_ids(out[key])
        for key, member in (("contextAgents", "agent"), ("contextGroups", "group")):
            for entry in out.get(key) or []:
                if isinstance(entry, dict) and member in entry:
                    entry[member] = _agent_ids(entry[member])
    activities = context.get("contextActivities")
    if isinstance(activities, dict):  # always arrays on the way out (2.4.6.2.s4.b3)
        out["contextActivities"] = {
            k: [_activity_format(a, fmt, languages) for a in _as_list(v)]
            for k, v in activities.items()
        }
    return out


def format_statement(
    stmt: Mapping[str, Any], fmt: str, languages: list[str]
) -> dict[str, Any]:
    """A stored statement as GET statements returns it for ``format`` (a new dict).

    - ``exact``: as stored.
    - ``ids``: Agents and Groups reduced to objectType and IFI (an anonymous
      Group to its members' IFIs), Activities to objectType and id, Verbs to id.
    - ``canonical``: Activity names, descriptions and interaction component
      descriptions, and the Verb display, reduced to one language each, chosen
      by ``languages`` (from :func:`parse_accept_language`; first entry when none
      matches); Agents and Groups as in ``exact``. The LRS keeps no canonical
      definitions of its own: the statement's are used.

    In every format each contextActivities value is an array (Data 2.4.6.2.s4.b3).
    SubStatements are formatted the same way. Pure.

    Raises:
        StatementError: ``bad_parameter`` when ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt not in FORMATS:
        _fail(
            "bad_parameter",
            "format",
            f"{_short(fmt)} is not one of {', '.join(FORMATS)}",
        )
    out: dict[str, Any] = {}
    for key, value in stmt.items():
        if key in ("actor", "authority") and fmt == "ids":
            out[key] = _agent_ids(value)
        elif key == "verb" and isinstance(value, dict) and fmt != "exact":
            verb = {"id": value.get("id")}
            if fmt == "canonical" and "display" in value:
                verb["display"] = _pick_language(value["display"], languages)
            out[key] = verb
        elif key == "object":
            out[key] = _format_object(value, fmt, languages)
        elif key == "context":
            out[key] = _format_context(value, fmt, languages)
        else:
            out[key] = copy.deepcopy(value)
    return out
