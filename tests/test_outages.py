"""Store and broker outages under a running stream, on the real stack.

Each test stops a server of the test stack by its own PID, keeps it down, starts
it again, and checks that nothing was lost or counted twice:

- sink outages: MongoDB, Redis, then the graph server stopped while the stream
  works through a backlog, each for at least 20 s and until the stream met it;
  the waits double (retries with backoff), batch ids stay consecutive;
- a broker outage: the producer SDK and the API report every failed event, the
  stream waits and resumes;
- a transaction of the DLQ writer cut by a broker outage stays a retryable sink
  error and lands exactly once when the broker is back.

The streams run against their own topics, MongoDB database and checkpoint
(:func:`tests.helpers.isolated`) and end compared with the generator's truth
(:func:`tests.helpers.assert_matches_truth`). These tests stop servers: never run
them on a test stack that others are using.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from learntrack.config import Settings
from learntrack.errors import RetryableSinkError
from learntrack.producers import ActivityProducer, DeliveryError
from learntrack.producers.generator import build_truth, delivery_stream
from learntrack.stack.manager import Stack
from learntrack.stack.process import stop_process
from learntrack.streaming.job import StreamJob
from learntrack.topics import ensure_topics, read_topic
from learntrack.verify import verify_all
from tests.helpers import (
    START,
    StreamProcess,
    assert_matches_truth,
    dataset,
    isolated,
    publish_records,
)

pytestmark = [
    pytest.mark.stack,
    pytest.mark.spark,
    pytest.mark.usefixtures("restore_stack"),
]

OUTAGE_S = 20.0
log = logging.getLogger(__name__)


def stop_server(stack: Stack, name: str) -> None:
    """Stop one server of the test stack by its own PID, with its clean signal."""
    server = stack.server(name)
    record = Stack.running(server)
    assert record is not None, f"{name} is not running"
    clean = stop_process(
        record, server.stop_signal, stack.settings.stack.stop_timeout_s
    )
    server.pid_path.unlink(missing_ok=True)
    assert clean, f"{name} did not stop cleanly"


def wait_until_verified(
    settings: Settings, truth: dict[str, Any], stream: StreamProcess, timeout_s: float
) -> None:
    """Poll the stores (not the lake) until they equal the truth; fail on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert not stream.exited(), f"the stream exited:\n{stream.output()}"
        bad = [c for c in verify_all(settings, truth) if not c.ok]
        if not bad:
            return
        if time.monotonic() > deadline:
            detail = "\n".join(
                f"{c.store} {c.what}: {c.expected} != {c.found}" for c in bad
            )
            pytest.fail(f"stores differ from the truth:\n{detail}\n{stream.output()}")
        time.sleep(2)


def assert_consecutive(stream: StreamProcess) -> list[int]:
    """Every fan-out batch id once, none skipped; returns the ids."""
    ids = [b for b, _rows in stream.batches()]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    return ids


# -- sink outages ---------------------------------------------------------------------
SINK_SERVERS = ("mongo", "redis", "graph")


#: Evidence that the stream met a store's outage: its retry loop got to the third
#: wait (0.5, 1.0, 2.0 s), or the graph driver's own retries. MongoDB's writes
#: retry inside the executors without a line: the batches stopping is the sign.
MET_OUTAGE = {
    "mongo": None,
    "redis": re.compile(r"^(alerts\.)?redis: .*retrying in 2\.0 s", re.M),
    "graph": re.compile(
        r"^((alerts\.)?graph: .*retrying in 2\.0 s"
        r"|Transaction failed and will be retried)",
        re.M,
    ),
}


