"""The pipeline's own state: ``/health``, ``/pipeline/metrics`` and ``/metrics``.

Runs in the API process; each endpoint is a plain function FastAPI runs in a worker
thread, answering from the app's :class:`~learntrack.api.service.QueryService`.
``/health`` and the Prometheus ``/metrics`` need no key (they hold no student
data); ``/pipeline/metrics`` takes either key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from learntrack.api.deps import READER, Service
from learntrack.api.errors import ERROR_RESPONSES
from learntrack.api.models import Health, PipelineMetrics
from learntrack.api.service import MAX_POINTS, prometheus_text

router = APIRouter()


@router.get(
    "/health",
    response_model=Health,
    tags=["health"],
    responses={503: {"model": Health, "description": "A store is down"}},
)
def health(service: Service) -> JSONResponse:
    """Each store's status (no key needed): 200 if all are up, else 503."""
    result = service.health()
    code = 200 if result.status == "ok" else 503
    return JSONResponse(result.model_dump(mode="json"), code)


@router.get(
    "/pipeline/metrics",
    response_model=PipelineMetrics,
    dependencies=READER,
    tags=["dashboards"],
    responses=ERROR_RESPONSES,
)
def pipeline_metrics(
    service: Service,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 120,
) -> PipelineMetrics:
    """The stream's totals and its latest micro-batches (oldest first)."""
    return service.pipeline_metrics(points)


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(service: Service) -> Response:
    """The pipeline's metrics for Prometheus (no key: counters, no student data)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    totals = service.pipeline_metrics(1).totals
    return Response(prometheus_text(totals), media_type=CONTENT_TYPE_LATEST)
