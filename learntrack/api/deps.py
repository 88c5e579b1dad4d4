"""What the query service's endpoints depend on: the service, the caller's role, ids.

Runs in the API process, once per request, before the endpoint. The app built by
:func:`learntrack.api.app.create_app` holds one
:class:`~learntrack.api.service.QueryService` and the API keys in ``app.state``;
these dependencies read them from there, so a router needs no settings of its own.

Auth: the ``X-API-Key`` header carries the read key or the write key (which also
grants reads), compared in constant time; a missing or wrong key is 401, the read
key on a write endpoint 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal, NamedTuple

from fastapi import Depends, Path, Query, Request, Security
from fastapi.exceptions import HTTPException
from fastapi.security import APIKeyHeader

from learntrack.api.service import QueryService
from learntrack.config import Settings
from learntrack.errors import ConfigError
from learntrack.events import ID_PATTERN

API_KEY_HEADER = "X-API-Key"
Role = Literal["read", "write"]

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The read key, or the write key (which also grants reads).",
)


class ApiKeys(NamedTuple):
    """The read and write keys as bytes (kept in ``app.state.api_keys``)."""

    read: bytes
    write: bytes


def api_keys(settings: Settings) -> ApiKeys:
    """The (read, write) keys as bytes; ConfigError in one line if either is unset."""
    a = settings.api
    if (
        a.read_key is None
        or a.write_key is None
        or not (a.read_key.get_secret_value() and a.write_key.get_secret_value())
    ):
        msg = (
            "the API keys LEARNTRACK_API__READ_KEY and LEARNTRACK_API__WRITE_KEY are "
            "not set: run `learntrack stack up` (it generates them into "
            f"{settings.data_dir / 'credentials.env'}) or set them"
        )
        raise ConfigError(msg)
    return ApiKeys(
        a.read_key.get_secret_value().encode(),
        a.write_key.get_secret_value().encode(),
    )


def role_of(key: str | None, keys: ApiKeys) -> Role:
    """The role ``key`` grants; HTTP 401 when it is missing or matches neither key."""
    if not key:
        raise HTTPException(
            401,
            f"missing {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    given = key.encode("utf-8", "surrogateescape")
    # Both comparisons always run, in constant time.
    is_write = hmac.compare_digest(given, keys.write)
    is_read = hmac.compare_digest(given, keys.read)
    if is_write:
        return "write"
    if is_read:
        return "read"
    raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "ApiKey"})


def require_read(
    request: Request, key: Annotated[str | None, Security(_api_key)]
) -> Role:
    """The caller's role when its key grants reads (either key); else HTTP 401."""
    return role_of(key, request.app.state.api_keys)


def require_write(
    request: Request, key: Annotated[str | None, Security(_api_key)]
) -> Role:
    """``"write"`` when the caller sent the write key; HTTP 401 or 403 otherwise."""
    if role_of(key, request.app.state.api_keys) != "write":
        raise HTTPException(403, "this endpoint needs the write key")
    return "write"


#: Route dependencies: any valid key (reads), or the write key (writes).
READER = [Depends(require_read)]
WRITER = [Depends(require_write)]


async def get_service(request: Request) -> QueryService:
    """The app's one :class:`QueryService` (async: no thread hop to fetch it)."""
    service: QueryService = request.app.state.service
    return service


#: An endpoint parameter that receives the app's query service.
Service = Annotated[QueryService, Depends(get_service)]

StudentId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The student's id.", examples=["S42"])
]
CourseId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The course's id.", examples=["BD101"])
]
#: The optional ``?course=`` filter of the leaderboard and the score distribution.
CourseFilter = Annotated[
    str | None, Query(pattern=ID_PATTERN, description="A course id.")
]
