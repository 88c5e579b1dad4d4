"""The Learning Record Store under ``/xAPI/``, resource by resource, on the real stack.

FastAPI's TestClient drives the real app over the real MongoDB and Kafka of the
test stack; each test has its own database and topics (activity, dead letters).
Each test names the requirement of the xAPI specification (1.0.3, part 3) it
proves; docs/xapi.md lists them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from fastapi.testclient import TestClient

from learntrack.api.app import create_app
from learntrack.clients import mongo_client
from learntrack.config import Settings, get_settings
from learntrack.producers.xapi import XAPI_NAMESPACE, statement_event_id
from learntrack.sinks import lrs
from learntrack.topics import create_topic, delete_topics, read_topic

pytestmark = pytest.mark.stack

ADL = "http://adlnet.gov/expapi/verbs/"
COURSE = "https://lms.example.edu/courses/BD101"
V = {"X-Experience-API-Version": "1.0.3"}


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture
def cfg(settings: Settings, prefix: str) -> Iterator[Settings]:
    """Settings with this test's own database and topics (activity, dead letters)."""
    test_settings = get_settings(
        mongo={"database": prefix},
        topics={
            "activity": f"{prefix}.activity",
            "dlq": f"{prefix}.dlq",
            "alerts": f"{prefix}.alerts",
        },
        xapi={"max_query_limit": 50},
    )
    topics = [test_settings.topics.activity, test_settings.topics.dlq]
    for topic in topics:
        create_topic(test_settings, topic, partitions=2, retention_ms=600_000)
    yield test_settings
    delete_topics(test_settings, topics)
    with mongo_client(test_settings) as client:
        client.drop_database(prefix)


