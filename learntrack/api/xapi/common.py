"""What every ``/xAPI/`` route shares: versions, auth, errors, parameters.

Runs in the API process. :class:`XapiMiddleware` wraps the whole app (outermost)
and acts on ``/xAPI/`` paths only: it turns an alternate-syntax request (a form
POST with ``?method=``) into the request it stands for, refuses a request without
a supported ``X-Experience-API-Version`` (400; ``/xAPI/about`` needs none) and sets
that header on every answer, errors included, with CORS headers (it answers a
CORS preflight ``OPTIONS`` itself). The other routes of the app keep
their behaviour: :func:`install` answers an invalid xAPI request 400 with a
reason, and any other path as before (422).

Auth: HTTP Basic with the API's write key or read key as the password (any user
name; it names the statements' authority), or the ``X-API-Key`` header. No or
wrong credentials: 401 with ``WWW-Authenticate: Basic``; the read key on a write:
403.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from learntrack.api.deps import API_KEY_HEADER, ApiKeys
from learntrack.api.middleware import replay_body
from learntrack.errors import LearnTrackError
from learntrack.producers.xapi_spec import parse_version_header

PREFIX = "/xAPI"
VERSION_HEADER = "X-Experience-API-Version"
CONSISTENT_HEADER = "X-Experience-API-Consistent-Through"
#: The version answered when the request names none we support.
DEFAULT_VERSION = "1.0.3"
#: The realm of the Basic challenge.
REALM = "LearnTrack xAPI"
#: Headers an alternate-syntax form may carry (xAPI 1.0.3, part 3, 1.3).
_FORM_HEADERS = {
    "authorization": "authorization",
    "x-experience-api-version": "x-experience-api-version",
    "content-type": "content-type",
    "content-length": "content-length",
    "if-match": "if-match",
    "if-none-match": "if-none-match",
    "x-api-key": "x-api-key",
}
_ALTERNATE_METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE"}
#: CORS, for xAPI clients running in a browser (credentials travel in headers,
#: never cookies, so any origin may call; the keys still decide).
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (
        b"access-control-expose-headers",
        b"ETag, Last-Modified, X-Experience-API-Version, "
        b"X-Experience-API-Consistent-Through",
    ),
]
_PREFLIGHT = [
    *_CORS,
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"Authorization, Content-Type, If-Match, If-None-Match, X-API-Key, "
        b"X-Experience-API-Version",
    ),
    (b"access-control-max-age", b"600"),
]


class XapiError(LearnTrackError):
    """An xAPI request refused with ``status`` (400, 404, 409, 412...) and why."""

    def __init__(
        self, status: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """Keep the status, the reason (the answer's ``detail``) and headers."""
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def bad_request(reason: str) -> XapiError:
    """A 400 with ``reason``."""
    return XapiError(400, reason)


def is_xapi(path: str) -> bool:
    """Whether ``path`` is one of the LRS's."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def http_date(when: dt.datetime) -> str:
    """``when`` as an HTTP date (Last-Modified)."""
    from email.utils import format_datetime

    return format_datetime(when.astimezone(dt.UTC), usegmt=True)


def iso(when: dt.datetime) -> str:
    """``when`` as an xAPI timestamp (UTC, milliseconds, ``Z``)."""
    text = when.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


#: Refusals of a statements write that happen before its route runs (auth, body
#: size): counted by the middleware; the route counts its own (400, 409).
_REFUSED_BEFORE_THE_ROUTE = frozenset({401, 403, 413})


async def _count_refused_write(scope: Scope, status: int) -> None:
    """Count a refused statements write (``rejected:<status>``) like the others."""
    path = scope["path"].rstrip("/")
    if path != f"{PREFIX}/statements" or scope["method"] not in {"POST", "PUT"}:
        return
    lrs = getattr(scope["app"].state, "lrs", None)
    if lrs is not None:
        from fastapi.concurrency import run_in_threadpool

        await run_in_threadpool(lrs.count, f"rejected:{status}")


def _json_error(status: int, reason: str, version: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status, headers={VERSION_HEADER: version})


def _answered(version: str) -> str:
    """The version the LRS answers a request speaking ``version`` with."""
    return "2.0.0" if version.startswith("2.") else "1.0.3"


# -- middleware --------------------------------------------------------------------
class XapiMiddleware:
    """Alternate syntax, the version header check and the version on every answer.

    Pure ASGI, added last (outermost), so even the body limit's 413 carries the
    version header. ``max_bytes`` bounds the form body of an alternate request.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Only ``/xAPI/`` paths are touched."""
        if scope["type"] != "http" or not is_xapi(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":  # a CORS preflight: no version, no key
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        *_PREFLIGHT,
                        (b"x-experience-api-version", DEFAULT_VERSION.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if scope["method"] == "POST" and "method" in query:
            rewritten = await self._alternate(scope, receive, query)
            if isinstance(rewritten, Response):
                await rewritten(scope, receive, send)
                return
            scope, receive = rewritten
        headers = {k.lower(): v for k, v in scope["headers"]}
        asked = headers.get(b"x-experience-api-version", b"")
        version = DEFAULT_VERSION
        try:
            version = _answered(
                parse_version_header(asked.decode("latin-1") if asked else None)
            )
        except ValueError as err:  # StatementError, or anything else refused
            if scope["path"].rstrip("/") != f"{PREFIX}/about":
                why = getattr(err, "reason", str(err))
                reason = (
                    f"missing {VERSION_HEADER} header"
                    if not asked
                    else f"{why}; supported: 1.0.x, 2.0.0"
                )
                await _count_refused_write(scope, 400)
                await _json_error(400, reason, DEFAULT_VERSION)(scope, receive, send)
                return
        scope.setdefault("state", {})["xapi_version"] = version
        value = version.encode("latin-1")
        head = scope["method"] == "HEAD"

        async def send_with_version(message: Message) -> None:
            if head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # HEAD: the GET's headers only
            if message["type"] == "http.response.start":
                if message["status"] in _REFUSED_BEFORE_THE_ROUTE:
                    await _count_refused_write(scope, message["status"])
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"x-experience-api-version"
                ]
                message["headers"] = [
                    *kept,
                    *_CORS,
                    (b"x-experience-api-version", value),
                ]
            await send(message)

        await self.app(scope, receive, send_with_version)

    async def _alternate(
        self, scope: Scope, receive: Receive, query: dict[str, str]
    ) -> tuple[Scope, Receive] | Response:
        """The request an alternate-syntax form POST stands for, or an error."""
        method = query["method"].upper()
        if method not in _ALTERNATE_METHODS or len(query) != 1:
            reason = "alternate syntax: only ?method=GET|HEAD|PUT|POST|DELETE allowed"
            return _json_error(400, reason, DEFAULT_VERSION)
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/x-www-form-urlencoded":
            reason = "alternate syntax needs an application/x-www-form-urlencoded body"
            return _json_error(415, reason, DEFAULT_VERSION)
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                reason = f"request body larger than {self.max_bytes} bytes"
                return _json_error(413, reason, DEFAULT_VERSION)
            if not message.get("more_body", False):
                break
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        new_headers = [
            (k, v)
            for k, v in scope["headers"]
            if k not in (b"content-type", b"content-length")
        ]
        params: list[tuple[str, str]] = []
        content = b""
        for name, value in form:
            lowered = name.lower()
            if lowered in _FORM_HEADERS:
                if lowered != "content-length":
                    new_headers.append(
                        (_FORM_HEADERS[lowered].encode(), value.encode("latin-1"))
                    )
            elif name == "content":
                content = value.encode("utf-8")
            else:
                params.append((name, value))
        new_headers.append((b"content-length", str(len(content)).encode()))
        new_scope = {
            **scope,
            "method": method,
            "headers": new_headers,
            "query_string": urlencode(params).encode("latin-1"),
        }
        return new_scope, replay_body(content, receive)


# -- auth ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's role and the name it gave (Basic user)."""

    role: Literal["read", "write"]
    name: str


def _challenge(reason: str) -> XapiError:
    return XapiError(401, reason, {"WWW-Authenticate": f'Basic realm="{REALM}"'})


def caller_of(request: Request) -> Caller:
    """The caller from HTTP Basic (password = a key) or ``X-API-Key``; 401 if none."""
    keys: ApiKeys = request.app.state.api_keys
    name, secret = "", request.headers.get(API_KEY_HEADER)
    auth = request.headers.get("authorization")
    if secret is None and auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            raise _challenge("only HTTP Basic credentials are accepted")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _challenge("malformed Basic credentials") from None
        name, _, secret = decoded.partition(":")
    if not secret:
        raise _challenge("credentials required (HTTP Basic, the key as password)")
    given = secret.encode("utf-8", "surrogateescape")
    is_write = hmac.compare_digest(given, keys.write)
    is_read = hmac.compare_digest(given, keys.read)
    if is_write:
        return Caller("write", name or "write-key")
    if is_read:
        return Caller("read", name or "read-key")
    raise _challenge("invalid credentials")


def require_reader(request: Request) -> Caller:
    """Either key."""
    return caller_of(request)


def require_writer(request: Request) -> Caller:
    """The write key; 403 for the read key."""
    who = caller_of(request)
    if who.role != "write":
        raise XapiError(403, "this resource needs the write key")
    return who


Reader = Annotated[Caller, Depends(require_reader)]
Writer = Annotated[Caller, Depends(require_writer)]


def authority(request: Request, who: Caller) -> dict[str, Any]:
    """The authority the LRS sets on the statements ``who`` stores."""
    return {
        "objectType": "Agent",
        "account": {"homePage": str(request.base_url).rstrip("/"), "name": who.name},
    }


def version_of(request: Request) -> str:
    """The xAPI version the request speaks (set by the middleware)."""
    return str(getattr(request.state, "xapi_version", DEFAULT_VERSION))


# -- parameters ---------------------------------------------------------------------
def params(request: Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters; 400 for an unknown or repeated one."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise bad_request(f"unknown parameter {name!r}")
        if name in found:
            raise bad_request(f"parameter {name!r} given twice")
        found[name] = value
    return found


def required(values: dict[str, str], name: str) -> str:
    """``values[name]``; 400 if missing."""
    if name not in values:
        raise bad_request(f"parameter {name!r} is required")
    return values[name]


def boolean(values: dict[str, str], name: str) -> bool:
    """A ``true``/``false`` parameter (any case; default false); 400 otherwise."""
    value = values.get(name, "false").lower()
    if value not in ("true", "false"):
        raise bad_request(f"{name} must be true or false")
    return value == "true"


_TIMESTAMP = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE
)


def timestamp(values: dict[str, str], name: str) -> dt.datetime | None:
    """An ISO 8601 timestamp parameter (with a zone); 400 otherwise."""
    value = values.get(name)
    if value is None:
        return None
    if not _TIMESTAMP.match(value):
        raise bad_request(f"{name} must be an ISO 8601 timestamp with a time zone")
    try:
        return dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} is not a valid timestamp") from None


