"""The FastAPI app of the query service: ``create_app(settings)``.

Runs in the API process (``learntrack api`` starts it under uvicorn; tests drive it
with FastAPI's TestClient). Every answer comes from one
:class:`learntrack.api.service.QueryService` built for the app's lifetime, so the
CLI and the API say the same. Auth: the ``X-API-Key`` header carries the read key
or the write key (which also grants reads), compared in constant time; a missing or
wrong key is 401, the read key on a write endpoint 403. Bodies above
``api.max_body_bytes`` are refused with 413 before any endpoint runs. Invalid input
is a 4xx, never a 500; a store that is down is a 503.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from learntrack import __version__
from learntrack.api.dashboard import router as dashboard_router
from learntrack.api.models import (
    ActivityList,
    AlertList,
    AlertsPerHour,
    CourseEngagement,
    CourseList,
    CoursesEngagement,
    Engagement,
    ErrorResponse,
    Health,
    Leaderboard,
    PipelineMetrics,
    PublishResult,
    ScoreDistribution,
    Student,
    StudentPatch,
)
from learntrack.api.service import (
    MAX_ALERTS,
    MAX_BINS,
    MAX_LATEST,
    MAX_LEADERBOARD,
    MAX_POINTS,
    InvalidQueryError,
    NotFoundError,
    QueryService,
    UnavailableError,
    prometheus_text,
)
from learntrack.config import Settings, get_settings
from learntrack.errors import ConfigError
from learntrack.events import ID_PATTERN, ActivityEvent

API_KEY_HEADER = "X-API-Key"
Role = Literal["read", "write"]

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The read key, or the write key (which also grants reads).",
)

StudentId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The student's id.", examples=["S42"])
]
CourseId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The course's id.", examples=["BD101"])
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    503: {"model": ErrorResponse, "description": "A store is unavailable"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown student"},
}
_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "The key does not grant writes"},
}


def api_keys(settings: Settings) -> tuple[bytes, bytes]:
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
    return (
        a.read_key.get_secret_value().encode(),
        a.write_key.get_secret_value().encode(),
    )


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413 (pure ASGI).

    Reads the body up front (at most ``max_bytes``), whether announced by
    Content-Length or streamed in chunks, and replays it to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body within the limit, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, 413
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    bad = JSONResponse({"detail": "invalid Content-Length"}, 400)
                    await bad(scope, receive, send)
                    return
                if announced > self.max_bytes:
                    await too_large(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _events_body(max_events: int) -> dict[str, Any]:
    """OpenAPI of POST /activities' body: a list of events, or ``{events: [...]}``."""
    events = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/ActivityEvent"},
        "maxItems": max_events,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            events,
                            {
                                "type": "object",
                                "properties": {"events": events},
                                "required": ["events"],
                                "additionalProperties": False,
                            },
                        ]
                    }
                }
            },
        }
    }


#: FastAPI's answer (400) to a body it cannot decode, and what LearnTrack says.
_UNDECODABLE_BODY = "There was an error parsing the body"
_UNDECODABLE_BODY_ERROR = {
    "type": "json_invalid",
    "loc": ["body"],
    "msg": "invalid JSON: the body is not UTF-8",
}