@pytest.fixture
def client(cfg: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as test_client:
        yield test_client


def basic(secret: str, user: str = "lms") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def writer(cfg: Settings) -> dict[str, str]:
    assert cfg.api.write_key is not None
    return {**V, "Authorization": basic(cfg.api.write_key.get_secret_value())}


def reader(cfg: Settings) -> dict[str, str]:
    assert cfg.api.read_key is not None
    return {**V, "Authorization": basic(cfg.api.read_key.get_secret_value())}


def statement(
    student: str = "S1", verb: str = "experienced", **extra: Any
) -> dict[str, Any]:
    return {
        "actor": {
            "objectType": "Agent",
            "account": {"homePage": "https://lms.example.edu", "name": student},
        },
        "verb": {"id": ADL + verb, "display": {"en-US": verb}},
        "object": {
            "id": f"{COURSE}/unit-1",
            "definition": {"name": {"en-US": "Unit 1", "fr-FR": "Unité 1"}},
        },
        "context": {"contextActivities": {"parent": [{"id": COURSE}]}},
        "timestamp": "2026-11-20T10:15:00+01:00",
        **extra,
    }


def stored_count(cfg: Settings) -> int:
    with mongo_client(cfg) as client:
        return int(client[cfg.mongo.database][lrs.STATEMENTS].count_documents({}))


def counts(cfg: Settings) -> dict[str, int]:
    with mongo_client(cfg) as client:
        return lrs.read_counts(client[cfg.mongo.database])


def event_id(statement_id: str) -> str:
    return str(uuid.uuid5(XAPI_NAMESPACE, statement_id))


def get_one(client: TestClient, cfg: Settings, sid: str, **params: str) -> Any:
    return client.get(
        "/xAPI/statements", params={"statementId": sid, **params}, headers=reader(cfg)
    )


# -- statements: POST / PUT -----------------------------------------------------------
def test_post_one_or_a_list_answers_ids_and_publishes_keyed_events(
    client: TestClient, cfg: Settings
) -> None:
    """POST: one statement or a list; 200 with the ids in order; each accepted
    statement is published to the activity topic keyed by the student."""
    one = client.post("/xAPI/statements", json=statement("S1"), headers=writer(cfg))
    assert one.status_code == 200, one.text
    [first] = one.json()
    assert uuid.UUID(first).version == 4
    given = str(uuid.uuid4())
    listed = [statement("S2", id=given), statement("S3"), statement("S2")]
    many = client.post("/xAPI/statements", json=listed, headers=writer(cfg))
    assert many.status_code == 200, many.text
    ids = many.json()
    assert len(ids) == 3
    assert ids[0] == given
    assert stored_count(cfg) == 4

    records = read_topic(cfg, cfg.topics.activity)
    published = {orjson.loads(r.value())["eventId"]: r for r in records}
    assert set(published) == {event_id(i) for i in [first, *ids]}
    assert published[event_id(first)].key() == b"S1"
    assert published[event_id(given)].key() == b"S2"
    event = orjson.loads(published[event_id(given)].value())
    assert event["courseId"] == "BD101"
    assert event["action"] == "page_view"
    assert event["timestamp"] == "2026-11-20T09:15:00Z"
    assert counts(cfg)["accepted"] == 4


def test_a_stored_statement_comes_back_as_sent_plus_the_lrs_fields(
    client: TestClient, cfg: Settings
) -> None:
    """The LRS sets id, stored, authority, version (and timestamp) and keeps
    everything else exactly as sent, extension keys with dots included."""
    sent = statement(
        "S1",
        result={"score": {"scaled": 0.5}, "extensions": {"https://x.org/a.b": 1.0}},
    )
    sent.pop("timestamp")
    [sid] = client.post("/xAPI/statements", json=sent, headers=writer(cfg)).json()
    got = get_one(client, cfg, sid)
    assert got.status_code == 200
    back = got.json()
    assert {k: v for k, v in back.items() if k in sent} == sent
    assert back["id"] == sid
    assert back["version"] == "1.0.0"
    assert back["authority"]["account"]["name"] == "lms"
    stored = dt.datetime.fromisoformat(back["stored"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - stored).total_seconds()) < 600
    assert back["timestamp"] == back["stored"]
    assert b'"https://x.org/a.b":1.0' in got.content
    assert "Last-Modified" in got.headers
    assert "X-Experience-API-Consistent-Through" in got.headers


def test_put_stores_by_id_and_conflicts_only_on_a_different_statement(
    client: TestClient, cfg: Settings
) -> None:
    """PUT ?statementId=: 204; the same statement again: 204 (not an error); a
    different statement under a stored id: 409, by PUT and by POST, and nothing of
    that request is stored."""
    sid = str(uuid.uuid4())
    url = f"/xAPI/statements?statementId={sid}"
    assert client.put(url, json=statement("S1"), headers=writer(cfg)).status_code == 204
    again = client.put(url, json=statement("S1"), headers=writer(cfg))
    assert again.status_code == 204
    other = client.put(url, json=statement("S9"), headers=writer(cfg))
    assert other.status_code == 409
    fresh = str(uuid.uuid4())
    batch = [statement("S4", id=fresh), statement("S9", id=sid)]
    posted = client.post("/xAPI/statements", json=batch, headers=writer(cfg))
    assert posted.status_code == 409
    assert get_one(client, cfg, fresh).status_code == 404
    assert get_one(client, cfg, sid).json()["actor"]["account"]["name"] == "S1"
    resent = client.post(
        "/xAPI/statements", json=statement("S1", id=sid), headers=writer(cfg)
    )
    assert resent.status_code == 200
    assert resent.json() == [sid]
    assert stored_count(cfg) == 1
    assert counts(cfg)["rejected:409"] == 2


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", statement("S1")),  # no statementId
        ("?statementId=not-a-uuid", statement("S1")),
        (f"?statementId={uuid.uuid4()}", statement("S1", id=str(uuid.uuid4()))),
        (f"?statementId={uuid.uuid4()}", [statement("S1")]),  # a list
        (f"?statementId={uuid.uuid4()}&verb=x:y", statement("S1")),  # other param
    ],
)
def test_put_bad_requests_are_400(
    client: TestClient, cfg: Settings, query: str, body: Any
) -> None:
    """PUT needs exactly a statementId (a UUID) matching the one statement's id."""
    answer = client.put(f"/xAPI/statements{query}", json=body, headers=writer(cfg))
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"]
    assert stored_count(cfg) == 0


def _bad_statements() -> list[tuple[str, Any]]:
    good = statement("S1")
    return [
        ("no actor", {k: v for k, v in good.items() if k != "actor"}),
        ("actor without identifier", {**good, "actor": {"name": "Ann"}}),
        ("two identifiers", {**good, "actor": {"mbox": "mailto:a@b.c", "openid": "http://a.b"}}),
        ("mbox not mailto", {**good, "actor": {"mbox": "a@b.c"}}),
        ("verb id not an IRI", {**good, "verb": {"id": "experienced"}}),
        ("verb a string", {**good, "verb": ADL + "experienced"}),
        ("object without id", {**good, "object": {"definition": {}}}),
        ("bad timestamp", {**good, "timestamp": "yesterday"}),
        ("impossible timestamp", {**good, "timestamp": "2026-13-45T10:15:00Z"}),
        ("id not a UUID", {**good, "id": "42"}),
        ("registration not a UUID", {**good, "context": {"registration": "r1"}}),
        ("not an object", "a statement"),
    ]  # fmt: skip


