"""``/courses...``: the course list and the daily engagement of courses.

Runs in the API process; each endpoint is a plain function FastAPI runs in a worker
thread, answering from the app's :class:`~learntrack.api.service.QueryService`
(course ids from the activity log, daily engagement from the nightly batch's
table). Either key may read.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from learntrack.api.deps import READER, CourseId, Service
from learntrack.api.errors import ERROR_RESPONSES
from learntrack.api.models import CourseEngagement, CourseList, CoursesEngagement

#: The ``?from=&to=`` days of the engagement endpoints.
DateFrom = Annotated[
    dt.date | None,
    Query(alias="from", description="First day (default: to - 6 days)."),
]
DateTo = Annotated[
    dt.date | None, Query(alias="to", description="Last day (default: today).")
]

router = APIRouter(dependencies=READER, responses=ERROR_RESPONSES)


@router.get(
    "/courses/{course_id}/engagement",
    response_model=CourseEngagement,
    tags=["engagement"],
)
def course_engagement(
    course_id: CourseId,
    service: Service,
    date_from: DateFrom = None,
    date_to: DateTo = None,
) -> CourseEngagement:
    """Daily engagement of a course (nightly batch), newest first; <= 366 days."""
    return service.course_engagement(course_id, date_from, date_to)


@router.get("/courses", response_model=CourseList, tags=["dashboards"])
def courses(service: Service) -> CourseList:
    """Every course id of the activity log, sorted (dashboard variables)."""
    return service.courses()


@router.get(
    "/courses/engagement", response_model=CoursesEngagement, tags=["dashboards"]
)
def courses_engagement(
    service: Service,
    date_from: DateFrom = None,
    date_to: DateTo = None,
) -> CoursesEngagement:
    """Daily engagement of every course (nightly batch), oldest day first."""
    return service.courses_engagement(date_from, date_to)
