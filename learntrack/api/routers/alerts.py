"""``/alerts...``: the multi-region alerts, listed and counted per hour.

Runs in the API process; each endpoint is a plain function FastAPI runs in a worker
thread, answering from the app's :class:`~learntrack.api.service.QueryService`.
Either key may read.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from learntrack.api.deps import READER, Service
from learntrack.api.errors import ERROR_RESPONSES
from learntrack.api.models import AlertList, AlertsPerHour
from learntrack.api.service import MAX_ALERTS
from learntrack.events import ID_PATTERN

router = APIRouter(dependencies=READER, responses=ERROR_RESPONSES)


@router.get("/alerts", response_model=AlertList, tags=["alerts"])
def alerts(
    service: Service,
    since: Annotated[
        dt.datetime | None,
        Query(description="Only alerts at or after this time (naive: UTC)."),
    ] = None,
    student: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ALERTS)] = 50,
) -> AlertList:
    """Multi-region alerts, newest first."""
    return service.alerts(since, student, limit)


@router.get("/alerts/hourly", response_model=AlertsPerHour, tags=["dashboards"])
def alerts_hourly(
    service: Service,
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
