"""Dashboards: the generated Grafana JSON, the pipeline metrics, the dashboard
endpoints and the /dashboard page in headless Chromium.

The Grafana checks are pure logic (the committed JSON is regenerated and compared;
every panel's data source and query are checked against the provisioned data
sources, the API's routes, the pushed Grafana Live fields and the Prometheus
metrics the API exposes). Everything else runs on the real local stack: metrics
are written to Redis and pushed over HTTP to a local receiver standing in for
Grafana (no registry ships a Grafana server); the endpoints answer from data
written by the real sinks; the page test streams a generated data set through
``StreamJob`` and the nightly batch, serves the API with uvicorn and loads
``/dashboard`` in Debian's chromium driven by Playwright (never a downloaded
browser), keeping a screenshot in ``tests/artifacts/``. Each test has its own
MongoDB database, Redis database (flushed), topics and Cassandra keyspace.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Match

from learntrack.api.app import create_app
from learntrack.api.service import PROMETHEUS_METRICS
from learntrack.clients import cassandra_session, mongo_client, redis_client
from learntrack.config import Settings, get_settings
from learntrack.dashboards import (
    GRAFANA_PLACEHOLDERS,
    OUTPUT,
    PANELS,
    VARIABLES,
    grafana_title,
    page_spec,
    render,
)
from learntrack.scoring import anchored
from learntrack.sinks.alerts import MongoAlertSink, RedisAlertSink
from learntrack.sinks.cassandra import CassandraEngagementSink, CourseDayRow
from learntrack.sinks.mongo import MongoActivitySink
from learntrack.sinks.pipeline import (
    LIVE_CHANNEL,
    LIVE_FIELDS,
    LIVE_STREAM,
    RETRY_AFTER_S,
    PipelineRecorder,
    batch_point,
    influx_line,
    parse_influx_line,
)
from learntrack.sinks.redis import PIPELINE, RedisScoreSink

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests/artifacts"
DATASOURCES = ROOT / "grafana/provisioning/datasources/learntrack.yaml"
REDIS_DB = 12  # this file's own Redis database on the test stack
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
KEYS = {"read_key": "r" * 24, "write_key": "w" * 24}


# -- helpers ------------------------------------------------------------------------
@dataclass
class Report:
    """The figures of a micro-batch, as StreamJob's BatchReport carries them."""

    batch_id: int
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    seconds: float = 0.5
    sinks: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    freshness: dict[str, float] = field(default_factory=dict)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str