def _body_error(message: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError(
        [{"type": kind, "loc": ("body",), "msg": message, "input": None}]
    )


def create_app(settings: Settings | None = None) -> FastAPI:  # noqa: C901, PLR0915
    """The query service's FastAPI app over the stores of ``settings``.

    Raises :class:`learntrack.errors.ConfigError` when the API keys are unset.
    """
    settings = settings or get_settings()
    read_key, write_key = api_keys(settings)
    service = QueryService(settings)
    max_events = settings.api.max_events_per_request

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(
        title="LearnTrack query service",
        version=__version__,
        description=(
            "Student activity, profiles, engagement, leaderboards, alerts and course "
            f"engagement. Send the read or write key in the `{API_KEY_HEADER}` "
            "header (`/health` needs none)."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api.max_body_bytes)

    # -- auth ---------------------------------------------------------------------
    def role_of(key: str | None) -> Role:
        if not key:
            raise HTTPException(
                401,
                f"missing {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        given = key.encode("utf-8", "surrogateescape")
        # Both comparisons always run, in constant time.
        is_write = hmac.compare_digest(given, write_key)
        is_read = hmac.compare_digest(given, read_key)
        if is_write:
            return "write"
        if is_read:
            return "read"
        raise HTTPException(
            401, "invalid API key", headers={"WWW-Authenticate": "ApiKey"}
        )

    def require_read(key: Annotated[str | None, Security(_api_key)]) -> Role:
        return role_of(key)

    def require_write(key: Annotated[str | None, Security(_api_key)]) -> Role:
        if role_of(key) != "write":
            raise HTTPException(403, "this endpoint needs the write key")
        return "write"

    reader = [Depends(require_read)]
    writer = [Depends(require_write)]

    # -- errors -------------------------------------------------------------------
    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, err: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, 404)

    @app.exception_handler(InvalidQueryError)
    async def _invalid(_request: Request, err: InvalidQueryError) -> JSONResponse:
        loc = ["query", err.field]
        detail = [{"type": "value_error", "loc": loc, "msg": err.reason}]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(UnavailableError)
    async def _unavailable(_request: Request, err: UnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, 503)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        # FastAPI answers 400 for a body it cannot decode (not UTF-8); the contract
        # (and POST /activities) says 422 for any body that is not valid JSON.
        if err.status_code == 400 and err.detail == _UNDECODABLE_BODY:  # noqa: PLR2004
            return JSONResponse({"detail": [_UNDECODABLE_BODY_ERROR]}, 422)
        return await http_exception_handler(request, err)

    def store_down(store: str) -> Callable[[Request, Exception], Awaitable[Any]]:
        async def handler(_request: Request, err: Exception) -> JSONResponse:
            detail = f"{store} is unavailable: {type(err).__name__}"
            return JSONResponse({"detail": detail}, 503)

        return handler

    from pymongo.errors import ConnectionFailure
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    app.add_exception_handler(ConnectionFailure, store_down("mongo"))
    app.add_exception_handler(RedisConnectionError, store_down("redis"))
    app.add_exception_handler(RedisTimeoutError, store_down("redis"))

    # -- writes -------------------------------------------------------------------
    @app.post(
        "/activities",
        status_code=202,
        response_model=PublishResult,
        dependencies=writer,
        tags=["activities"],
        summary="Publish activity events (many students, one call)",
        responses={
            **_ERRORS,
            **_FORBIDDEN,
            422: {
                "description": "Not a JSON list of events (nor {events: [...]})",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                    }
                },
            },
        },
        openapi_extra=_events_body(max_events),
    )
    async def post_activities(request: Request) -> PublishResult:
        """Validate each event; publish the valid ones to Kafka; report the others.

        The answer comes once Kafka has acknowledged every accepted event. Send each
        event's ``eventId`` to make a retry safe (events are deduplicated by it).
        """
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError as err:
            raise _body_error(f"invalid JSON: {err}", "json_invalid") from None
        if isinstance(data, dict) and set(data) == {"events"}:
            data = data["events"]
        if not isinstance(data, list):
            msg = 'expected a JSON list of events, or {"events": [...]}'
            raise _body_error(msg)
        if len(data) > max_events:
            msg = f"{len(data)} events in one request; at most {max_events}"
            raise HTTPException(413, msg)
        return await run_in_threadpool(service.publish, data)

    # -- students -----------------------------------------------------------------
    @app.get(
        "/students/{student_id}/activities",
        response_model=ActivityList,
        dependencies=reader,
        tags=["students"],
        responses={**_ERRORS, **_NOT_FOUND},
    )
    def latest_activities(
        student_id: StudentId,
        limit: Annotated[int, Query(ge=1, le=MAX_LATEST)] = 20,
    ) -> ActivityList:
        """A student's latest activities, newest first (event time)."""
        return service.latest_activities(student_id, limit)

    @app.get(
        "/students/{student_id}",
        response_model=Student,
        dependencies=reader,
        tags=["students"],
        responses={**_ERRORS, **_NOT_FOUND},
    )
    def get_student(student_id: StudentId) -> Student:
        """A student's profile and activity summary."""
        return service.student(student_id)

    @app.patch(
        "/students/{student_id}",
        response_model=Student,
        dependencies=writer,
        tags=["students"],
        responses={**_ERRORS, **_FORBIDDEN, **_NOT_FOUND},
    )
    def patch_student(student_id: StudentId, patch: StudentPatch) -> Student:
        """Change profile fields (at least one); sets ``lastUpdated``."""
        return service.update_student(student_id, patch)

    @app.get(
        "/students/{student_id}/engagement",
        response_model=Engagement,
        dependencies=reader,
        tags=["students"],
        responses={**_ERRORS, **_NOT_FOUND},
    )
    def student_engagement(student_id: StudentId) -> Engagement:
        """Score decayed to now, global rank, per-course scores, recent counts."""
        return service.engagement(student_id)

    # -- leaderboard, alerts, courses ------------------------------------------
    @app.get(
        "/leaderboard",
        response_model=Leaderboard,
        dependencies=reader,
        tags=["engagement"],
        responses=_ERRORS,
    )
    def leaderboard(
        course: Annotated[
            str | None, Query(pattern=ID_PATTERN, description="A course id.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LEADERBOARD)] = 10,
    ) -> Leaderboard:
        """The most engaged students, globally or in one course."""
        return service.leaderboard(course, limit)

    @app.get(
        "/alerts",
        response_model=AlertList,
        dependencies=reader,
        tags=["alerts"],
        responses=_ERRORS,
    )
    def alerts(
        since: Annotated[
            dt.datetime | None,
            Query(description="Only alerts at or after this time (naive: UTC)."),
        ] = None,
        student: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ALERTS)] = 50,
    ) -> AlertList:
        """Multi-region alerts, newest first."""
        return service.alerts(since, student, limit)

    @app.get(
        "/courses/{course_id}/engagement",
        response_model=CourseEngagement,
        dependencies=reader,
        tags=["engagement"],
        responses=_ERRORS,
    )
    def course_engagement(
        course_id: CourseId,
        date_from: Annotated[
            dt.date | None,
            Query(alias="from", description="First day (default: to - 6 days)."),
        ] = None,
        date_to: Annotated[
            dt.date | None, Query(alias="to", description="Last day (default: today).")
        ] = None,
    ) -> CourseEngagement:
        """Daily engagement of a course (nightly batch), newest first; <= 366 days."""
        return service.course_engagement(course_id, date_from, date_to)

    # -- health -------------------------------------------------------------------
    @app.get(
        "/health",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "A store is down"}},
    )
    def health() -> JSONResponse:
        """Each store's status (no key needed): 200 if all are up, else 503."""
        result = service.health()
        code = 200 if result.status == "ok" else 503
        return JSONResponse(result.model_dump(mode="json"), code)

    # -- dashboards: the /dashboard page, Grafana (Infinity) and Prometheus --------
    @app.get(
        "/courses",
        response_model=CourseList,
        dependencies=reader,
        tags=["dashboards"],
        responses=_ERRORS,
    )
    def courses() -> CourseList:
        """Every course id of the activity log, sorted (dashboard variables)."""
        return service.courses()

    @app.get(
        "/courses/engagement",
        response_model=CoursesEngagement,
        dependencies=reader,
        tags=["dashboards"],
        responses=_ERRORS,
    )
    def courses_engagement(
        date_from: Annotated[
            dt.date | None,
            Query(alias="from", description="First day (default: to - 6 days)."),
        ] = None,
        date_to: Annotated[
            dt.date | None, Query(alias="to", description="Last day (default: today).")
        ] = None,
    ) -> CoursesEngagement:
        """Daily engagement of every course (nightly batch), oldest day first."""
        return service.courses_engagement(date_from, date_to)

    @app.get(
        "/engagement/distribution",
        response_model=ScoreDistribution,
        dependencies=reader,
        tags=["dashboards"],
        responses=_ERRORS,
    )
    def score_distribution(
        course: Annotated[
            str | None, Query(pattern=ID_PATTERN, description="A course id.")
        ] = None,
        bins: Annotated[int, Query(ge=1, le=MAX_BINS)] = 10,
    ) -> ScoreDistribution:
        """Students per engagement-score bin (equal widths up to the top score)."""
        return service.score_distribution(course, bins)

    @app.get(
        "/alerts/hourly",
        response_model=AlertsPerHour,
        dependencies=reader,
        tags=["dashboards"],
        responses=_ERRORS,
    )
    def alerts_hourly(
        start: Annotated[
            dt.datetime | None,
            Query(alias="from", description="Start (default: to - 24 h; naive: UTC)."),
        ] = None,
        end: Annotated[
            dt.datetime | None,
            Query(alias="to", description="End (default: now; naive: UTC)."),
        ] = None,
    ) -> AlertsPerHour:
        """Alerts per event-time hour (UTC), oldest first; at most 31 days."""
        return service.alerts_per_hour(start, end)

    @app.get(
        "/pipeline/metrics",
        response_model=PipelineMetrics,
        dependencies=reader,
        tags=["dashboards"],
        responses=_ERRORS,
    )
    def pipeline_metrics(
        points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 120,
    ) -> PipelineMetrics:
        """The stream's totals and its latest micro-batches (oldest first)."""
        return service.pipeline_metrics(points)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    def metrics() -> Response:
        """The pipeline's metrics for Prometheus (no key: counters, no student data)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        totals = service.pipeline_metrics(1).totals
        return Response(prometheus_text(totals), media_type=CONTENT_TYPE_LATEST)

    app.include_router(dashboard_router())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        event = ActivityEvent.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event.pop("$defs", {}))
        components["ActivityEvent"] = event
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