@pytest.mark.parametrize(("why", "body"), _bad_statements())
def test_invalid_statements_are_400_counted_and_reach_no_store(
    client: TestClient, cfg: Settings, why: str, body: Any
) -> None:
    """An invalid statement is refused with 400 and a reason; a list with one
    invalid statement stores and publishes none of it."""
    alone = client.post("/xAPI/statements", json=body, headers=writer(cfg))
    assert alone.status_code == 400, why
    assert alone.json()["detail"]
    if isinstance(body, dict):
        mixed = [statement("S2"), body, statement("S3")]
        batch = client.post("/xAPI/statements", json=mixed, headers=writer(cfg))
        assert batch.status_code == 400
        assert "statement[1]" in batch.json()["detail"]
    assert stored_count(cfg) == 0
    assert read_topic(cfg, cfg.topics.activity) == []
    assert counts(cfg)["rejected:400"] == (2 if isinstance(body, dict) else 1)


def test_duplicate_ids_in_one_request_and_bodies_that_are_not_json_are_400(
    client: TestClient, cfg: Settings
) -> None:
    sid = str(uuid.uuid4())
    twice = [statement("S1", id=sid), statement("S2", id=sid)]
    assert (
        client.post("/xAPI/statements", json=twice, headers=writer(cfg)).status_code
        == 400
    )
    for content in (b"{not json", b"\xff\xfe"):
        answer = client.post(
            "/xAPI/statements",
            content=content,
            headers={**writer(cfg), "Content-Type": "application/json"},
        )
        assert answer.status_code == 400
    assert stored_count(cfg) == 0


def test_a_statement_the_mapping_cannot_use_is_stored_and_dead_lettered(
    client: TestClient, cfg: Settings
) -> None:
    """Valid xAPI is never refused: a statement LearnTrack cannot turn into an
    activity event (here a timestamp before the event model's 2000-01-01) is
    stored, answered 200 and published to the dead-letter topic with its reason;
    an actor name outside the event's id pattern is no such case any more: it is
    published under a stable hashed student id."""
    old = statement("S1", timestamp="1999-06-01T10:15:00Z")
    odd = statement("Ann Smith (guest)")
    answer = client.post("/xAPI/statements", json=[old, odd], headers=writer(cfg))
    assert answer.status_code == 200, answer.text
    old_id, odd_id = answer.json()
    assert get_one(client, cfg, old_id).status_code == 200
    [published] = read_topic(cfg, cfg.topics.activity)
    event = orjson.loads(published.value())
    assert event["studentId"].startswith("account:")
    assert event["eventId"] == str(statement_event_id({"id": odd_id}))
    [dead] = read_topic(cfg, cfg.topics.dlq)
    record = orjson.loads(dead.value())
    assert record["reason"] == "timestamp_out_of_range"
    assert record["statementId"] == old_id
    assert orjson.loads(record["raw"])["timestamp"] == old["timestamp"]
    assert counts(cfg)["deadLettered"] == 1