class Receiver:
    """A local HTTP server recording POSTs: stands in for Grafana's push endpoint."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                outer.requests.append(
                    Received(self.path, {k: v for k, v in self.headers.items()}, body)
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(condition: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def app_routes() -> list[Any]:
    # Flattened: since FastAPI 0.137, app.routes holds each included router as one
    # node (no .path); FastAPI's own OpenAPI generator walks it the same way.
    return list(iter_route_contexts(create_app(get_settings(api=KEYS)).routes))


def route_of(path: str, routes: list[Any]) -> str | None:
    """The path template of the GET route serving ``path``, if any."""
    scope = {"type": "http", "path": path, "method": "GET"}
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(route.path)
    return None


def sample_url(url: str) -> str:
    """A panel URL with example values in place of its placeholders."""
    examples = {
        "{course}": "BD101",
        "{student}": "S42",
        "{from}": "2026-11-20T00:00:00Z",
        "{to}": "2026-11-21T00:00:00Z",
        "{from_date}": "2026-11-20",
        "{to_date}": "2026-11-21",
    }
    for placeholder, value in examples.items():
        url = url.replace(placeholder, value)
    assert "{" not in url, f"unknown placeholder in {url}"
    return url


def prometheus_names() -> set[str]:
    return {
        f"{name}_total" if kind == "counter" else name
        for name, kind, _field, _help in PROMETHEUS_METRICS
    } | {"learntrack_stream_last_batch_timestamp_seconds"}


def read_headers(cfg: Settings) -> dict[str, str]:
    assert cfg.api.read_key is not None
    return {"X-API-Key": cfg.api.read_key.get_secret_value()}


# -- the generated Grafana dashboard (pure) ------------------------------------------
def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == render(), (
        "grafana/dashboards/learntrack.json is stale: python -m learntrack.dashboards"
    )


def test_every_grafana_panel_has_a_provisioned_source_and_a_valid_query() -> None:
    board = json.loads(OUTPUT.read_text(encoding="utf-8"))
    provisioned = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    sources = {(d["type"], d["uid"]) for d in provisioned["datasources"]}
    sources.add(("datasource", "grafana"))  # built in: Grafana Live
    routes = app_routes()
    grafana_vars = set(GRAFANA_PLACEHOLDERS.values())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert [p["title"] for p in panels] == [grafana_title(p.title) for p in PANELS]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for grafana, spec in zip(panels, PANELS, strict=True):
        source = (grafana["datasource"]["type"], grafana["datasource"]["uid"])
        assert source in sources, f"{spec.key}: unknown data source {source}"
        assert grafana["targets"], f"{spec.key} has no query"
        for target in grafana["targets"]:
            assert target["datasource"] == grafana["datasource"], spec.key
            if source[1] == "learntrack-api":
                url = target["url"]
                for variable in grafana_vars:
                    url = url.replace(variable, "X")
                assert "$" not in url, f"{spec.key}: unknown variable in {url}"
                assert route_of(urlsplit(sample_url(spec.url)).path, routes), (
                    f"{spec.key}: no API route for {spec.url}"
                )
                assert target["url"].split("?")[0].startswith("/")
                assert target["root_selector"] == spec.rows
                assert [c["selector"] for c in target["columns"]] == [
                    f.path for f in spec.fields
                ]
            elif source[0] == "prometheus":
                metric = re.match(r"[a-z_]+", target["expr"])
                assert metric and metric.group(0) in prometheus_names(), target
            else:
                assert target["queryType"] == "measurements"
                assert target["channel"] == LIVE_CHANNEL
                assert set(target["filter"]["fields"]) - {"time"} <= set(LIVE_FIELDS)
        for axis in (spec.x, spec.y, spec.series):
            assert axis is None or axis in {f.path for f in spec.fields}, spec.key
        if spec.kind in ("timeseries", "bars"):
            assert spec.x and spec.y, f"{spec.key}: a chart needs x and y"


def test_grafana_variables_and_layout() -> None:
    board = json.loads(OUTPUT.read_text(encoding="utf-8"))
    routes = app_routes()
    variables = board["templating"]["list"]
    assert [v["name"] for v in variables] == [v.name for v in VARIABLES]
    for grafana, spec in zip(variables, VARIABLES, strict=True):
        assert grafana["datasource"]["uid"] == "learntrack-api"
        query = grafana["query"]["infinityQuery"]
        assert query["url"] == spec.url
        assert route_of(urlsplit(spec.url).path, routes)
        assert [c["selector"] for c in query["columns"]] == [spec.field]
    # No two panels overlap on Grafana's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24  # noqa: SIM300
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"panel {panel['title']} overlaps another"
        cells |= mine


def test_the_page_and_grafana_show_the_same_panels() -> None:
    with TestClient(create_app(get_settings(api=KEYS))) as client:
        spec = client.get("/dashboard/panels.json").json()
        page = client.get("/dashboard")
        script = client.get("/dashboard/static/dashboard.js")
        plotly = client.get("/dashboard/static/plotly.min.js")
        missing = client.get("/dashboard/static/..%2Fapp.py")
    assert spec == json.loads(json.dumps(page_spec()))
    assert [p["key"] for p in spec["panels"]] == [p.key for p in PANELS]
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Every script and style of the page comes from this server.
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert ref.startswith("/dashboard/") or ref == "data:,", ref
    assert script.status_code == 200
    assert plotly.status_code == 200
    assert plotly.content.startswith(b"/**") and b"plotly.js" in plotly.content[:300]
    assert missing.status_code == 404


def test_influx_line_round_trips_every_live_field() -> None:
    at = dt.datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=dt.UTC)
    point = batch_point(
        Report(
            7,
            valid=900,
            invalid=100,
            duplicates=3,
            seconds=2.0,
            lag={"0": 5},
            freshness={"p50": 0.4, "p99": 1.25, "max": 1.5},
        ),
        at,
        since_previous_s=4.0,
    )
    measurement, values, ns = parse_influx_line(influx_line(point))
    assert measurement == "pipeline"
    assert LIVE_CHANNEL == f"stream/{LIVE_STREAM}/{measurement}"
    assert set(values) == set(LIVE_FIELDS)
    assert values["rows"] == 1000.0
    assert values["events_per_s"] == 250.0  # 1,000 records over 4 s since the last
    assert values["dead_letters"] == 100.0
    assert values["lag"] == 5.0
    assert values["freshness_p99_s"] == 1.25
    assert ns == 1_795_255_200_123_000_000


def test_events_per_second_of_a_first_batch_uses_its_own_duration() -> None:
    first = batch_point(Report(0, valid=500, seconds=2.5), NOW, None)
    assert first.events_per_s == 200.0
    # A batch slower than the gap since the previous one: its own duration counts.
    slow = batch_point(Report(1, valid=500, seconds=5.0), NOW, 1.0)
    assert slow.events_per_s == 100.0


# -- on the stack: metrics, pushes, endpoints ---------------------------------------
@pytest.fixture
def cfg(settings: Settings, prefix: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings with this test's own database, Redis db, keyspace, topics, lake."""
    test_settings = get_settings(
        data_dir=tmp_path,
        mongo={"database": prefix},
        redis={"db": REDIS_DB},
        cassandra={"keyspace": prefix},
        topics={
            "activity": f"{prefix}.activity",
            "dlq": f"{prefix}.dlq",
            "alerts": f"{prefix}.alerts",
        },
        spark={"checkpoint_dir": str(tmp_path / "checkpoints")},
    )
    r = redis_client(test_settings)
    r.flushdb()
    yield test_settings
    r.flushdb()
    r.close()
    with mongo_client(test_settings) as client:
        client.drop_database(prefix)
    cluster, session = cassandra_session(test_settings)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {prefix}")
    finally:
        cluster.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def with_grafana(cfg: Settings, url: str, **auth: Any) -> Settings:
    return cfg.model_copy(
        update={"metrics": cfg.metrics.model_copy(update={"grafana_url": url, **auth})}
    )


