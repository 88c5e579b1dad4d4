"""``/xAPI/about``, ``/agents``, ``/activities`` and the three document resources.

Runs in the API process. The documents (``/activities/state``,
``/activities/profile``, ``/agents/profile``) are kept in MongoDB with an ETag
(SHA-1 of the content): ``If-Match`` / ``If-None-Match`` are honoured (412 when
they fail), and a PUT over an existing profile document without either header is
409, as the specification asks. POST merges JSON objects (400 if either document
is not one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from learntrack.api.xapi import common
from learntrack.api.xapi.common import Reader, Writer, bad_request
from learntrack.api.xapi.service import LrsService, agent_key
from learntrack.producers.xapi_spec import (
    SUPPORTED_VERSIONS,
    StatementError,
    parse_agent_param,
)
from learntrack.sinks.lrs import document_scope

# The xAPI specification describes these resources; /openapi.json stays the
# query service's own (its tests fuzz every operation it lists).
router = APIRouter(prefix=common.PREFIX, tags=["xAPI"], include_in_schema=False)


def _lrs(request: Request) -> LrsService:
    service: LrsService = request.app.state.lrs
    return service


def _agent(values: dict[str, str]) -> dict[str, Any]:
    try:
        return parse_agent_param(common.required(values, "agent"))
    except StatementError as err:
        raise bad_request(f"agent parameter: {err} ({err.reason})") from None


# -- about, agents, activities ------------------------------------------------------
@router.api_route("/about", methods=["GET", "HEAD"], summary="Versions served")
async def about() -> JSONResponse:
    """The xAPI versions this LRS speaks (no credentials needed)."""
    return JSONResponse({"version": list(SUPPORTED_VERSIONS), "extensions": {}})


@router.api_route("/agents", methods=["GET", "HEAD"], summary="The Person of an agent")
async def agents(request: Request, who: Reader) -> JSONResponse:
    """The Person object combining what the agent parameter identifies."""
    del who
    agent = _agent(common.params(request, {"agent"}))
    person: dict[str, Any] = {"objectType": "Person"}
    for name in ("name", "mbox", "mbox_sha1sum", "openid", "account"):
        if name in agent:
            person[name] = [agent[name]]
    return JSONResponse(person)


@router.api_route("/activities", methods=["GET", "HEAD"], summary="An Activity")
async def activities(request: Request, who: Reader) -> JSONResponse:
    """The Activity with its definition as last seen in a stored statement."""
    del who
    values = common.params(request, {"activityId"})
    activity_id = common.iri(values, "activityId", need=True)
    assert activity_id is not None  # noqa: S101 - need=True
    found = await run_in_threadpool(_lrs(request).activity, activity_id)
    return JSONResponse(found)


# -- documents ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Resource:
    """One document resource: its kind, parameters and id parameter."""

    kind: str
    path: str
    doc_param: str
    activity: bool
    agent: bool
    registration: bool
    need_precondition: bool


STATE = _Resource("state", "/activities/state", "stateId", True, True, True, False)
ACTIVITY_PROFILE = _Resource(
    "activityProfile", "/activities/profile", "profileId", True, False, False, True
)
AGENT_PROFILE = _Resource(
    "agentProfile", "/agents/profile", "profileId", False, True, False, True
)


def _scope(res: _Resource, values: dict[str, str]) -> str:
    ids: dict[str, str | None] = {}
    if res.activity:
        ids["activityId"] = common.iri(values, "activityId", need=True)
    if res.agent:
        ids["agent"] = agent_key(_agent(values))
    if res.registration:
        ids["registration"] = common.uuid_param(values, "registration")
    return document_scope(res.kind, **ids)


def _allowed(res: _Resource, *extra: str) -> set[str]:
    names = {res.doc_param, *extra}
    if res.activity:
        names.add("activityId")
    if res.agent:
        names.add("agent")
    if res.registration:
        names.add("registration")
    return names


def _routes(res: _Resource) -> None:
    async def get_documents(request: Request, who: Reader) -> Response:
        del who
        values = common.params(request, _allowed(res, "since"))
        scope = _scope(res, values)
        lrs = _lrs(request)
        if res.doc_param not in values:
            since = common.timestamp(values, "since")
            ids = await run_in_threadpool(lrs.document_ids, res.kind, scope, since)
            return JSONResponse(ids)
        if "since" in values:
            raise bad_request(f"since lists ids: it excludes {res.doc_param}")
        doc = await run_in_threadpool(lrs.document, scope, values[res.doc_param])
        return Response(
            bytes(doc["content"]),
            media_type=doc["contentType"],
            headers={
                "ETag": f'"{doc["etag"]}"',
                "Last-Modified": common.http_date(doc["updated"]),
            },
        )

    async def write(request: Request, merge: bool) -> Response:
        values = common.params(request, _allowed(res))
        scope = _scope(res, values)
        doc_id = common.required(values, res.doc_param)
        content = await request.body()
        ctype = request.headers.get("content-type", "application/octet-stream")
        etag = await run_in_threadpool(
            _lrs(request).write_document,
            res.kind,
            scope,
            doc_id,
            content,
            ctype,
            if_match=request.headers.get("if-match"),
            if_none_match=request.headers.get("if-none-match"),
            merge=merge,
            need_precondition=res.need_precondition and not merge,
        )
        return Response(status_code=204, headers={"ETag": f'"{etag}"'})

    async def put_document(request: Request, who: Writer) -> Response:
        del who
        return await write(request, merge=False)

    async def post_document(request: Request, who: Writer) -> Response:
        del who
        return await write(request, merge=True)

    async def delete_documents(request: Request, who: Writer) -> Response:
        del who
        values = common.params(request, _allowed(res))
        scope = _scope(res, values)
        lrs = _lrs(request)
        if res.doc_param in values:
            await run_in_threadpool(
                lambda: lrs.delete_document(
                    scope,
                    values[res.doc_param],
                    if_match=request.headers.get("if-match"),
                )
            )
        elif res.kind == "state":
            await run_in_threadpool(lrs.delete_documents, res.kind, scope)
        else:
            raise bad_request(f"parameter {res.doc_param!r} is required")
        return Response(status_code=204)

    name = res.kind
    router.add_api_route(
        res.path, get_documents, methods=["GET", "HEAD"], name=f"get_{name}",
        summary=f"A {name} document, or the ids of them",
    )  # fmt: skip
    router.add_api_route(
        res.path, put_document, methods=["PUT"], name=f"put_{name}",
        summary=f"Store a {name} document", status_code=204,
    )  # fmt: skip
    router.add_api_route(
        res.path, post_document, methods=["POST"], name=f"post_{name}",
        summary=f"Merge JSON into a {name} document", status_code=204,
    )  # fmt: skip
    router.add_api_route(
        res.path, delete_documents, methods=["DELETE"], name=f"delete_{name}",
        summary=f"Delete {name} document(s)", status_code=204,
    )  # fmt: skip


for _resource in (STATE, ACTIVITY_PROFILE, AGENT_PROFILE):
    _routes(_resource)
