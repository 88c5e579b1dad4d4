"""Engagement across students: the leaderboard and the score distribution.

Runs in the API process; each endpoint is a plain function FastAPI runs in a worker
thread, answering from the app's :class:`~learntrack.api.service.QueryService`
(the live scores in Redis). Either key may read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from learntrack.api.deps import READER, CourseFilter, Service
from learntrack.api.errors import ERROR_RESPONSES
from learntrack.api.models import Leaderboard, ScoreDistribution
from learntrack.api.service import MAX_BINS, MAX_LEADERBOARD

router = APIRouter(dependencies=READER, responses=ERROR_RESPONSES)


@router.get("/leaderboard", response_model=Leaderboard, tags=["engagement"])
def leaderboard(
    service: Service,
    course: CourseFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LEADERBOARD)] = 10,
) -> Leaderboard:
    """The most engaged students, globally or in one course."""
    return service.leaderboard(course, limit)


@router.get(
    "/engagement/distribution", response_model=ScoreDistribution, tags=["dashboards"]
)
def score_distribution(
    service: Service,
    course: CourseFilter = None,
    bins: Annotated[int, Query(ge=1, le=MAX_BINS)] = 10,
) -> ScoreDistribution:
    """Students per engagement-score bin (equal widths up to the top score)."""
    return service.score_distribution(course, bins)
