"""``/xAPI/statements``: POST and PUT statements, GET one or a query, ``more``.

Runs in the API process. The routes read their parameters themselves (the
specification's rules: unknown parameters are 400, ``statementId`` excludes the
filters), validate with :mod:`learntrack.producers.xapi_spec` and call the app's
:class:`~learntrack.api.xapi.service.LrsService` in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from learntrack.api.xapi import common
from learntrack.api.xapi.common import (
    CONSISTENT_HEADER,
    Reader,
    Writer,
    XapiError,
    bad_request,
)
from learntrack.api.xapi.service import (
    LrsService,
    Page,
    StoreResult,
    attachment_hashes,
    formatted,
    loads,
    multipart_answer,
    parse_multipart,
)
from learntrack.producers.xapi_spec import (
    StatementError,
    agent_ifi,
    parse_agent_param,
    parse_json,
    validate_statements,
)
from learntrack.sinks.lrs import StatementFilter

# The xAPI specification describes these resources; /openapi.json stays the
# query service's own (its tests fuzz every operation it lists).
router = APIRouter(prefix=common.PREFIX, tags=["xAPI"], include_in_schema=False)

QUERY_PARAMS = {
    "agent",
    "verb",
    "activity",
    "registration",
    "related_activities",
    "related_agents",
    "since",
    "until",
    "limit",
    "format",
    "attachments",
    "ascending",
}
#: The parameter of a ``more`` IRL: the ``order`` of the page's last statement.
CURSOR = "cursor"
_CURSOR = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\|\d{6}\|[0-9a-f-]{36}$")
SINGLE_PARAMS = {"statementId", "voidedStatementId", "format", "attachments"}
FORMATS = ("exact", "ids", "canonical")


def _lrs(request: Request) -> LrsService:
    service: LrsService = request.app.state.lrs
    return service


async def _statements_body(request: Request) -> tuple[Any, dict[str, Any]]:
    """The JSON of a statements request and its attachment parts (multipart)."""
    ctype = request.headers.get("content-type", "application/json")
    raw = await request.body()
    parts: dict[str, Any] = {}
    if ctype.lower().startswith("multipart/mixed"):
        raw, parts = parse_multipart(raw, ctype)
    elif not ctype.lower().startswith("application/json"):
        raise bad_request("statements are application/json or multipart/mixed")
    try:
        # Strict: a property used twice in one object is refused (Data 2.2).
        return parse_json(raw), parts
    except StatementError as err:
        raise bad_request(f"{err} ({err.reason})") from None


async def _store(
    request: Request, who: common.Caller, body: Any, parts: dict[str, Any]
) -> StoreResult:
    version = common.version_of(request)
    lrs = _lrs(request)
    try:
        statements = validate_statements(body, version=version)
    except StatementError as err:
        raise bad_request(f"{err} ({err.reason})") from None
    result: StoreResult = await run_in_threadpool(
        lrs.store,
        statements,
        authority=common.authority(request, who),
        version=version,
        parts=parts,
    )
    await run_in_threadpool(lrs.count, "accepted", len(result.ids))
    await run_in_threadpool(lrs.count, "deadLettered", result.dead_lettered)
    return result


async def _counted(request: Request, write: Awaitable[Response]) -> Response:
    """Run a write; count its refusal (``rejected:<status>``) if it is refused."""
    try:
        response = await write
    except XapiError as err:
        await run_in_threadpool(_lrs(request).count, f"rejected:{err.status}")
        raise
    return response


@router.post("/statements", summary="Store one statement or a list; their ids")
async def post_statements(request: Request, who: Writer) -> Response:
    """Validate every statement, store them, publish them; answer their ids."""
    return await _counted(request, _post(request, who))


async def _post(request: Request, who: common.Caller) -> Response:
    common.params(request, set())
    body, parts = await _statements_body(request)
    result = await _store(request, who, body, parts)
    return Response(orjson.dumps(result.ids), media_type="application/json")


@router.put("/statements", status_code=204, summary="Store a statement by its id")
async def put_statement(request: Request, who: Writer) -> Response:
    """``?statementId=``: store it (204); 409 if that id holds another statement."""
    return await _counted(request, _put(request, who))


async def _put(request: Request, who: common.Caller) -> Response:
    values = common.params(request, {"statementId"})
    statement_id = common.uuid_param(values, "statementId")
    if statement_id is None:
        raise bad_request("parameter 'statementId' is required")
    body, parts = await _statements_body(request)
    if not isinstance(body, dict):
        raise bad_request("PUT takes one statement (a JSON object)")
    given = body.get("id")
    if given is not None and str(given).lower() != statement_id:
        raise bad_request("the statement's id differs from statementId")
    body = {**body, "id": statement_id} if given is None else body
    await _store(request, who, body, parts)
    return Response(status_code=204)


@router.api_route(
    "/statements", methods=["GET", "HEAD"], summary="One statement, or a query"
)
async def get_statements(request: Request, who: Reader) -> Response:
    """``statementId`` / ``voidedStatementId``, or a filtered, paged query.

    A page that is not the last has a ``more`` IRL: this query with a ``cursor``
    (the last statement's place in stored order), so pages do not shift when
    statements arrive meanwhile.
    """
    del who
    names = set(request.query_params)
    if names & {"statementId", "voidedStatementId"}:
        return await _single(request)
    values = common.params(request, {*QUERY_PARAMS, CURSOR})
    after = values.pop(CURSOR, None)
    if after is not None and not _CURSOR.match(after):
        raise bad_request(f"{CURSOR} is not one this LRS gave out")
    return await _query(request, values, after=after)


def _format(values: dict[str, str]) -> str:
    fmt = values.get("format", "exact")
    if fmt not in FORMATS:
        raise bad_request("format must be exact, ids or canonical")
    return fmt


async def _single(request: Request) -> Response:
    values = common.params(request, SINGLE_PARAMS)
    if "statementId" in values and "voidedStatementId" in values:
        raise bad_request("statementId and voidedStatementId exclude each other")
    voided = "voidedStatementId" in values
    name = "voidedStatementId" if voided else "statementId"
    statement_id = common.uuid_param(values, name)
    assert statement_id is not None  # noqa: S101 - checked above
    fmt = _format(values)
    with_files = common.boolean(values, "attachments")
    lrs = _lrs(request)
    doc = await run_in_threadpool(lrs.statement, statement_id, voided=voided)
    body = formatted(doc["json"], fmt, common.languages(request))
    headers = {
        CONSISTENT_HEADER: common.iso(lrs.consistent_through()),
        "Last-Modified": common.http_date(doc["storedAt"]),
    }
    if with_files:
        hashes = attachment_hashes(loads(doc["json"]))
        files = await run_in_threadpool(lrs.attachments, hashes)
        content, ctype = multipart_answer(body, files)
        return Response(content, media_type=ctype, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _filter(values: dict[str, str]) -> StatementFilter:
    agent = None
    if "agent" in values:
        try:
            agent = agent_ifi(parse_agent_param(values["agent"]))
        except StatementError as err:
            raise bad_request(f"agent parameter: {err} ({err.reason})") from None
    return StatementFilter(
        agent=agent,
        related_agents=common.boolean(values, "related_agents"),
        verb=common.iri(values, "verb"),
        activity=common.iri(values, "activity"),
        related_activities=common.boolean(values, "related_activities"),
        registration=common.uuid_param(values, "registration"),
        since=common.timestamp(values, "since"),
        until=common.timestamp(values, "until"),
    )


def _limit(values: dict[str, str]) -> int:
    text = values.get("limit", "0")
    if not text.isdigit():
        raise bad_request("limit must be a non-negative integer")
    return int(text)


async def _query(
    request: Request, values: dict[str, str], after: str | None
) -> Response:
    where = _filter(values)
    fmt = _format(values)
    with_files = common.boolean(values, "attachments")
    ascending = common.boolean(values, "ascending")
    limit = _limit(values)
    lrs = _lrs(request)
    through = lrs.consistent_through()
    page: Page = await run_in_threadpool(
        lrs.query, where, limit=limit, ascending=ascending, after=after
    )
    langs = common.languages(request)
    more = ""
    if page.after is not None:
        # The same query from the cursor on: a client may GET it as it is, or
        # (as ralph's LRS backend does) re-send its parameters.
        query = urlencode({**values, CURSOR: page.after})
        more = f"{request.scope.get('root_path', '')}{common.PREFIX}/statements?{query}"
    texts = [formatted(t, fmt, langs) for t in page.texts]
    body = (
        b'{"statements":[' + b",".join(texts) + b'],"more":' + orjson.dumps(more) + b"}"
    )
    headers = {CONSISTENT_HEADER: common.iso(through)}
    if page.newest is not None:
        headers["Last-Modified"] = common.http_date(page.newest)
    if with_files:
        hashes: set[str] = set()
        for t in page.texts:
            hashes |= attachment_hashes(loads(t))
        files = await run_in_threadpool(lrs.attachments, hashes)
        content, ctype = multipart_answer(body, files)
        return Response(content, media_type=ctype, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