@pytest.mark.stack
def test_batches_are_counted_once_and_pushed_to_grafana_live(
    cfg: Settings, receiver: Receiver
) -> None:
    from pydantic import SecretStr

    pushed = with_grafana(cfg, receiver.url, grafana_token=SecretStr("tok-123"))
    clock = Clock()
    messages: list[str] = []
    metrics = PipelineRecorder(pushed, report=messages.append, clock=clock)
    try:
        metrics.record(Report(0, valid=1000, invalid=10, seconds=4.0, lag={"0": 7}))
        clock.now += 5.0
        fresh = {"p50": 0.3, "p99": 0.9, "max": 1.1}
        metrics.record(
            Report(1, valid=490, invalid=10, seconds=1.0, lag={"1": 3}, freshness=fresh)
        )
        # Spark re-runs batch 1 after a crash: counted once.
        metrics.record(Report(1, valid=490, invalid=10, seconds=1.0, lag={"1": 3}))
    finally:
        metrics.close()
    assert messages == []
    with TestClient(create_app(cfg)) as client:
        answer = client.get("/pipeline/metrics", headers=read_headers(cfg)).json()
    totals = answer["totals"]
    assert totals["batches"] == 2
    assert totals["events"] == 1510
    assert totals["deadLetters"] == 20
    assert totals["lastBatch"] == 1
    assert totals["lag"] == 3
    assert totals["eventsPerSecond"] == pytest.approx(100.0)  # 500 in 5 s
    assert totals["freshnessP99"] == pytest.approx(0.9)
    assert [p["batch"] for p in answer["points"]] == [0, 1]
    # Freshness per batch: none for a batch without it, the task quantiles' merge.
    assert answer["points"][0]["freshnessP99"] is None
    assert answer["points"][1]["freshnessP50"] == pytest.approx(0.3)
    assert answer["points"][1]["freshnessMax"] == pytest.approx(1.1)
    assert answer["points"][0]["eventsPerSecond"] == pytest.approx(252.5)
    # Every record() pushed one line to /api/live/push/learntrack with the token.
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        assert request.path == f"/api/live/push/{LIVE_STREAM}"
        assert request.headers["Authorization"] == "Bearer tok-123"
        measurement, values, _ns = parse_influx_line(request.body)
        assert measurement == "pipeline"
        assert set(values) == set(LIVE_FIELDS)
    assert [parse_influx_line(r.body)[1]["rows"] for r in receiver.requests] == [
        1010.0,
        500.0,
        500.0,
    ]


