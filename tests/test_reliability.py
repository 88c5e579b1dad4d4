"""Reliability under faults and bad input, on the real stack with real Spark.

Each test runs the stream against its own topics, MongoDB database and checkpoint
(``tests.test_stream.isolated``) and ends by comparing every store with the
generator's truth (``assert_matches_truth``: MongoDB, Redis, the graph, the lake,
the DLQ and the alerts; 0 lost, 0 counted twice):

- crashes: ``kill -9`` of the whole ``learntrack stream`` process group at random
  moments, and one SIGTERM, with a restart after each;
- sink outages: MongoDB, Redis, then the graph server stopped while the stream
  works through a backlog, each for at least 20 s and until the stream met it;
- a broker outage: the producer SDK and the API report every failed event, the
  stream waits and resumes;
- bad input: >= 10,000 malformed raw records straight to the topic, each in the
  DLQ with a reason and in no store, the job never stops;
- the closed stack: generated credentials stay private and masked.

``make test`` runs a data set sized for a few minutes on two busy cores;
``LEARNTRACK_SOAK=1`` (``make soak``) runs the crash test on 200,000 events with 5
kills (``make test``: 12,000 events, 2 kills), both then one SIGTERM.
``LEARNTRACK_CHAOS_SEED`` replays the random kill moments of an earlier run.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import logging
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from learntrack.config import Settings
from learntrack.errors import RetryableSinkError
from learntrack.producers import ActivityProducer, DeliveryError
from learntrack.producers.generator import (
    Dataset,
    Generator,
    GeneratorConfig,
    build_truth,
    delivery_stream,
)
from learntrack.stack.manager import Stack
from learntrack.stack.process import stop_process
from learntrack.streaming.job import StreamJob
from learntrack.topics import ensure_topics, read_topic
from learntrack.verify import verify_all
from tests.test_stream import START, assert_matches_truth, isolated

pytestmark = [pytest.mark.stack, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[1]
SOAK = os.environ.get("LEARNTRACK_SOAK", "") not in ("", "0")
SEED = int(
    os.environ.get("LEARNTRACK_CHAOS_SEED") or random.SystemRandom().randrange(10**6)
)
OUTAGE_S = 20.0
BATCH_LINE = re.compile(r"^batch (\d+): ([\d,]+) rows")
log = logging.getLogger(__name__)


# -- helpers ---------------------------------------------------------------------------
def dataset(settings: Settings, events: int, seed: int, bad_ratio: float) -> Dataset:
    """A generated day of activity for ``settings`` (150 students, 6 courses)."""
    return Generator(
        GeneratorConfig(
            students=150,
            courses=6,
            events=events,
            start=START,
            seed=seed,
            bad_ratio=bad_ratio,
            out_of_order=dt.timedelta(minutes=2),
            weights=dict(settings.scoring.weights),
            half_life_s=settings.scoring.half_life_s,
        )
    ).build()


def publish_records(
    settings: Settings, records: list[tuple[bytes | None, bytes]]
) -> None:
    """Publish raw (key, value) records through the SDK; every one acknowledged."""
    ensure_topics(settings)
    with ActivityProducer(settings) as producer:
        for key, value in records:
            producer.send_serialized(key, value)


class StreamProcess:
    """``learntrack stream`` in its own process group, its output read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        """Start the stream with ``args``; a thread collects its output lines."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "learntrack.cli", "stream", *args],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def exited(self) -> bool:
        """Whether the stream has exited; if so, after its last line has been read.

        The reader thread can lag behind the process (a broker outage floods the
        output with client logs), so a failure message taken at once would miss
        the error the stream exited with.
        """
        if self.proc.poll() is None:
            return False
        self._reader.join(60)
        return True

    def output(self, last: int = 150) -> str:
        """The last ``last`` lines (for failure messages)."""
        with self._changed:
            return "\n".join(self.lines[-last:])

    def wait_for(
        self, condition: Callable[[list[str]], bool], timeout_s: float, what: str
    ) -> None:
        """Poll the output until ``condition`` holds; fail on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition(self.lines):
                if self.eof:
                    pytest.fail(f"stream exited waiting for {what}:\n{self.output()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {what} within {timeout_s:.0f} s:\n{self.output()}")
                self._changed.wait(1.0)

    def batches(self) -> list[tuple[int, int]]:
        """(batch id, rows) of every fan-out batch line so far."""
        with self._changed:
            found = [BATCH_LINE.match(line) for line in self.lines]
        return [(int(m[1]), int(m[2].replace(",", ""))) for m in found if m]

    def rows(self) -> int:
        """Records the fan-out has processed so far (valid + dead-lettered)."""
        return sum(rows for _b, rows in self.batches())

    def wait_rows(self, n: int, timeout_s: float) -> None:
        """Until the fan-out has processed ``n`` records."""
        self.wait_for(lambda _l: self.rows() >= n, timeout_s, f"{n:,} records")

    def wait_batches(self, n: int, timeout_s: float, what: str) -> None:
        """Until ``n`` fan-out batch lines have been printed."""
        self.wait_for(lambda _l: len(self.batches()) >= n, timeout_s, what)

    def kill(self) -> None:
        """``kill -9`` of the whole group: driver, Spark JVM, Python workers."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)
        self._reader.join(10)

    def stop(self, timeout_s: float = 300) -> int:
        """SIGTERM to the driver (a graceful stop); its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def close(self) -> None:
        """Kill whatever is left (after a failed test)."""
        if self.proc.poll() is None:
            self.kill()


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