def hold_outage(stream: StreamProcess, name: str, limit_s: float = 300) -> None:
    """Keep a store down for ``OUTAGE_S`` and until the stream has met the outage.

    With a backlog every batch needs every store: a batch that got past the
    store before it stopped may still finish, the next one cannot. Batches that
    keep completing, or a stream that never tries the store, fail the test.
    """
    stopped = time.monotonic()
    mark, before = len(stream.lines), len(stream.batches())
    seen, quiet_since = before, stopped
    evidence = MET_OUTAGE[name]
    while True:
        assert not stream.exited(), stream.output()
        now = time.monotonic()
        if len(stream.batches()) != seen:
            seen, quiet_since = len(stream.batches()), now
        if evidence is None:
            met = now - quiet_since >= OUTAGE_S
        else:
            met = bool(evidence.search("\n".join(stream.lines[mark:])))
        if met and now - stopped >= OUTAGE_S:
            break
        if now - stopped > limit_s:
            pytest.fail(f"the stream never met the {name} outage:\n{stream.output()}")
        time.sleep(0.5)
    # At most the batch already past the store when it stopped.
    assert seen - before <= 1, (name, stream.output())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_store_outages_are_retried_with_backoff_and_resumed(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    settings, env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="400"
    )
    StreamJob(settings, report=lambda _l: None).reset()
    data = dataset(settings, 6000, seed=22, bad_ratio=0.01)
    truth = build_truth(data)
    publish_records(settings, list(delivery_stream(data)))  # a backlog of ~15 batches

    stream = StreamProcess(env, "--trigger", "500ms")
    marks: dict[str, int] = {}
    try:
        stream.wait_batches(1, 600, "the first batch")
        for name in SINK_SERVERS:
            stop_server(stack, name)
            marks[name] = len(stream.lines)
            try:
                hold_outage(stream, name)
            finally:
                stack.up(only=[name], report=lambda _m: None)
            done = len(stream.batches())
            stream.wait_batches(done + 1, 300, f"a batch after {name} came back")
        wait_until_verified(settings, truth, stream, 900)
        assert stream.stop() == 0, stream.output()
    finally:
        stream.close()

    log.info("stream output:\n%s", "\n".join(stream.lines))

    def backoff(name: str, sink: str) -> list[float]:
        """The waits announced by ``sink``'s retry loop during ``name``'s outage."""
        text = "\n".join(stream.lines[marks[name] :])
        pattern = rf"^{re.escape(sink)}: .*retrying in ([\d.]+) s"
        return [float(d) for d in re.findall(pattern, text, re.M)]

    # Backoff on the driver: the waits double from 0.5 s (up to 10 s), never a
    # tight loop, in the fan-out's sink or the alerts' (whichever met the outage).
    assert [0.5, 1.0, 2.0] in (
        backoff("redis", "redis")[:3],
        backoff("redis", "alerts.redis")[:3],
    ), stream.output()
    assert_consecutive(stream)
    assert "Traceback" not in "\n".join(stream.lines)
    assert_matches_truth(settings, truth, spark)