@pytest.mark.stack
def test_basic_auth_and_a_grafana_that_fails_never_fail_a_batch(
    cfg: Settings,
) -> None:
    from pydantic import SecretStr

    refusing = Receiver(status=401)
    try:
        settings = with_grafana(
            cfg, refusing.url, grafana_user="admin", grafana_password=SecretStr("pw")
        )
        clock = Clock()
        messages: list[str] = []
        metrics = PipelineRecorder(settings, report=messages.append, clock=clock)
        metrics.record(Report(0, valid=10))
        metrics.record(Report(1, valid=10))  # paused: not even tried
        assert len(refusing.requests) == 1
        assert refusing.requests[0].headers["Authorization"] == "Basic YWRtaW46cHc="
        assert len(messages) == 1
        assert "401" in messages[0]
        assert f"{RETRY_AFTER_S:.0f} s" in messages[0]
        clock.now += RETRY_AFTER_S + 1
        metrics.record(Report(2, valid=10))
        assert len(refusing.requests) == 2
        metrics.close()
    finally:
        refusing.close()
    # Nobody listening at all: the batch goes on, and Redis still has it.
    closed = f"http://127.0.0.1:{free_port()}"
    messages = []
    metrics = PipelineRecorder(with_grafana(cfg, closed), report=messages.append)
    metrics.record(Report(3, valid=10))
    metrics.close()
    assert len(messages) == 1
    assert "ConnectError" in messages[0]
    r = redis_client(cfg)
    try:
        assert r.hget(PIPELINE, "lastBatch") == b"3"
        assert r.hget(PIPELINE, "batches") == b"4"
    finally:
        r.close()


def seed_stores(cfg: Settings) -> dict[str, Any]:
    """Activities, scores, alerts, course days and two batches, via the sinks."""
    half_life = cfg.scoring.half_life_s
    events = []
    students = {"S1": 10, "S2": 4, "S3": 1}  # quiz attempts (5 points each) an hour ago
    for sid, n in students.items():
        for i in range(n):
            events.append(
                {
                    "eventId": str(uuid.uuid4()),
                    "studentId": sid,
                    "courseId": "C2" if sid == "S3" else "C1",
                    "action": "quiz_attempt",
                    "timestamp": NOW - dt.timedelta(hours=1, seconds=i),
                    "region": "EU",
                }
            )
    with MongoActivitySink(cfg) as sink:
        sink.write_batch(1, events)
    rows = []
    for sid, n in students.items():
        course = "C2" if sid == "S3" else "C1"
        anchor = sum(
            anchored(5.0, NOW - dt.timedelta(hours=1, seconds=i), half_life)
            for i in range(n)
        )
        rows.append(
            {
                "studentId": sid,
                "total": n,
                "actions": {"quiz_attempt": n},
                "anchor": anchor,
                "courseAnchors": {course: anchor},
                "minutes": {},
                "lastAt": (NOW - dt.timedelta(hours=1)).isoformat(),
            }
        )
    with RedisScoreSink(cfg) as sink:
        sink.write_batch(1, rows)
    hour = NOW.replace(minute=0, second=0) - dt.timedelta(hours=2)
    alerts = [
        alert_doc("S1", hour + dt.timedelta(minutes=5)),
        alert_doc("S2", hour + dt.timedelta(minutes=50)),
        alert_doc("S3", hour + dt.timedelta(hours=1, minutes=1)),
    ]
    for sink_class in (MongoAlertSink, RedisAlertSink):
        with sink_class(cfg) as alert_sink:
            alert_sink.write_batch(1, alerts)
    yesterday = NOW.date() - dt.timedelta(days=1)
    with CassandraEngagementSink(cfg) as cassandra:
        for day, counts in (
            (yesterday - dt.timedelta(days=1), (3, 1)),
            (yesterday, (11, 2)),
        ):
            cassandra.replace_day(
                day,
                [
                    CourseDayRow("C1", day, counts[0], 2, counts[0], counts[0] / 2, {}),
                    CourseDayRow(
                        "C2", day, counts[1], 1, counts[1], float(counts[1]), {}
                    ),
                ],
            )
    metrics = PipelineRecorder(cfg, report=lambda _m: None)
    metrics.record(Report(0, valid=15, invalid=2, seconds=1.0, lag={"0": 4}))
    metrics.close()
    return {"hour": hour, "yesterday": yesterday}


