"""The FastAPI app of the query service: ``create_app(settings)``.

Runs in the API process (``learntrack api`` starts it under uvicorn; tests drive it
with FastAPI's TestClient). Every answer comes from one
:class:`learntrack.api.service.QueryService` built for the app's lifetime, so the
CLI and the API say the same. The endpoints live in :mod:`learntrack.api.routers`,
one module per area; auth and the service reach them as dependencies
(:mod:`learntrack.api.deps`): the ``X-API-Key`` header carries the read key or the
write key (which also grants reads); a missing or wrong key is 401, the read key on
a write endpoint 403. Bodies above ``api.max_body_bytes`` are refused with 413
before any endpoint runs (:mod:`learntrack.api.middleware`). Invalid input is a
4xx, never a 500; a store that is down is a 503 (:mod:`learntrack.api.errors`).
The Learning Record Store (xAPI) is served under ``/xAPI/``
(:mod:`learntrack.api.xapi`), with the xAPI's own rules (HTTP Basic, the version
header, 400 rather than 422).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from learntrack import __version__
from learntrack.api.deps import API_KEY_HEADER, api_keys
from learntrack.api.errors import add_error_handlers
from learntrack.api.middleware import BodyLimitMiddleware
from learntrack.api.routers import (
    alerts,
    courses,
    dashboard,
    engagement,
    ingest,
    pipeline,
    students,
)
from learntrack.api.service import QueryService
from learntrack.api.xapi import install as install_lrs
from learntrack.config import Settings, get_settings
from learntrack.events import ActivityEvent

__all__ = ["API_KEY_HEADER", "BodyLimitMiddleware", "api_keys", "create_app"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the app's query service (its store clients) when the server stops."""
    yield
    await run_in_threadpool(app.state.lrs.close)
    await run_in_threadpool(app.state.service.close)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The query service's FastAPI app over the stores of ``settings``.

    Raises :class:`learntrack.errors.ConfigError` when the API keys are unset.
    """
    settings = settings or get_settings()
    keys = api_keys(settings)
    app = FastAPI(
        title="LearnTrack query service",
        version=__version__,
        description=(
            "Student activity, profiles, engagement, leaderboards, alerts and course "
            f"engagement. Send the read or write key in the `{API_KEY_HEADER}` "
            "header (`/health` needs none)."
        ),
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = keys
    app.state.service = QueryService(settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    add_error_handlers(app)

    app.include_router(ingest.router(settings.api.max_events_per_request))
    for area in (students, engagement, alerts, courses, pipeline, dashboard):
        app.include_router(area.router)
    # The Learning Record Store under /xAPI/ (its middleware goes outermost).
    install_lrs(app, settings, app.state.service)

    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema, with the ActivityEvent model POST /activities takes.

    Built once, on the first request for it. POST /activities reads its body itself
    (a list or ``{events: [...]}``), so FastAPI does not know the event's model:
    it is added to the components here.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    event = ActivityEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(event.pop("$defs", {}))
    components["ActivityEvent"] = event
    app.openapi_schema = schema
    return schema
