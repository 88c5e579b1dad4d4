"""What the query service answers when a request fails, and how the schema says so.

Runs in the API process. :func:`add_error_handlers` turns the service's errors into
HTTP answers for the whole app: an unknown student is 404, an invalid query 422 (in
FastAPI's validation-error shape), a store that is down 503 (whether the service
noticed it or a driver raised a connection error), and a body FastAPI cannot decode
422 rather than FastAPI's 400. The ``*_RESPONSES`` dicts document those answers in
the OpenAPI schema of each route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from learntrack.api.models import ErrorResponse
from learntrack.api.service import InvalidQueryError, NotFoundError, UnavailableError
from learntrack.sinks import mongo as mongo_store
from learntrack.sinks import redis as redis_store

#: The errors every keyed endpoint may answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    503: {"model": ErrorResponse, "description": "A store is unavailable"},
}
NOT_FOUND_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown student"},
}
FORBIDDEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "The key does not grant writes"},
}

#: FastAPI's answer (400) to a body it cannot decode, and what LearnTrack says.
_UNDECODABLE_BODY = "There was an error parsing the body"
_UNDECODABLE_BODY_ERROR = {
    "type": "json_invalid",
    "loc": ["body"],
    "msg": "invalid JSON: the body is not UTF-8",
}


def body_error(message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 about the request body, in FastAPI's validation-error shape."""
    return RequestValidationError(
        [{"type": kind, "loc": ("body",), "msg": message, "input": None}]
    )


async def _not_found(_request: Request, err: NotFoundError) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, 404)


async def _invalid(_request: Request, err: InvalidQueryError) -> JSONResponse:
    loc = ["query", err.field]
    detail = [{"type": "value_error", "loc": loc, "msg": err.reason}]
    return JSONResponse({"detail": detail}, 422)


async def _unavailable(_request: Request, err: UnavailableError) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, 503)


async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
    # FastAPI answers 400 for a body it cannot decode (not UTF-8); the contract
    # (and POST /activities) says 422 for any body that is not valid JSON.
    if err.status_code == 400 and err.detail == _UNDECODABLE_BODY:  # noqa: PLR2004
        return JSONResponse({"detail": [_UNDECODABLE_BODY_ERROR]}, 422)
    return await http_exception_handler(request, err)


def _store_down(store: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A handler answering 503 ``{store} is unavailable: {error type}``."""

    async def handler(_request: Request, err: Exception) -> JSONResponse:
        detail = f"{store} is unavailable: {type(err).__name__}"
        return JSONResponse({"detail": detail}, 503)

    return handler


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app`` (once, when the app is built)."""
    # The decorator form: it takes handlers typed for their own exception.
    app.exception_handler(NotFoundError)(_not_found)
    app.exception_handler(InvalidQueryError)(_invalid)
    app.exception_handler(UnavailableError)(_unavailable)
    app.exception_handler(StarletteHTTPException)(_http_error)
    # A store that is down: 503, by the store's own list of such errors.
    for store, errors in (("mongo", mongo_store), ("redis", redis_store)):
        for error in errors.unavailable_errors():
            app.add_exception_handler(error, _store_down(store))