def alert_doc(student: str, at: dt.datetime) -> dict[str, Any]:
    alert_id = f"{student}-{int(at.timestamp())}"
    return {
        "alertId": alert_id,
        "studentId": student,
        "kind": "impossible_travel",
        "regions": ["EU", "US"],
        "first": {"eventId": str(uuid.uuid4()), "timestamp": at, "region": "EU"},
        "second": {"eventId": str(uuid.uuid4()), "timestamp": at, "region": "US"},
        "gapSeconds": 600.0,
        "timestamp": at,
        "ingestedAt": at,
        "detectedAt": at,
    }


@pytest.mark.stack
def test_dashboard_endpoints_answer_from_the_stores(cfg: Settings) -> None:
    seeded = seed_stores(cfg)
    yesterday: dt.date = seeded["yesterday"]
    hour: dt.datetime = seeded["hour"]
    headers = read_headers(cfg)
    with TestClient(create_app(cfg)) as client:

        def get(path: str, **params: Any) -> Any:
            answer = client.get(path, params=params, headers=headers)
            assert answer.status_code == 200, answer.text
            return answer.json()

        assert get("/courses") == {"courses": [{"courseId": "C1"}, {"courseId": "C2"}]}

        days = get(
            "/courses/engagement",
            **{"from": str(yesterday - dt.timedelta(days=1)), "to": str(yesterday)},
        )
        assert [(d["date"], d["courseId"], d["count"]) for d in days["days"]] == [
            (str(yesterday - dt.timedelta(days=1)), "C1", 3),
            (str(yesterday - dt.timedelta(days=1)), "C2", 1),
            (str(yesterday), "C1", 11),
            (str(yesterday), "C2", 2),
        ]

        # Scores now ~50, ~20 and ~5: bins of 12.5 up to the top score.
        spread = get("/engagement/distribution", bins=4)
        assert spread["students"] == 3
        assert [b["students"] for b in spread["bins"]] == [1, 1, 0, 1]
        assert spread["maxScore"] == pytest.approx(spread["bins"][-1]["high"])
        assert get("/engagement/distribution", course="C2", bins=2)["students"] == 1

        hourly = get(
            "/alerts/hourly",
            **{
                "from": hour.isoformat(),
                "to": (hour + dt.timedelta(hours=2)).isoformat(),
            },
        )
        assert [h["alerts"] for h in hourly["hours"]] == [2, 1, 0]
        assert hourly["total"] == 3
        assert hourly["hours"][0]["hour"].startswith(hour.strftime("%Y-%m-%dT%H:00"))

        pipeline = get("/pipeline/metrics", points=5)
        assert pipeline["totals"]["events"] == 17
        assert pipeline["totals"]["alerts"] == 3
        assert pipeline["totals"]["studentsScored"] == 3

        # Prometheus: no key, the same numbers.
        text = client.get("/metrics").text
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples["learntrack_stream_events_total"] == 17
        assert samples["learntrack_stream_dead_letters_total"] == 2
        assert samples["learntrack_stream_consumer_lag"] == 4
        assert samples["learntrack_alerts"] == 3
        assert samples["learntrack_students_scored"] == 3
        assert set(samples) <= prometheus_names()

        # Keys and invalid input.
        assert client.get("/pipeline/metrics").status_code == 401
        assert client.get("/courses", headers={"X-API-Key": "nope"}).status_code == 401
        bad = [
            ("/engagement/distribution", {"bins": 0}),
            ("/courses/engagement", {"from": "2026-11-02", "to": "2026-11-01"}),
            (
                "/alerts/hourly",
                {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
            ),
            (
                "/alerts/hourly",
                {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            ),
            ("/pipeline/metrics", {"points": 0}),
        ]
        for path, params in bad:
            answer = client.get(path, params=params, headers=headers)
            assert answer.status_code == 422, (path, params, answer.text)


@pytest.mark.stack
def test_endpoints_before_any_data(cfg: Settings) -> None:
    with TestClient(create_app(cfg)) as client:
        headers = read_headers(cfg)
        assert client.get("/courses", headers=headers).json() == {"courses": []}
        spread = client.get("/engagement/distribution", headers=headers).json()
        assert spread["students"] == 0
        assert spread["bins"] == []
        pipeline = client.get("/pipeline/metrics", headers=headers).json()
        assert pipeline["points"] == []
        assert pipeline["totals"]["batches"] == 0
        assert client.get("/courses/engagement", headers=headers).json()["days"] == []
        assert client.get("/metrics").status_code == 200


# -- the page, in headless Chromium, on data streamed through the pipeline ------------
class ApiServer:
    """``create_app(settings)`` under uvicorn on a free port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        poll(lambda: self.server.started, 30, "the API to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def stream_generated_data(settings: Settings, spark: Any) -> tuple[int, int]:
    """Publish a generated day, stream it (available-now), run the nightly batch.

    Returns (records published, micro-batches of the fan-out query).
    """
    from learntrack.batch.daily import run_batch
    from learntrack.producers import ActivityProducer
    from learntrack.producers.generator import (
        Generator,
        GeneratorConfig,
        publish,
        upsert_profiles,
    )
    from learntrack.streaming.job import StreamJob
    from learntrack.topics import delete_topics, ensure_topics

    start = NOW.replace(hour=0, minute=0, second=0) - dt.timedelta(days=1)
    data = Generator(
        GeneratorConfig(
            students=60,
            courses=4,
            events=2500,
            start=start,
            seed=7,
            bad_ratio=0.01,
            anomaly_ratio=0.05,
            weights=dict(settings.scoring.weights),
            half_life_s=settings.scoring.half_life_s,
        )
    ).build()
    ensure_topics(settings)
    try:
        with ActivityProducer(settings) as producer:
            publish(data, producer.send_serialized)
        upsert_profiles(settings, data.profiles)
        job = StreamJob(settings, available_now=True, report=lambda _m: None)
        batches = job.run(spark)
        assert len(batches) >= 2, "the live charts need at least two batches"
        assert job.alerts_written > 0, "the alert panels need alerts"
        run_batch(settings, spark, [start.date()])
    finally:
        delete_topics(
            settings,
            [settings.topics.activity, settings.topics.dlq, settings.topics.alerts],
        )
    return len(data.events) + len(data.malformed), len(batches)


@pytest.mark.stack
@pytest.mark.spark
@pytest.mark.slow
def test_dashboard_page_shows_every_panel_with_live_data(
    cfg: Settings, spark: Any, receiver: Receiver
) -> None:
    from pydantic import SecretStr

    settings = with_grafana(
        cfg.model_copy(
            update={
                "stream": cfg.stream.model_copy(
                    update={"max_offsets_per_trigger": 1000}
                )
            }
        ),
        receiver.url,
        grafana_token=SecretStr("live-token"),
    )
    records, batches = stream_generated_data(settings, spark)
    # The stream pushed every batch to "Grafana Live": all records, with the token.
    assert len(receiver.requests) == batches
    assert {r.headers["Authorization"] for r in receiver.requests} == {
        "Bearer live-token"
    }
    pushed_rows = sum(parse_influx_line(r.body)[1]["rows"] for r in receiver.requests)
    assert pushed_rows == records

    api = ApiServer(settings)
    console: list[str] = []
    requests: list[str] = []
    try:
        browse(
            api,
            settings,
            records=records,
            batches=batches,
            console=console,
            requests=requests,
        )
    finally:
        api.stop()
    assert console == [], f"errors in the page: {console}"
    hosts = {urlsplit(url).netloc for url in requests if not url.startswith("data:")}
    assert hosts == {f"127.0.0.1:{api.port}"}, f"requests left the machine: {hosts}"


def browse(
    api: ApiServer,
    settings: Settings,
    *,
    records: int,
    batches: int,
    console: list[str],
    requests: list[str],
) -> None:
    """Load /dashboard in headless Chromium; check it; keep a screenshot."""
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    assert settings.api.read_key is not None
    key = settings.api.read_key.get_secret_value()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.on(
            "console", lambda m: console.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda err: console.append(str(err)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{api.url}/dashboard?refresh=2#key={key}")
        wait_js(page, "() => document.body.dataset.state === 'ready'", what="ready")
        assert "key=" not in page.url, "the key must leave the address bar"
        check_every_panel(page, records)

        # Live: a new batch appears on the page without a reload.
        points = chart_points(page, "events-per-second")
        extra = PipelineRecorder(settings, report=lambda _m: None)
        extra.record(Report(batches + 10, valid=777, seconds=1.0))
        extra.close()
        wait_js(
            page,
            "n => document.querySelector('[data-key=events-per-second] "
            ".js-plotly-plot').data[0].x.length > n",
            points,
            what="the new batch on the events chart",
        )

        # The drill-down follows the student variable.
        second = page.evaluate(
            "() => [...document.querySelectorAll('#student-choices option')]"
            ".map(o => o.value)[1]"
        )
        page.fill("#var-student", second)
        page.dispatch_event("#var-student", "change")
        wait_js(
            page,
            "s => document.querySelector('[data-key=student-profile] h3')"
            ".textContent.endsWith(s)",
            second,
            what="the drill-down of the second student",
        )
        wait_js(
            page,
            "() => [...document.querySelectorAll('.panel')]"
            ".every(p => p.dataset.state === 'ok')",
            what="every panel drawn again",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()


def wait_js(
    page: Any, function: str, arg: Any = None, *, what: str, timeout_s: float = 60
) -> None:
    """Poll a JavaScript function in the page until it returns true.

    (Playwright's wait_for_function evaluates a string with eval, which the page's
    Content Security Policy refuses; evaluate() is not affected.)
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(function, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def chart_points(page: Any, key: str) -> int:
    count: int = page.evaluate(
        'k => document.querySelector(`[data-key="${k}"] .js-plotly-plot`)'
        ".data.reduce((n, t) => n + t.x.length, 0)",
        key,
    )
    return count


def check_every_panel(page: Any, records: int) -> None:
    """Each panel shows data: chart traces drawn, table rows, stat values."""
    assert page.locator(".no-data").count() == 0, "a panel shows no data"
    for panel in PANELS:
        node = page.locator(f'.panel[data-key="{panel.key}"]')
        assert node.get_attribute("data-state") == "ok", panel.key
        rows = int(node.get_attribute("data-rows") or 0)
        assert rows > 0, panel.key
        if panel.kind in ("timeseries", "bars"):
            assert chart_points(page, panel.key) > 0, panel.key
            assert node.locator(".main-svg g.trace").count() > 0, panel.key
        elif panel.kind == "table":
            shown = node.locator("tbody tr").count()
            assert shown == (rows if panel.rows else len(panel.fields)), panel.key
        else:
            values = node.locator(".stat .value").all_inner_texts()
            assert len(values) == sum(f.type == "number" for f in panel.fields)
    totals = page.locator('.panel[data-key="pipeline-totals"] .stat')
    events = totals.filter(has_text="Events").locator(".value").inner_text()
    assert events == f"{records:,}", "every record read is counted once"
