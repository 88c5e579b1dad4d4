"""``/students/{id}...``: one student's activities, profile and engagement.

Runs in the API process; each endpoint is a plain function FastAPI runs in a worker
thread, answering from the app's :class:`~learntrack.api.service.QueryService`.
Reads take either key; changing a profile takes the write key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from learntrack.api.deps import READER, WRITER, Service, StudentId
from learntrack.api.errors import (
    ERROR_RESPONSES,
    FORBIDDEN_RESPONSES,
    NOT_FOUND_RESPONSES,
)
from learntrack.api.models import ActivityList, Engagement, Student, StudentPatch
from learntrack.api.service import MAX_LATEST

router = APIRouter(
    tags=["students"], responses={**ERROR_RESPONSES, **NOT_FOUND_RESPONSES}
)


@router.get(
    "/students/{student_id}/activities",
    response_model=ActivityList,
    dependencies=READER,
)
def latest_activities(
    student_id: StudentId,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=MAX_LATEST)] = 20,
) -> ActivityList:
    """A student's latest activities, newest first (event time)."""
    return service.latest_activities(student_id, limit)


@router.get("/students/{student_id}", response_model=Student, dependencies=READER)
def get_student(student_id: StudentId, service: Service) -> Student:
    """A student's profile and activity summary."""
    return service.student(student_id)


@router.patch(
    "/students/{student_id}",
    response_model=Student,
    dependencies=WRITER,
    responses=FORBIDDEN_RESPONSES,
)
def patch_student(
    student_id: StudentId, patch: StudentPatch, service: Service
) -> Student:
    """Change profile fields (at least one); sets ``lastUpdated``."""
    return service.update_student(student_id, patch)


@router.get(
    "/students/{student_id}/engagement", response_model=Engagement, dependencies=READER
)
def student_engagement(student_id: StudentId, service: Service) -> Engagement:
    """Score decayed to now, global rank, per-course scores, recent counts."""
    return service.engagement(student_id)