def test_a_broker_outage_is_503_and_a_retry_publishes(
    client: TestClient, cfg: Settings
) -> None:
    """Kafka down: 503, never a silent loss: nothing of the request is kept (a
    statement without an id would otherwise be stored twice by a retry, its first
    copy never published), and sending it again once Kafka is back stores and
    publishes it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    down = cfg.model_copy(
        update={
            "kafka": cfg.kafka.model_copy(update={"port": dead_port}),
            "producer": cfg.producer.model_copy(update={"delivery_timeout_ms": 1500}),
        }
    )
    sid = str(uuid.uuid4())
    with TestClient(create_app(down)) as outage:
        answer = outage.post(
            "/xAPI/statements",
            json=[statement("S1", id=sid), statement("S2")],
            headers=writer(cfg),
        )
    assert answer.status_code == 503, answer.text
    assert get_one(client, cfg, sid).status_code == 404  # not kept
    assert stored_count(cfg) == 0
    assert read_topic(cfg, cfg.topics.activity) == []
    retry = client.post(
        "/xAPI/statements", json=statement("S1", id=sid), headers=writer(cfg)
    )
    assert retry.status_code == 200
    assert get_one(client, cfg, sid).status_code == 200
    [record] = read_topic(cfg, cfg.topics.activity)
    assert orjson.loads(record.value())["eventId"] == event_id(sid)


def test_since_is_exclusive_and_until_inclusive_at_a_stored_time(
    client: TestClient, cfg: Settings
) -> None:
    """since/until given a statement's own ``stored`` (as clients read it back):
    since leaves it out, until keeps it."""
    [sid] = client.post(
        "/xAPI/statements", json=statement("S1"), headers=writer(cfg)
    ).json()
    stored = get_one(client, cfg, sid).json()["stored"]

    def ids(**params: str) -> list[str]:
        answer = client.get("/xAPI/statements", params=params, headers=reader(cfg))
        assert answer.status_code == 200, answer.text
        return [st["id"] for st in answer.json()["statements"]]

    assert ids(since=stored) == []
    assert ids(until=stored) == [sid]


def test_context_activities_come_back_as_arrays_and_repeated_properties_are_400(
    client: TestClient, cfg: Settings
) -> None:
    """A single contextActivities object is returned as an array in every format
    (Data 2.4.6.2); a body using a property twice in one object is refused."""
    single = statement("S1")
    single["context"] = {"contextActivities": {"parent": {"id": COURSE}}}
    [sid] = client.post("/xAPI/statements", json=single, headers=writer(cfg)).json()
    for fmt in ("exact", "ids", "canonical"):
        parent = get_one(client, cfg, sid, format=fmt).json()["context"][
            "contextActivities"
        ]["parent"]
        assert isinstance(parent, list), fmt
        assert [a["id"] for a in parent] == [COURSE], fmt
    twice = (
        b'{"actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": "'
        + ADL.encode()
        + b'experienced"}, "object": {"id": "https://x.org/a", "id": "https://x.org/b"}}'
    )
    answer = client.post(
        "/xAPI/statements",
        content=twice,
        headers={**writer(cfg), "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert "duplicate_property" in answer.text
    assert stored_count(cfg) == 1


# -- statements: GET ------------------------------------------------------------------
def test_get_single_statement_rules(client: TestClient, cfg: Settings) -> None:
    """statementId / voidedStatementId exclude each other and every filter (400);
    an unknown id is 404; unknown parameters are 400; format=ids trims objects."""
    [sid] = client.post(
        "/xAPI/statements", json=statement("S1"), headers=writer(cfg)
    ).json()
    h = reader(cfg)
    assert get_one(client, cfg, sid).status_code == 200
    assert get_one(client, cfg, sid, verb=ADL + "experienced").status_code == 400
    assert get_one(client, cfg, sid, voidedStatementId=sid).status_code == 400
    assert get_one(client, cfg, sid, colour="red").status_code == 400
    assert get_one(client, cfg, str(uuid.uuid4())).status_code == 404
    assert get_one(client, cfg, "nope").status_code == 400
    ids = get_one(client, cfg, sid, format="ids").json()
    assert ids["object"] == {"objectType": "Activity", "id": f"{COURSE}/unit-1"}
    assert ids["verb"] == {"id": ADL + "experienced"}
    assert get_one(client, cfg, sid, format="pretty").status_code == 400
    head = client.head("/xAPI/statements", params={"statementId": sid}, headers=h)
    assert head.status_code == 200
    assert head.content == b""


def test_voiding(client: TestClient, cfg: Settings) -> None:
    """A voiding statement voids its target: the target is then returned only by
    voidedStatementId, never by statementId or a query; the voiding statement is
    listed; a voiding statement cannot itself be voided (400)."""
    [target] = client.post(
        "/xAPI/statements", json=statement("S1"), headers=writer(cfg)
    ).json()
    voiding = statement(
        "admin", verb="voided", object={"objectType": "StatementRef", "id": target}
    )
    voiding.pop("context")
    [void_id] = client.post(
        "/xAPI/statements", json=voiding, headers=writer(cfg)
    ).json()
    assert get_one(client, cfg, target).status_code == 404
    voided = client.get(
        "/xAPI/statements", params={"voidedStatementId": target}, headers=reader(cfg)
    )
    assert voided.status_code == 200
    assert voided.json()["id"] == target
    not_voided = client.get(
        "/xAPI/statements", params={"voidedStatementId": void_id}, headers=reader(cfg)
    )
    assert not_voided.status_code == 404
    listed = client.get("/xAPI/statements", headers=reader(cfg)).json()
    assert [s["id"] for s in listed["statements"]] == [void_id]
    # A query on the voided statement's activity finds the statement targeting it.
    by_activity = client.get(
        "/xAPI/statements",
        params={"activity": f"{COURSE}/unit-1"},
        headers=reader(cfg),
    ).json()
    assert [s["id"] for s in by_activity["statements"]] == [void_id]
    again = {**voiding, "object": {"objectType": "StatementRef", "id": void_id}}
    refused = client.post("/xAPI/statements", json=again, headers=writer(cfg))
    assert refused.status_code == 400
    # The voiding statement is no learner activity: only the target was published.
    published = [
        orjson.loads(r.value())["eventId"] for r in read_topic(cfg, cfg.topics.activity)
    ]
    assert published == [event_id(target)]


def _ids(client: TestClient, cfg: Settings, **params: str) -> list[str]:
    answer = client.get("/xAPI/statements", params=params, headers=reader(cfg))
    assert answer.status_code == 200, answer.text
    return [s["id"] for s in answer.json()["statements"]]


def test_query_filters(client: TestClient, cfg: Settings) -> None:
    """agent, verb, activity, registration, related_agents, related_activities,
    since, until, ascending: each filter as the specification defines it."""
    reg = str(uuid.uuid4())
    ann = {"mbox": "mailto:ann@example.org"}
    teacher = {"mbox": "mailto:teacher@example.org"}
    a = statement("S1")
    b = statement("S2", verb="attempted")
    b["context"] = {**b["context"], "registration": reg, "instructor": teacher}
    c = {**statement("S3"), "actor": ann, "object": {"id": "https://x.org/other"}}
    c.pop("context")
    [ida] = client.post("/xAPI/statements", json=a, headers=writer(cfg)).json()
    middle = dt.datetime.now(dt.UTC)
    idb, idc = client.post("/xAPI/statements", json=[b, c], headers=writer(cfg)).json()

    assert _ids(client, cfg) == [idc, idb, ida]
    assert _ids(client, cfg, ascending="true") == [ida, idb, idc]
    assert _ids(client, cfg, agent=json.dumps(ann)) == [idc]
    account = json.dumps(a["actor"])
    assert _ids(client, cfg, agent=account) == [ida]
    assert _ids(client, cfg, agent=json.dumps(teacher)) == []
    assert _ids(client, cfg, agent=json.dumps(teacher), related_agents="true") == [idb]
    assert _ids(client, cfg, verb=ADL + "attempted") == [idb]
    assert _ids(client, cfg, activity=f"{COURSE}/unit-1") == [idb, ida]
    assert _ids(client, cfg, activity=COURSE) == []
    assert _ids(client, cfg, activity=COURSE, related_activities="true") == [idb, ida]
    assert _ids(client, cfg, registration=reg) == [idb]
    since = middle.isoformat()
    assert _ids(client, cfg, since=since) == [idc, idb]
    assert _ids(client, cfg, until=since) == [ida]
    for bad in (
        {"agent": "{not json"},
        {"agent": json.dumps({"name": "no identifier"})},
        {"verb": "not an iri"},
        {"registration": "x"},
        {"since": "yesterday"},
        {"limit": "-1"},
        {"ascending": "maybe"},
        {"colour": "red"},
    ):
        answer = client.get("/xAPI/statements", params=bad, headers=reader(cfg))
        assert answer.status_code == 400, bad


def test_more_pages_are_stable_and_limit_zero_is_the_server_maximum(
    client: TestClient, cfg: Settings
) -> None:
    """limit pages the result; ``more`` is an IRL that GETs the next page, and
    statements stored meanwhile do not shift a descending query's pages;
    limit=0 means the server's maximum (50 here); the consistency header is set."""
    body = [statement(f"S{i}") for i in range(7)]
    ids = client.post("/xAPI/statements", json=body, headers=writer(cfg)).json()
    newest_first = list(reversed(ids))
    first = client.get("/xAPI/statements", params={"limit": "3"}, headers=reader(cfg))
    page = first.json()
    assert [s["id"] for s in page["statements"]] == newest_first[:3]
    assert page["more"].startswith("/xAPI/statements?")
    through = first.headers["X-Experience-API-Consistent-Through"]
    assert dt.datetime.fromisoformat(through.replace("Z", "+00:00")) <= dt.datetime.now(
        dt.UTC
    )
    client.post("/xAPI/statements", json=statement("late"), headers=writer(cfg))
    seen = [s["id"] for s in page["statements"]]
    while page["more"]:
        page = client.get(page["more"], headers=reader(cfg)).json()
        seen += [s["id"] for s in page["statements"]]
    assert seen == newest_first
    many = [statement(f"T{i}") for i in range(60)]
    client.post("/xAPI/statements", json=many, headers=writer(cfg))
    unlimited = client.get(
        "/xAPI/statements", params={"limit": "0"}, headers=reader(cfg)
    )
    assert len(unlimited.json()["statements"]) == 50
    assert unlimited.json()["more"]
    bad = client.get("/xAPI/statements", params={"cursor": "x"}, headers=reader(cfg))
    assert bad.status_code == 400


