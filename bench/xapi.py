"""Bench section ``xapi``: statements per second accepted by the LRS.

Runs in the ``learntrack bench`` process against the bench stack: one
``learntrack api`` subprocess (as users run it) over its own MongoDB database and
activity topic, and one HTTP client posting to ``POST /xAPI/statements`` the way
a course platform does: 100 statements per request, and one per request. A
statement is accepted once it is validated, stored in MongoDB and acknowledged by
Kafka (``acks=all``), so each figure includes all three. Beside them, the SDK's
rate (validation + publish, no HTTP, no MongoDB) on the same stack.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from bench.core import BenchContext, Figure, Section, percentile
from learntrack.config import Settings

TOPIC = "learntrack.bench.xapi"
DB_SUFFIX = "_xapi"
ADL = "http://adlnet.gov/expapi/verbs/"
VERBS = ("experienced", "attempted", "completed", "commented", "launched")


def statements(n: int, students: int = 1000) -> list[dict[str, Any]]:
    """``n`` valid statements with their own ids (deterministic but for the ids)."""
    out = []
    for i in range(n):
        out.append(
            {
                "id": str(uuid.uuid4()),
                "actor": {
                    "objectType": "Agent",
                    "account": {
                        "homePage": "https://lms.example.edu",
                        "name": f"S{i % students}",
                    },
                },
                "verb": {"id": ADL + VERBS[i % len(VERBS)]},
                "object": {"id": f"https://lms.example.edu/courses/C{i % 20}/u{i % 7}"},
                "context": {
                    "contextActivities": {
                        "parent": [{"id": f"https://lms.example.edu/courses/C{i % 20}"}]
                    }
                },
                "timestamp": "2026-11-20T10:15:00Z",
                "result": {"score": {"scaled": (i % 10) / 10}},
            }
        )
    return out


def _headers(settings: Settings) -> dict[str, str]:
    from bench.queries import _key

    token = base64.b64encode(f"bench:{_key(settings, 'write')}".encode()).decode()
    return {
        "Authorization": f"Basic {token}",
        "X-Experience-API-Version": "1.0.3",
        "Content-Type": "application/json",
    }


def post_all(
    base: str, headers: dict[str, str], body: list[dict[str, Any]], per_request: int
) -> tuple[float, list[float]]:
    """Post ``body`` ``per_request`` at a time; (statements/s, latencies in ms)."""
    import httpx
    import orjson

    latencies = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        for lo in range(0, len(body), per_request):
            chunk = body[lo : lo + per_request]
            payload = orjson.dumps(chunk if per_request > 1 else chunk[0])
            sent = time.perf_counter()
            answer = client.post("/xAPI/statements", content=payload)
            latencies.append((time.perf_counter() - sent) * 1000)
            answer.raise_for_status()
        elapsed = time.perf_counter() - started
    return len(body) / elapsed, latencies


def measure(
    ctx: BenchContext, base: str, settings: Settings, count: int, per_request: int
) -> tuple[list[float], list[float]]:
    """``ctx.runs`` runs of ``count`` statements: rates and all latencies."""
    headers = _headers(settings)
    post_all(base, headers, statements(min(count, 200)), per_request)  # warm up
    rates: list[float] = []
    latencies: list[float] = []
    for _ in range(ctx.runs):
        rate, lat = post_all(base, headers, statements(count), per_request)
        rates.append(rate)
        latencies += lat
    return rates, latencies


def run(ctx: BenchContext) -> Section:
    """Batches of 100 and single statements through the LRS; the SDK beside."""
    from bench.core import settings_with
    from bench.producers import bench_sdk_send
    from bench.queries import api_server
    from learntrack.clients import mongo_client
    from learntrack.topics import create_topic, delete_topics

    env = {
        "LEARNTRACK_MONGO__DATABASE": f"{ctx.settings.mongo.database}{DB_SUFFIX}",
        "LEARNTRACK_TOPICS__ACTIVITY": TOPIC,
    }
    settings = settings_with(**env)
    batched = 3_000 if ctx.quick else 30_000
    single = 300 if ctx.quick else 3_000
    section = Section("xapi", "xAPI: statements accepted by the LRS")
    delete_topics(settings, [TOPIC])
    create_topic(settings, TOPIC, settings.kafka.partitions, retention_ms=600_000)
    try:
        with api_server(env) as base:
            rates, lat = measure(ctx, base, settings, batched, 100)
            section.figures += _figures(
                "100 per request",
                "a 100-statement POST",
                rates,
                lat,
                "validated, stored in MongoDB, acknowledged by Kafka; one client",
            )
            rates, lat = measure(ctx, base, settings, single, 1)
            section.figures += _figures(
                "one per request",
                "a single-statement POST",
                rates,
                lat,
                "one client, one request at a time",
            )
        section.figures.append(
            bench_sdk_send(ctx.settings, 5_000 if ctx.quick else 30_000, ctx.runs)
        )
    finally:
        delete_topics(settings, [TOPIC])
        with mongo_client(settings) as client:
            client.drop_database(settings.mongo.database)
    section.text = [
        "One HTTP client posting in sequence to one `learntrack api` process; a "
        "statement counts once the API answered 200 (validated, stored in MongoDB, "
        "acknowledged by Kafka with acks=all). The SDK figure publishes validated "
        "events straight to Kafka (no HTTP, no MongoDB) on the same stack.",
        "",
        "Reproduce: `learntrack bench --only xapi` (`--quick` for a short run).",
    ]
    return section


def _figures(
    per_request: str, request: str, rates: list[float], lat: list[float], note: str
) -> list[Figure]:
    """The rate of one way of posting, and its requests' p50 and p99 latency."""
    return [
        Figure.of(f"POST /xAPI/statements, {per_request}", "statements/s", rates, note),
        *(
            Figure.of(f"latency of {request}, {name}", "ms", [percentile(lat, q)])
            for name, q in (("p50", 0.5), ("p99", 0.99))
        ),
    ]
