"""``POST /activities``: course apps publish activity events through the API.

Runs in the API process. The router is built from the one setting its schema and
its check depend on (``api.max_events_per_request``); the events go to Kafka
through :meth:`learntrack.api.service.QueryService.publish`, in a worker thread.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import HTTPException

from learntrack.api.deps import WRITER, Service
from learntrack.api.errors import ERROR_RESPONSES, FORBIDDEN_RESPONSES, body_error
from learntrack.api.models import PublishResult


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


def router(max_events: int) -> APIRouter:
    """The ``POST /activities`` route, accepting at most ``max_events`` per call."""
    routes = APIRouter(tags=["activities"])

    @routes.post(
        "/activities",
        status_code=202,
        response_model=PublishResult,
        dependencies=WRITER,
        summary="Publish activity events (many students, one call)",
        responses={
            **ERROR_RESPONSES,
            **FORBIDDEN_RESPONSES,
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
    async def post_activities(request: Request, service: Service) -> PublishResult:
        """Validate each event; publish the valid ones to Kafka; report the others.

        The answer comes once Kafka has acknowledged every accepted event. Send each
        event's ``eventId`` to make a retry safe (events are deduplicated by it).
        """
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError as err:
            raise body_error(f"invalid JSON: {err}", "json_invalid") from None
        if isinstance(data, dict) and set(data) == {"events"}:
            data = data["events"]
        if not isinstance(data, list):
            msg = 'expected a JSON list of events, or {"events": [...]}'
            raise body_error(msg)
        if len(data) > max_events:
            msg = f"{len(data)} events in one request; at most {max_events}"
            raise HTTPException(413, msg)
        return await run_in_threadpool(service.publish, data)

    return routes