def test_canonical_format_keeps_the_asked_language(
    client: TestClient, cfg: Settings
) -> None:
    [sid] = client.post(
        "/xAPI/statements", json=statement("S1"), headers=writer(cfg)
    ).json()
    answer = client.get(
        "/xAPI/statements",
        params={"statementId": sid, "format": "canonical"},
        headers={**reader(cfg), "Accept-Language": "fr-FR, en;q=0.5"},
    )
    assert answer.json()["object"]["definition"]["name"] == {"fr-FR": "Unité 1"}


# -- attachments and alternate syntax -------------------------------------------------
def _multipart(statements: Any, files: dict[str, bytes], boundary: str) -> bytes:
    out = [
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode(),
        orjson.dumps(statements),
        b"\r\n",
    ]
    for sha2, content in files.items():
        out += [
            f"--{boundary}\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: "
            f"binary\r\nX-Experience-API-Hash: {sha2}\r\n\r\n".encode(),
            content,
            b"\r\n",
        ]
    out.append(f"--{boundary}--".encode())
    return b"".join(out)


def test_attachments_in_multipart_are_stored_and_served(
    client: TestClient, cfg: Settings
) -> None:
    """A statement with an attachment comes as multipart/mixed with its part
    (hash checked); attachments=true answers multipart/mixed with the bytes; an
    attachment without its part is 400."""
    content = b"certificate of completion\r\n"
    sha2 = hashlib.sha256(content).hexdigest()
    att = {
        "usageType": "http://id.tincanapi.com/attachment/certificate",
        "display": {"en-US": "certificate"},
        "contentType": "text/plain",
        "length": len(content),
        "sha2": sha2,
    }
    stmt = statement("S1", attachments=[att])
    headers = {**writer(cfg), "Content-Type": "multipart/mixed; boundary=xyz"}
    answer = client.post(
        "/xAPI/statements",
        content=_multipart(stmt, {sha2: content}, "xyz"),
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    [sid] = answer.json()
    served = client.get(
        "/xAPI/statements",
        params={"statementId": sid, "attachments": "true"},
        headers=reader(cfg),
    )
    assert served.headers["content-type"].startswith("multipart/mixed")
    assert content in served.content
    assert f"X-Experience-API-Hash: {sha2}".encode() in served.content
    missing = client.post(
        "/xAPI/statements", json=statement("S2", attachments=[att]), headers=writer(cfg)
    )
    assert missing.status_code == 400
    wrong = _multipart(statement("S3", attachments=[att]), {sha2: b"other"}, "xyz")
    assert (
        client.post("/xAPI/statements", content=wrong, headers=headers).status_code
        == 400
    )
    assert stored_count(cfg) == 1


def _jws(header: dict[str, Any], payload: Any) -> bytes:
    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")

    return f"{part(header)}.{part(payload)}.c2lnbmF0dXJl".encode()


@pytest.mark.parametrize(
    ("alg", "signs_this_statement", "status"),
    [("RS256", True, 200), ("HS256", True, 400), ("RS256", False, 400)],
)
def test_signed_statements_are_checked_for_form(
    client: TestClient, cfg: Settings, alg: str, signs_this_statement: bool, status: int
) -> None:
    """A signature attachment must be a compact JWS, RS256/384/512, whose payload
    is the statement itself (the RSA signature is not verified)."""
    stmt = statement("S1", id=str(uuid.uuid4()))
    payload = stmt if signs_this_statement else statement("S2")
    jws = _jws({"alg": alg}, payload)
    sha2 = hashlib.sha256(jws).hexdigest()
    signature = {
        "usageType": "http://adlnet.gov/expapi/attachments/signature",
        "display": {"en-US": "signature"},
        "contentType": "application/octet-stream",
        "length": len(jws),
        "sha2": sha2,
    }
    body = _multipart({**stmt, "attachments": [signature]}, {sha2: jws}, "sig")
    answer = client.post(
        "/xAPI/statements",
        content=body,
        headers={**writer(cfg), "Content-Type": "multipart/mixed; boundary=sig"},
    )
    assert answer.status_code == status, answer.text
    assert stored_count(cfg) == (1 if status == 200 else 0)


def test_alternate_request_syntax(client: TestClient, cfg: Settings) -> None:
    """A form POST with ?method= stands for that request, headers in the form."""
    [sid] = client.post(
        "/xAPI/statements", json=statement("S1"), headers=writer(cfg)
    ).json()
    assert cfg.api.read_key is not None
    form = {
        "Authorization": basic(cfg.api.read_key.get_secret_value()),
        "X-Experience-API-Version": "1.0.3",
        "statementId": sid,
    }
    answer = client.post(
        "/xAPI/statements?method=GET",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == sid
    other = client.post(
        "/xAPI/statements?method=GET&x=1", content="", headers=writer(cfg)
    )
    assert other.status_code == 400


# -- version header, auth, errors -----------------------------------------------------
def test_version_header_is_required_and_always_answered(
    client: TestClient, cfg: Settings
) -> None:
    """Every request but /about needs X-Experience-API-Version (400 without or
    unsupported); every answer carries it, errors included."""
    auth = {"Authorization": writer(cfg)["Authorization"]}
    for headers in (auth, {**auth, "X-Experience-API-Version": "0.95"}):
        answer = client.post("/xAPI/statements", json=statement(), headers=headers)
        assert answer.status_code == 400
        assert answer.headers["X-Experience-API-Version"] == "1.0.3"
    two = client.get(
        "/xAPI/statements", headers={**reader(cfg), "X-Experience-API-Version": "2.0.0"}
    )
    assert two.status_code == 200
    assert two.headers["X-Experience-API-Version"] == "2.0.0"
    about = client.get("/xAPI/about")
    assert about.status_code == 200
    assert "1.0.3" in about.json()["version"]
    assert about.headers["X-Experience-API-Version"]
    for answer in (
        client.get("/xAPI/statements", headers=V),  # 401
        client.get("/xAPI/nothing-here", headers=reader(cfg)),  # 404
        get_one(client, cfg, str(uuid.uuid4())),  # 404
    ):
        assert answer.status_code in (401, 404)
        assert answer.headers["X-Experience-API-Version"] == "1.0.3"
    assert stored_count(cfg) == 0


def test_cors_preflight_and_headers(client: TestClient, cfg: Settings) -> None:
    """Browser clients: a preflight needs neither key nor version; answers expose
    the xAPI headers to any origin."""
    preflight = client.options(
        "/xAPI/statements",
        headers={
            "Origin": "https://lms.example.edu",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-experience-api-version",
        },
    )
    assert preflight.status_code == 204
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed
    assert "x-experience-api-version" in allowed
    answer = client.get("/xAPI/statements", headers=reader(cfg))
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert (
        "X-Experience-API-Consistent-Through"
        in answer.headers["Access-Control-Expose-Headers"]
    )


def test_basic_auth_with_the_api_keys(client: TestClient, cfg: Settings) -> None:
    """HTTP Basic: the write key writes and reads, the read key reads (403 on a
    write); none or a wrong one is 401 with a Basic challenge; X-API-Key works."""
    assert cfg.api.write_key is not None
    missing = client.get("/xAPI/statements", headers=V)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Basic")
    wrong = client.get(
        "/xAPI/statements", headers={**V, "Authorization": basic("nope")}
    )
    assert wrong.status_code == 401
    bearer = client.get("/xAPI/statements", headers={**V, "Authorization": "Bearer x"})
    assert bearer.status_code == 401
    garbled = client.get(
        "/xAPI/statements", headers={**V, "Authorization": "Basic %%%"}
    )
    assert garbled.status_code == 401
    forbidden = client.post("/xAPI/statements", json=statement(), headers=reader(cfg))
    assert forbidden.status_code == 403
    anonymous = client.post("/xAPI/statements", json=statement(), headers=V)
    assert anonymous.status_code == 401
    assert client.get("/xAPI/statements", headers=reader(cfg)).status_code == 200
    keyed = {**V, "X-API-Key": cfg.api.write_key.get_secret_value()}
    assert (
        client.post("/xAPI/statements", json=statement(), headers=keyed).status_code
        == 200
    )
    assert stored_count(cfg) == 1
    refused = counts(cfg)  # the refused writes are counted (reads are not)
    assert (refused.get("rejected:401"), refused.get("rejected:403")) == (1, 1)


def test_too_large_is_413_and_other_endpoints_keep_422(cfg: Settings) -> None:
    small = cfg.model_copy(
        update={"api": cfg.api.model_copy(update={"max_body_bytes": 2048})}
    )
    with TestClient(create_app(small)) as api:
        big = [statement(f"S{i}") for i in range(20)]
        answer = api.post("/xAPI/statements", json=big, headers=writer(cfg))
        assert answer.status_code == 413
        assert answer.headers["X-Experience-API-Version"] == "1.0.3"
        assert counts(cfg).get("rejected:413") == 1
        assert cfg.api.write_key is not None
        key = {"X-API-Key": cfg.api.write_key.get_secret_value()}
        legacy = api.post("/activities", content=b"{not json", headers=key)
        assert legacy.status_code == 422
        patched = api.patch("/students/S1", json={"progress": 101}, headers=key)
        assert patched.status_code == 422
    assert stored_count(cfg) == 0


# -- about, agents, activities ---------------------------------------------------------
def test_agents_and_activities(client: TestClient, cfg: Settings) -> None:
    agent = {"objectType": "Agent", "name": "Ann", "mbox": "mailto:ann@example.org"}
    person = client.get(
        "/xAPI/agents", params={"agent": json.dumps(agent)}, headers=reader(cfg)
    )
    assert person.json() == {
        "objectType": "Person",
        "name": ["Ann"],
        "mbox": ["mailto:ann@example.org"],
    }
    assert client.get("/xAPI/agents", headers=reader(cfg)).status_code == 400
    unknown = client.get(
        "/xAPI/activities", params={"activityId": COURSE}, headers=reader(cfg)
    )
    assert unknown.json() == {"objectType": "Activity", "id": COURSE}
    client.post("/xAPI/statements", json=statement("S1"), headers=writer(cfg))
    known = client.get(
        "/xAPI/activities",
        params={"activityId": f"{COURSE}/unit-1"},
        headers=reader(cfg),
    )
    assert known.json()["definition"]["name"]["en-US"] == "Unit 1"
    assert client.get("/xAPI/activities", headers=reader(cfg)).status_code == 400


# -- documents ---------------------------------------------------------------------
AGENT = json.dumps({"mbox": "mailto:ann@example.org"})


def test_state_documents(client: TestClient, cfg: Settings) -> None:
    """State: PUT stores (any content type), GET returns it with its ETag, the id
    list honours since, If-Match / If-None-Match are checked (412), POST merges
    JSON objects (400 otherwise), DELETE one or all; unknown is 404."""
    base = {"activityId": COURSE, "agent": AGENT}
    url = "/xAPI/activities/state"
    put = client.put(
        url,
        params={**base, "stateId": "bookmark"},
        content=b"page 7",
        headers={**writer(cfg), "Content-Type": "text/plain"},
    )
    assert put.status_code == 204
    got = client.get(url, params={**base, "stateId": "bookmark"}, headers=reader(cfg))
    assert got.content == b"page 7"
    assert got.headers["content-type"].startswith("text/plain")
    etag = got.headers["ETag"]
    assert etag == f'"{hashlib.sha1(b"page 7").hexdigest()}"'  # noqa: S324
    stale = client.put(
        url,
        params={**base, "stateId": "bookmark"},
        content=b"page 8",
        headers={**writer(cfg), "If-Match": '"0000"'},
    )
    assert stale.status_code == 412
    create_only = client.put(
        url,
        params={**base, "stateId": "bookmark"},
        content=b"page 8",
        headers={**writer(cfg), "If-None-Match": "*"},
    )
    assert create_only.status_code == 412
    ok = client.put(
        url,
        params={**base, "stateId": "bookmark"},
        content=b"page 8",
        headers={**writer(cfg), "If-Match": etag},
    )
    assert ok.status_code == 204
    later = dt.datetime.now(dt.UTC)
    merged = {**base, "stateId": "progress"}
    json_type = {**writer(cfg), "Content-Type": "application/json"}
    assert (
        client.post(
            url, params=merged, json={"a": 1, "b": 1}, headers=json_type
        ).status_code
        == 204
    )
    assert (
        client.post(url, params=merged, json={"b": 2}, headers=json_type).status_code
        == 204
    )
    assert client.get(url, params=merged, headers=reader(cfg)).json() == {
        "a": 1,
        "b": 2,
    }
    not_json = client.post(
        url, params={**base, "stateId": "bookmark"}, json={"c": 3}, headers=json_type
    )
    assert not_json.status_code == 400
    assert client.get(url, params=base, headers=reader(cfg)).json() == [
        "bookmark",
        "progress",
    ]
    assert client.get(
        url, params={**base, "since": later.isoformat()}, headers=reader(cfg)
    ).json() == ["progress"]
    assert (
        client.get(url, params={"activityId": COURSE}, headers=reader(cfg)).status_code
        == 400
    )
    deleted = client.delete(
        url, params={**base, "stateId": "bookmark"}, headers=writer(cfg)
    )
    assert deleted.status_code == 204
    missing = client.get(
        url, params={**base, "stateId": "bookmark"}, headers=reader(cfg)
    )
    assert missing.status_code == 404
    assert client.delete(url, params=base, headers=writer(cfg)).status_code == 204
    assert client.get(url, params=base, headers=reader(cfg)).json() == []
    assert (
        client.put(url, params=merged, content=b"x", headers=reader(cfg)).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("url", "scope"),
    [
        ("/xAPI/activities/profile", {"activityId": COURSE}),
        ("/xAPI/agents/profile", {"agent": AGENT}),
    ],
)
def test_profile_documents_need_a_precondition_to_overwrite(
    client: TestClient, cfg: Settings, url: str, scope: dict[str, str]
) -> None:
    """Profiles: a PUT over an existing document without If-Match or
    If-None-Match is 409; with the right If-Match it replaces it."""
    params = {**scope, "profileId": "prefs"}
    first = client.put(url, params=params, json={"speed": 1}, headers=writer(cfg))
    assert first.status_code == 204
    blind = client.put(url, params=params, json={"speed": 2}, headers=writer(cfg))
    assert blind.status_code == 409
    etag = client.get(url, params=params, headers=reader(cfg)).headers["ETag"]
    replaced = client.put(
        url, params=params, json={"speed": 3}, headers={**writer(cfg), "If-Match": etag}
    )
    assert replaced.status_code == 204
    assert client.get(url, params=params, headers=reader(cfg)).json() == {"speed": 3}
    assert client.get(url, params=scope, headers=reader(cfg)).json() == ["prefs"]
    stale = client.delete(url, params=params, headers={**writer(cfg), "If-Match": etag})
    assert stale.status_code == 412
    assert client.delete(url, params=params, headers=writer(cfg)).status_code == 204
    assert client.get(url, params=params, headers=reader(cfg)).status_code == 404