def uuid_param(values: dict[str, str], name: str) -> str | None:
    """A UUID parameter, lower case; 400 otherwise."""
    value = values.get(name)
    if value is None:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise bad_request(f"{name} must be a UUID") from None
    if len(value) != len(str(parsed)):
        raise bad_request(f"{name} must be a UUID")
    return str(parsed)


_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$")


def iri(values: dict[str, str], name: str, *, need: bool = False) -> str | None:
    """An IRI parameter; 400 when it is not one (or missing when ``need``)."""
    value = values.get(name)
    if value is None:
        if need:
            raise bad_request(f"parameter {name!r} is required")
        return None
    if not _IRI.match(value):
        raise bad_request(f"{name} must be an IRI")
    return value


def languages(request: Request) -> list[str]:
    """The Accept-Language tags, most wanted first."""
    header = request.headers.get("accept-language", "")
    ranked = []
    for i, item in enumerate(header.split(",")):
        tag, _, rest = item.strip().partition(";")
        if not tag or tag == "*":
            continue
        weight = 1.0
        if rest.strip().startswith("q="):
            try:
                weight = float(rest.strip()[2:])
            except ValueError:
                weight = 0.0
        ranked.append((-weight, i, tag))
    return [tag for _w, _i, tag in sorted(ranked)]


async def json_body(request: Request) -> Any:
    """The request's JSON body; 400 if it is not JSON."""
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise bad_request(f"the body is not JSON: {err}") from None


# -- error handlers -------------------------------------------------------------------
async def _xapi_error(request: Request, err: XapiError) -> JSONResponse:
    return JSONResponse(
        {"detail": err.reason},
        err.status,
        headers={**err.headers, VERSION_HEADER: version_of(request)},
    )


def _validation(
    fallback: Callable[[Request, RequestValidationError], Awaitable[Response]],
) -> Callable[[Request, RequestValidationError], Awaitable[Response]]:
    async def handler(request: Request, err: RequestValidationError) -> Response:
        if not is_xapi(request.url.path):
            return await fallback(request, err)
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    return handler


def install(app: FastAPI) -> None:
    """The xAPI error handlers on ``app`` (other paths keep their 422)."""
    app.exception_handler(XapiError)(_xapi_error)
    app.exception_handler(RequestValidationError)(
        _validation(request_validation_exception_handler)
    )
