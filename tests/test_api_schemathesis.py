"""Schemathesis against the query service's own OpenAPI schema, on the real stack.

Every operation the schema declares is called with generated requests (valid and
invalid path, query and body values) through the ASGI app built by
:func:`learntrack.api.app.create_app` over the real test stores. Checks: no
response is a server error, every status code and body is the one the schema
declares. A second run sends valid requests without a key: every operation the
schema marks as secured answers 401, and only ``/health`` and ``/metrics`` are not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks
from schemathesis.pytest import from_fixture

from learntrack.api.app import API_KEY_HEADER, create_app
from learntrack.clients import mongo_client, redis_client
from learntrack.config import Settings, get_settings
from learntrack.topics import create_topic, delete_topics

pytestmark = pytest.mark.stack

REDIS_DB = 10  # this file's own Redis database on the test stack


@pytest.fixture
def cfg(settings: Settings, prefix: str) -> Iterator[Settings]:
    """The test stack, with this test's own database, Redis db, keyspace, topic."""
    test_settings = get_settings(
        mongo={"database": prefix},
        redis={"db": REDIS_DB},
        cassandra={"keyspace": prefix},
        topics={"activity": f"{prefix}.activity"},
    )
    create_topic(test_settings, test_settings.topics.activity, 1, retention_ms=600_000)
    yield test_settings
    delete_topics(test_settings, [test_settings.topics.activity])
    with redis_client(test_settings) as r:
        r.flushdb()
    with mongo_client(test_settings) as client:
        client.drop_database(prefix)


@pytest.fixture
def api_schema(cfg: Settings) -> Any:
    """The app's OpenAPI schema, loaded from the app itself (ASGI, in process)."""
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(cfg))


@pytest.fixture
def valid_requests(cfg: Settings) -> Any:
    """The same schema, generating only requests the schema accepts."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", create_app(cfg))
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE])
    return loaded


schema = from_fixture("api_schema")
positive = from_fixture("valid_requests")
#: Operations without a key, on purpose: liveness and Prometheus counters.
PUBLIC = {("GET", "/health"), ("GET", "/metrics")}
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _key(cfg: Settings) -> dict[str, str]:
    assert cfg.api.write_key is not None
    return {API_KEY_HEADER: cfg.api.write_key.get_secret_value()}


@schema.parametrize()
@FUZZ
def test_no_generated_request_gives_a_server_error(case: Any, cfg: Settings) -> None:
    case.call_and_validate(
        headers=_key(cfg),
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
    )


@positive.parametrize()
@settings(FUZZ, max_examples=15)
def test_every_operation_but_the_public_ones_needs_a_key(case: Any) -> None:
    response = case.call()  # valid requests, no key
    declared = "security" in case.operation.definition.raw
    assert declared == ((case.method, case.path) not in PUBLIC)
    if declared and response.status_code == 413:
        # The body limit is enforced before anything else, key or not.
        assert "larger than" in response.text
    elif declared:
        assert response.status_code == 401, (case.method, case.path, response.text)
        assert response.headers["www-authenticate"] == ["ApiKey"]
    else:
        assert response.status_code in (200, 503)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_an_undecodable_body_is_422_on_every_write(cfg: Settings, method: str) -> None:
    """Found by schemathesis: FastAPI answered PATCH with an undocumented 400."""
    from fastapi.testclient import TestClient

    path = "/activities" if method == "POST" else "/students/S1"
    with TestClient(create_app(cfg)) as api:
        response = api.request(
            method,
            path,
            content=b"\xff\xfe{",
            headers={**_key(cfg), "Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"
