"""Real xAPI clients against a real ``learntrack api``, then the stream to the stores.

ralph's LRS data backend (``ralph-malph``) and TinCanPython's ``RemoteLRS``
(``tincan``) write statements over HTTP to ``learntrack api`` (uvicorn, a
subprocess on a free port, over the test stack) and read them back through the
API. The stream job then carries the published events into MongoDB's activity
log, Redis and the lake. The clients run as subprocesses (tests/xapi_clients/)
under a Python that has them: this venv if it does, else a venv of their own
under the test data directory, built once from :data:`CLIENTS`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from learntrack.clients import mongo_client, redis_client
from learntrack.config import Settings
from learntrack.producers.xapi import XAPI_NAMESPACE
from learntrack.sinks import lrs
from learntrack.sinks.lake import lake_path
from learntrack.sinks.mongo import ACTIVITIES
from learntrack.sinks.redis import student_key
from learntrack.stack.manager import Stack
from learntrack.streaming.job import StreamJob
from learntrack.topics import ensure_topics, read_topic
from tests.helpers import ROOT, isolated, wait_until_answers

pytestmark = [pytest.mark.stack, pytest.mark.spark, pytest.mark.slow]

#: The clients, as the ``xapi-clients`` extra of pyproject.toml pins them.
CLIENTS = tuple(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["xapi-clients"]
)
SCRIPTS = ROOT / "tests" / "xapi_clients"
ADL = "http://adlnet.gov/expapi/verbs/"
COURSE = "https://lms.example.edu/courses/ML201"
VIDEO = "https://w3id.org/xapi/video/verbs/"


@pytest.fixture(scope="module")
def client_python(stack: Stack) -> str:
    """A Python that can import ralph and tincan (installed once if needed)."""
    if all(importlib.util.find_spec(m) for m in ("ralph", "tincan")):
        return sys.executable
    venv = stack.settings.data_dir / "xapi-clients-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join(CLIENTS)
    if not marker.is_file() or marker.read_text() != wanted:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            check=True,
            timeout=300,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *CLIENTS],
            check=True,
            timeout=900,
        )
        marker.write_text(wanted)
    return str(python)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(
    stack: Stack, prefix: str, tmp_path: Path, restore_stack: None
) -> Iterator[tuple[str, Settings]]:
    """``learntrack api`` over this test's own topics and database: (URL, settings)."""
    settings, env = isolated(prefix, tmp_path)
    ensure_topics(settings)
    StreamJob(settings, available_now=True, report=lambda _l: None).reset()
    port = _free_port()
    log = (tmp_path / "api.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "learntrack.cli", "api", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(
            f"{base}/xAPI/about", server, (tmp_path / "api.log").read_text
        )
        yield base, settings
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        log.close()


def run_client(
    python: str, script: str, base: str, key: str, statements: list[dict[str, Any]]
) -> dict[str, Any]:
    done = subprocess.run(
        [python, str(SCRIPTS / script), base, "client", key],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("LEARNTRACK_")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def statement(student: str, verb: str, unit: str, **extra: Any) -> dict[str, Any]:
    return {
        "actor": {
            "objectType": "Agent",
            "account": {"homePage": "https://lms.example.edu", "name": student},
        },
        "verb": {"id": verb, "display": {"en-US": verb.rsplit("/", 1)[-1]}},
        "object": {"id": f"{COURSE}/{unit}", "objectType": "Activity"},
        "context": {"contextActivities": {"parent": [{"id": COURSE}]}},
        "timestamp": "2026-11-20T10:15:00+00:00",
        **extra,
    }


def test_ralph_and_tincan_write_and_read_and_the_stream_fills_the_stores(
    served: tuple[str, Settings], client_python: str, spark: Any
) -> None:
    base, settings = served
    assert settings.api.write_key is not None
    key = settings.api.write_key.get_secret_value()

    # ralph: five statements in chunks of three, read back two per page.
    from_ralph = [
        statement(f"R{i % 3}", ADL + "experienced", f"unit-{i}", id=str(uuid.uuid4()))
        for i in range(5)
    ]
    ralph = run_client(client_python, "ralph_client.py", base, key, from_ralph)
    assert ralph["written"] == 5
    assert sorted(s["id"] for s in ralph["read"]) == sorted(s["id"] for s in from_ralph)
    for sent in from_ralph:
        back = next(s for s in ralph["read"] if s["id"] == sent["id"])
        assert {k: back[k] for k in sent} == sent
        assert {"stored", "authority", "version"} <= set(back)

    # tincan: two PUT (with ids) and two POST, a paged query, a state document.
    from_tincan = [
        statement("T1", VIDEO + "played", "video-1", id=str(uuid.uuid4())),
        statement("T2", VIDEO + "played", "video-1"),
        statement("T1", VIDEO + "played", "video-2", id=str(uuid.uuid4())),
        statement("T2", VIDEO + "played", "video-2"),
    ]
    tincan = run_client(client_python, "tincan_client.py", base, key, from_tincan)
    assert len(tincan["saved"]) == 4
    assert tincan["saved"][0] == from_tincan[0]["id"]
    assert sorted(tincan["queried"]) == sorted(tincan["saved"])
    assert tincan["pages"] == 2
    assert tincan["retrieved"]["actor"]["account"]["name"] == "T1"
    assert json.loads(tincan["state"]) == {"page": 7}

    # An invalid statement is refused with 400 and reaches no store.
    auth = "Basic " + base64.b64encode(f"lms:{key}".encode()).decode()
    headers = {"Authorization": auth, "X-Experience-API-Version": "1.0.3"}
    bad = statement("R9", "not an iri", "unit-9")
    refused = httpx.post(f"{base}/xAPI/statements", json=bad, headers=headers)
    assert refused.status_code == 400
    unversioned = httpx.post(
        f"{base}/xAPI/statements",
        json=statement("R9", ADL + "experienced", "unit-9"),
        headers={"Authorization": auth},
    )
    assert unversioned.status_code == 400

    ids = [s["id"] for s in ralph["read"]] + tincan["saved"]
    events = {str(uuid.uuid5(XAPI_NAMESPACE, i)) for i in ids}
    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        assert db[lrs.STATEMENTS].count_documents({}) == 9
        assert lrs.read_counts(db)["rejected:400"] == 2  # bad IRI, no version
    published = read_topic(settings, settings.topics.activity)
    assert {orjson.loads(r.value())["eventId"] for r in published} == events

    # The stream carries them into the activity log, Redis and the lake.
    StreamJob(settings, available_now=True, report=lambda _l: None).run(spark)
    with mongo_client(settings) as client:
        stored = client[settings.mongo.database][ACTIVITIES]
        found = {d["_id"]: d for d in stored.find({"_id": {"$in": list(events)}})}
    assert set(found) == events
    assert {d["studentId"] for d in found.values()} == {"R0", "R1", "R2", "T1", "T2"}
    assert {d["courseId"] for d in found.values()} == {"ML201"}
    r = redis_client(settings)
    try:
        totals = {
            s: int(r.hget(student_key(s), "total") or 0)
            for s in ("R0", "R1", "R2", "T1", "T2", "R9")
        }
    finally:
        r.close()
    assert totals == {"R0": 2, "R1": 2, "R2": 1, "T1": 2, "T2": 2, "R9": 0}
    lake = spark.read.parquet(str(lake_path(settings)))
    in_lake = {row.eventId for row in lake.select("eventId").collect()}
    assert in_lake == events