# -- 1. crash and restart --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(5400 if SOAK else 1500)
def test_kill_9_at_random_moments_and_sigterm_lose_nothing_count_nothing_twice(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    events, per_trigger = (200_000, 5000) if SOAK else (12_000, 1000)
    settings, env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER=str(per_trigger)
    )
    StreamJob(settings, report=lambda _l: None).reset()
    data = dataset(settings, events, seed=21, bad_ratio=0.01)
    truth = build_truth(data)
    publish_records(settings, list(delivery_stream(data)))
    rng = random.Random(SEED)
    moments: list[str] = []

    kills = 5 if SOAK else 2  # then one SIGTERM; make soak has the 5 kills
    for crash in range(kills + 1):
        stream = StreamProcess(env, "--available-now")
        try:
            # A random moment: after 1-2 batch lines of this run, plus 0-4 s, so
            # kills land inside sink writes as well as between batches.
            after = rng.randint(1, 2)
            delay = rng.uniform(0.0, 4.0)
            stream.wait_batches(after, 600, f"{after} batch lines")
            time.sleep(delay)
            assert not stream.exited(), (
                f"run {crash} ended before its fault (seed {SEED}): the data set is "
                f"too small\n{stream.output()}"
            )
            moments.append(f"{after} batch lines + {delay:.1f} s")
            if crash < kills:
                stream.kill()
                assert stream.proc.returncode == -signal.SIGKILL
            else:
                code = stream.stop()
                assert code == 0, stream.output()
                stream.wait_for(
                    lambda lines: any("stream stopped after" in x for x in lines),
                    10,
                    "the final line",
                )
        finally:
            stream.close()

    done = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "stream", "--available-now"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3000 if SOAK else 900,
        check=False,
    )
    assert done.returncode == 0, (
        f"seed {SEED}, faults at {moments}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    try:
        assert_matches_truth(settings, truth, spark)
    except AssertionError as err:
        raise AssertionError(f"seed {SEED}, faults at {moments}: {err}") from err


# -- 2. sink outages -------------------------------------------------------------------
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


# -- 3. broker outage ------------------------------------------------------------------
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


# -- 4. bad input ----------------------------------------------------------------------
def hostile_records(data: Dataset) -> list[tuple[str, bytes | None, bytes | None]]:
    """Malformed records beyond the generator's 12 kinds: (kind, key, value)."""
    ts, eid, sid, cid, action, region, session, device, *_ = data.events[0]
    base = {
        "eventId": eid,
        "studentId": sid,
        "courseId": cid,
        "action": action,
        "timestamp": "2026-11-20T10:00:00Z",
        "region": region,
    }
    good = orjson.dumps(base)
    k = sid.encode()

    def raw(**fields: bytes) -> bytes:
        text = orjson.dumps({f: v for f, v in base.items() if f not in fields})[:-1]
        return (
            text
            + b"".join(b',"%s":%s' % (f.encode(), v) for f, v in fields.items())
            + b"}"
        )

    cypher = "S1'}) MATCH (n) DETACH DELETE n //"
    out: list[tuple[str, bytes | None, bytes | None]] = [
        ("tombstone", k, None),
        ("empty", k, b""),
        ("whitespace", k, b"  \n "),
        ("json_null", k, b"null"),
        ("json_list", k, b"[" + good + b"]"),
        ("json_number", k, b"42"),
        ("json_string", k, orjson.dumps(good.decode())),
        ("utf8_bom", k, b"\xef\xbb\xbf" + good),
        ("deep_nesting", k, b"[" * 20_000 + b"]" * 20_000),
        ("nan_score", k, raw(score=b"NaN")),
        ("infinite_duration", k, raw(durationMs=b"1e999")),
        ("huge_duration", k, raw(durationMs=b"1" + b"0" * 40)),
        ("fractional_duration", k, raw(durationMs=b"1.5")),
        ("action_list", k, raw(action=b'["page_view"]')),
        ("region_operator", k, raw(region=b'{"$ne": null}')),
        ("course_operator", k, raw(courseId=b'{"$gt": ""}')),
        ("course_cypher", k, orjson.dumps({**base, "courseId": cypher})),
        ("session_cypher", k, orjson.dumps({**base, "sessionId": "x` RETURN 1 //"})),
        ("event_id_sql", k, orjson.dumps({**base, "eventId": "'; DROP TABLE t; --"})),
        (
            "student_dotted_operator",
            b"$where",
            orjson.dumps({**base, "studentId": "$where"}),
        ),
        ("student_nul", k, orjson.dumps({**base, "studentId": sid + "\u0000"})),
        ("student_space", k, orjson.dumps({**base, "studentId": sid + " OR 1=1"})),
        ("student_too_long", k, orjson.dumps({**base, "studentId": "S" * 65})),
        ("metadata_operator_key", k, orjson.dumps({**base, "metadata": {"$set": 1}})),
        ("metadata_dotted_key", k, orjson.dumps({**base, "metadata": {"a.b": 1}})),
        ("metadata_nested", k, orjson.dumps({**base, "metadata": {"a": {"$gt": 1}}})),
        (
            "metadata_21_keys",
            k,
            orjson.dumps({**base, "metadata": {f"k{i}": i for i in range(21)}}),
        ),
        ("extra_operator_field", k, orjson.dumps({**base, "$where": "sleep(1000)"})),
        ("duplicate_student_field", k, good[:-1] + b',"studentId":"SOMEONE_ELSE"}'),
        ("schema_version_2", k, orjson.dumps({**base, "schemaVersion": 2})),
        (
            "timestamp_year_1",
            k,
            orjson.dumps({**base, "timestamp": "0001-01-01T00:00:00Z"}),
        ),
        (
            "timestamp_year_9999",
            k,
            orjson.dumps({**base, "timestamp": "9999-12-31T23:59:59Z"}),
        ),
        (
            "timestamp_expanded_year",
            k,
            orjson.dumps({**base, "timestamp": "+275760-09-13T00:00:00Z"}),
        ),
        ("timestamp_epoch_overflow", k, raw(timestamp=b"1" + b"0" * 30)),
        ("timestamp_negative", k, raw(timestamp=b"-62135596800")),
        (
            "timestamp_leap_second",
            k,
            orjson.dumps({**base, "timestamp": "2026-11-20T10:00:60Z"}),
        ),
        (
            "timestamp_naive_space",
            k,
            orjson.dumps({**base, "timestamp": "2026-11-20 10:00:00"}),
        ),
        ("timestamp_text", k, orjson.dumps({**base, "timestamp": "yesterday"})),
        ("surrogate_escape", k, raw(courseId=b'"C\\ud800"')),
        ("invalid_utf8_value", k, good.replace(b'"action"', b'"act\xc3\x28ion"')),
        ("valid_event_null_key", None, good),
        ("valid_event_other_key", b"SOMEONE_ELSE", good),
        ("valid_event_invalid_utf8_key", b"\xff\xfe", good),
        ("binary_noise", k, bytes(range(256)) * 4),
        (
            "over_64kib",
            k,
            orjson.dumps(
                {**base, "metadata": {"blob": "x" * 256, "pad": "y" * 70_000}}
            ),
        ),
        (
            "just_under_1mb",
            k,
            orjson.dumps({**base, "metadata": {"blob": "z" * 1_000_000}})[:999_000],
        ),
    ]
    return out


def big_records(data: Dataset) -> list[tuple[str, bytes, bytes]]:
    """Records over 1 MB that the broker takes because they arrive compressed."""
    ts, eid, sid, cid, action, region, *_ = data.events[1]
    base = {
        "eventId": eid,
        "studentId": sid,
        "courseId": cid,
        "action": action,
        "timestamp": "2026-11-20T10:00:00Z",
        "region": region,
    }
    return [
        (
            f"over_1mb_{size}",
            sid.encode(),
            orjson.dumps({**base, "metadata": {"blob": "b" * size}}),
        )
        for size in (1_100_000, 3_000_000)
    ]


def test_the_parser_routes_every_record_and_never_raises(settings: Settings) -> None:
    """Pure: the executor's parser over hostile bytes, one output row per record."""
    import pyarrow as pa

    from learntrack.streaming.parse import make_parser

    data = dataset(settings, 50, seed=25, bad_ratio=1.0)
    good = orjson.loads(delivery_stream(data).__next__()[1])  # any valid event
    big_int = orjson.dumps({**good, "metadata": {"n": 1}}).replace(
        b'"n":1', b'"n":123456789012345678901234567890'
    )
    cases: list[tuple[bytes | None, bytes | None]] = [
        (key, value) for _kind, key, value in hostile_records(data)
    ]
    cases += [(m.key, m.value) for m in data.malformed]
    cases.append((good["studentId"].encode(), big_int))
    # The broker stamps records on arrival: just after the valid event's own time
    # (a fixed date would make the dataset's dates, relative to today, "future").
    stamp = dt.datetime.fromisoformat(good["timestamp"].replace("Z", "+00:00"))
    stamp += dt.timedelta(seconds=1)
    batch = pa.RecordBatch.from_pydict(
        {
            "key": [k for k, _v in cases],
            "value": [v for _k, v in cases],
            "topic": ["t"] * len(cases),
            "partition": [0] * len(cases),
            "offset": list(range(len(cases))),
            "timestamp": [stamp] * len(cases),
        },
        schema=pa.schema(
            [
                ("key", pa.binary()),
                ("value", pa.binary()),
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    out = make_parser(settings)(iter([batch]))
    # Every record comes out once: refused ones in order, then the valid one.
    assert out.records == len(cases)
    assert out.ends == {0: len(cases) - 1}
    assert [r["offset"] for r in out.invalid] == list(range(len(cases) - 1))
    # Only the last case is valid: an integer beyond 64 bits in metadata is kept
    # as text (it used to raise inside the parser and fail the whole batch).
    assert out.events["offset"] == [len(cases) - 1]
    assert out.events["metadata"] == [{"n": "123456789012345678901234567890"}]
    for r in out.invalid:
        assert r["reason"]
        assert (r["key"], r["raw"]) == cases[r["offset"]]


def test_oversized_records_are_refused_loudly_at_produce_time(
    settings: Settings, prefix: str
) -> None:
    from learntrack.producers import ProducerError
    from learntrack.topics import create_topic, delete_topics

    topic = f"{prefix}.big"
    create_topic(settings, topic, 1, retention_ms=600_000)
    try:
        noise = os.urandom(1_100_000)  # incompressible: > 1 MB on the wire too
        with ActivityProducer(settings, topic=topic) as producer:
            # librdkafka refuses it before it leaves the process...
            with pytest.raises(ProducerError, match="too large"):
                producer.send_serialized(b"S1", noise)
        # ...and a producer allowed larger messages gets the broker's refusal.
        errors: list[Any] = []
        lenient = ActivityProducer(
            settings,
            topic=topic,
            on_error=errors.append,
            config={"message.max.bytes": 10_000_000, "compression.type": "none"},
        )
        lenient.send_serialized(b"S1", noise)
        with pytest.raises(DeliveryError, match="too large"):
            lenient.flush(30)
        lenient.close()
        assert [e.value for e in errors] == [noise]
        assert read_topic(settings, topic) == []
    finally:
        delete_topics(settings, [topic])


def test_bad_input_goes_to_the_dlq_with_a_reason_and_nowhere_else(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    settings, _env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="6000"
    )
    job = StreamJob(settings, available_now=True, report=log.info)
    job.reset()
    data = dataset(settings, 10_000, seed=24, bad_ratio=1.0)
    truth = build_truth(data)
    extra = hostile_records(data)
    big = big_records(data)
    assert len(data.malformed) + len(extra) + len(big) >= 10_000
    records = list(delivery_stream(data))
    # Spread the extra records through the valid ones.
    for i, (_kind, key, value) in enumerate(extra):
        records.insert((i * 397) % len(records), (key, value))  # type: ignore[arg-type]
    publish_records(settings, records)
    # Larger than the topic's 1 MB message limit, but compressed: the broker keeps them.
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "message.max.bytes": 10_000_000,
            "compression.type": "lz4",
        }
    )
    for _kind, key, value in big:
        producer.produce(settings.topics.activity, key=key, value=value)
    assert producer.flush(30) == 0
    for kind, key, value in [*extra, *big]:
        truth["malformed"].append(
            {
                "kind": kind,
                "sha256": hashlib.sha256(value or b"").hexdigest(),
                "key": key.decode("utf-8", "replace") if key is not None else None,
            }
        )
    truth["counts"]["malformed"] = len(truth["malformed"])

    reports = job.run(spark)  # the job must go through all of it without stopping

    assert sum(r.valid for r in reports) == 10_000
    assert sum(r.invalid for r in reports) == truth["counts"]["malformed"]
    assert_matches_truth(settings, truth, spark)
    reasons: dict[str, set[str]] = {}
    for m in read_topic(settings, settings.topics.dlq):
        reason = dict(m.headers() or [])["reason"].decode()
        reasons.setdefault(hashlib.sha256(m.value() or b"").hexdigest(), set()).add(
            reason
        )
    by_kind = {
        m["kind"]: " | ".join(sorted(reasons[m["sha256"]])) for m in truth["malformed"]
    }
    # Records with the same bytes (a tombstone and an empty value; one valid event
    # under a null, a foreign and an undecodable key) share a hash: all reasons.
    assert by_kind["tombstone"] == (
        "event: Invalid JSON: EOF while parsing a value at line 1 column 0 | "
        "value: missing (null record)"
    )
    assert by_kind["valid_event_null_key"] == (
        "key: does not match studentId | key: missing (must be the studentId)"
    )
    assert re.fullmatch(r"oversized: 3\d{6} bytes > 65536", by_kind["over_1mb_3000000"])
    assert by_kind["over_64kib"].startswith("oversized")
    assert by_kind["mongo_operator_id"].startswith("studentId: Input should be")
    assert by_kind["cypher_fragment_id"].startswith("studentId: String should match")
    assert by_kind["course_cypher"].startswith("courseId: String should match")
    assert "timestamp" in by_kind["naive_timestamp"]
    assert "recursion limit" in by_kind["deep_nesting"]
    _assert_no_hostile_ids(settings)


def _assert_no_hostile_ids(settings: Settings) -> None:
    """No store holds an id that is not a plain identifier (no operator, no quote)."""
    from learntrack.clients import graph_driver, mongo_client, redis_client
    from learntrack.events import ID_PATTERN

    plain = re.compile(ID_PATTERN)
    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        for coll, field in (
            ("activities", "studentId"),
            ("activities", "courseId"),
            ("students", "studentId"),
        ):
            values = db[coll].distinct(field)
            assert values and all(
                isinstance(v, str) and plain.match(v) for v in values
            ), (coll, field)
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        ids = [
            r["id"] for r in session.run("MATCH (s:Student) RETURN s.studentId AS id")
        ]
    assert ids and all(plain.match(i) for i in ids)
    with redis_client(settings) as r:
        keys = [k.decode() for k in r.scan_iter(match="lt:student:*", count=1000)]
    assert keys and all(plain.match(k.removeprefix("lt:student:")) for k in keys)


def test_store_queries_are_parameterized() -> None:
    """Every Cypher and CQL text is a constant; values travel as parameters.

    A query passed to ``run`` / ``execute`` / ``prepare`` that is built with an
    f-string, ``%``, ``+`` or ``.format`` from anything but a constant fails this
    test, unless the interpolated name is one of the schema names below: the
    settings validate the keyspace and the Cassandra role as plain identifiers,
    labels and tables are constants of the code.
    """
    schema_names = {"label", "self.keyspace", "table.name", "role"}

    def constant(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return node.id.isupper()  # a module-level query text
        if isinstance(node, ast.BinOp):
            return constant(node.left) and constant(node.right)
        return False

    offenders = []
    checked = 0
    for path in sorted((ROOT / "learntrack").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run", "execute", "prepare")
                and node.args
            ):
                continue
            query = node.args[0]
            checked += 1
            if isinstance(query, ast.JoinedStr):
                names = {
                    ast.unparse(v.value)
                    for v in query.values
                    if isinstance(v, ast.FormattedValue)
                }
                ok = names <= schema_names
            elif isinstance(query, ast.BinOp):
                ok = constant(query)
            elif isinstance(query, ast.Call):
                ok = not (
                    isinstance(query.func, ast.Attribute)
                    and query.func.attr == "format"
                )
            else:
                ok = True  # a constant, a name bound to one, or a prepared statement
            if not ok:
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(query)}")
    assert checked > 20
    assert not offenders, "queries built from values:\n" + "\n".join(offenders)


# -- 6. the closed stack ---------------------------------------------------------------
def test_generated_credentials_stay_private_and_masked(stack: Stack) -> None:
    from dotenv import dotenv_values

    from learntrack.config import credentials_path
    from learntrack.stack.credentials import GENERATED, MONGO_KEYFILE

    data_dir = stack.settings.data_dir
    path = credentials_path(data_dir)
    secrets = {k: v for k, v in dotenv_values(path).items() if v}
    assert set(GENERATED) <= set(secrets)
    for file in (path, data_dir / MONGO_KEYFILE):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    # Never committed: the data dirs are git-ignored, and no such file is tracked.
    candidates = [".learntrack/credentials.env", ".learntrack-test/credentials.env"]
    if data_dir.is_relative_to(ROOT):
        candidates.append(str(path.relative_to(ROOT)))
    for candidate in candidates:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", candidate], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{candidate} is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [t for t in tracked if t.endswith(("credentials.env", MONGO_KEYFILE))]

    shown = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "config", "show", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for value in secrets.values():
        assert value not in shown.stdout
    dumped = orjson.loads(shown.stdout)
    assert dumped["mongo"]["password"] == dumped["api"]["write_key"] == "********"


@pytest.fixture(autouse=True)
def _restore_the_stack(stack: Stack, prefix: str) -> Iterator[None]:
    """Afterwards: every server up again, this test's topics and database gone.

    What a test published must not outlive it: the broker keeps every topic on disk
    until its retention passes.
    """
    yield
    if not stack.all_running():
        stack.up(report=lambda _m: None)
    from learntrack.clients import mongo_client
    from learntrack.topics import delete_topics

    settings = stack.settings
    delete_topics(settings, _topics_named(settings, prefix))
    with mongo_client(settings) as client:
        client.drop_database(prefix)


def _topics_named(settings: Settings, prefix: str) -> list[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    return [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