# -- broker outage --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_broker_outage_fails_producers_loudly_and_the_stream_waits(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from learntrack.api.app import create_app

    settings, env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="2000"
    )
    StreamJob(settings, report=lambda _l: None).reset()
    data = dataset(settings, 6000, seed=23, bad_ratio=0.01)
    truth = build_truth(data)
    records = list(delivery_stream(data))
    first, during, after = records[:3000], records[3000:3500], records[3500:]
    publish_records(settings, first)
    impatient = settings.model_copy(
        update={
            "producer": settings.producer.model_copy(
                update={"delivery_timeout_ms": 5000}
            )
        }
    )

    stream = StreamProcess(env, "--trigger", "500ms")
    try:
        stream.wait_rows(len(first), 600)
        stop_server(stack, "kafka")
        try:
            down_since = time.monotonic()
            errors: list[Any] = []
            producer = ActivityProducer(impatient, on_error=errors.append)
            for key, value in during:
                producer.send_serialized(key, value)
            with pytest.raises(DeliveryError) as failed:
                producer.flush(30)
            producer.close()
            # Every record is reported, with its exact bytes: nothing silently lost.
            assert failed.value.total == len(during) == producer.failed
            assert producer.delivered == 0
            assert sorted(f.value or b"" for f in errors) == sorted(
                v for _k, v in during
            )

            # The API answers 503 (retry later) rather than accepting and losing.
            with TestClient(create_app(impatient)) as api:
                assert settings.api.write_key is not None
                response = api.post(
                    "/activities",
                    json=[_valid_event("S-outage")],
                    headers={"X-API-Key": settings.api.write_key.get_secret_value()},
                )
            assert response.status_code == 503, response.text

            while time.monotonic() - down_since < OUTAGE_S:
                assert not stream.exited(), stream.output()
                time.sleep(0.5)
            assert not stream.exited(), stream.output()
        finally:
            stack.up(only=["kafka"], report=lambda _m: None)
        # The application re-sends what failed (same bytes, same eventIds).
        publish_records(
            settings,
            [(f.key.encode() if f.key else None, f.value or b"") for f in errors],
        )
        publish_records(settings, after)
        wait_until_verified(settings, truth, stream, 600)
        assert stream.stop() == 0, stream.output()
    finally:
        stream.close()
    # The source said it was waiting for the broker: LearnTrack's Python source with
    # its backoff, Spark's connector through its Kafka client's warnings.
    if settings.stream.source == "python":
        waits = [x for x in stream.lines if "(planning " in x and "retrying in" in x]
    else:
        waits = [x for x in stream.lines if "could not be established" in x]
    assert waits, stream.output()
    assert_consecutive(stream)
    assert_matches_truth(settings, truth, spark)


def test_a_transaction_cut_by_a_broker_outage_stays_retryable_and_lands_once(
    stack: Stack, prefix: str, tmp_path: Path
) -> None:
    """The DLQ and alerts topic writers through an outage that cuts a transaction.

    The first retry builds a new transactional producer; with the broker still
    away its ``init_transactions`` timed out with a raw client error, which the
    stream treated as fatal and exited (seen once in CI: the detection query was
    committing alerts when the broker stopped). Every failure must stay a
    retryable sink error, and the batch must land exactly once when it is back.
    """
    from learntrack.sinks.dlq import DeadLetterSink

    settings, _env = isolated(prefix, tmp_path)
    ensure_topics(settings)
    raws = [f"{{bad {i}".encode() for i in range(3)]
    bad = [
        {"key": f"S{i}".encode(), "raw": raw, "topic": "t", "offset": i,
         "reason": "event: Invalid JSON", "partition": 0, "kafkaTimestamp": START}
        for i, raw in enumerate(raws)
    ]  # fmt: skip
    sink = DeadLetterSink(settings, writer_id=prefix)
    sink.wait_s = 4.0
    with sink:
        assert sink.write_batch(0, bad[:1]) == 1
        stop_server(stack, "kafka")
        try:
            # The commit times out; then, twice, the new producer cannot start.
            for attempt in range(3):
                with pytest.raises(RetryableSinkError):
                    sink.write_batch(1, bad[1:])
                log.info("attempt %d: retryable, as it should be", attempt)
        finally:
            stack.up(only=["kafka"], report=lambda _m: None)
        written = None
        deadline = time.monotonic() + 120
        while written is None:
            try:
                written = sink.write_batch(1, bad[1:])
            except RetryableSinkError:
                assert time.monotonic() < deadline, "the broker came back; no write"
                time.sleep(1)
        assert written == 2  # the broker was away for the whole cut transaction
        assert sink.write_batch(1, bad[1:]) == 0
    values = sorted(r.value() for r in read_topic(settings, settings.topics.dlq))
    assert values == raws


def _valid_event(student: str) -> dict[str, Any]:
    return {
        "studentId": student,
        "courseId": "C1",
        "action": "page_view",
        "timestamp": "2026-11-20T10:00:00Z",
        "region": "EU",
    }
