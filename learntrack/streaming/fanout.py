"""The fan-out of one micro-batch: one Spark job, every store written inside its tasks.

:data:`TOPOLOGY` declares the sinks in order. :func:`task` builds the ``mapInArrow``
function of a batch: each task (one or more whole Kafka partitions' offset ranges,
as many tasks as cores) parses its records once, de-duplicates them, and hands its
events as columns (:class:`~learntrack.sinks.base.Part`) to every executor sink in
turn; the first,
the activity log, leaves out the events another copy already stored. What the
task returns to the driver is small: its figures, its dead letters and its alerts
(:data:`RESULT_SCHEMA`). The driver then commits (the lake) and writes the driver
sinks (dead letters, alerts): :meth:`learntrack.streaming.job.StreamJob.process_batch`.

Why one job: every Spark job costs 80-100 ms of scheduling on ``local[2]`` whatever
its size, and the earlier design ran about 15 per batch (counts, distinct, a
shuffle, a fold, collects). Nothing here assumes the batch fits the driver: the
events stay in the executors; only dead letters and alerts travel.

Sinks opened by a task stay open in its Python worker (Spark reuses workers), so a
batch pays no connection set-up; a sink that failed is closed and opened afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson

from learntrack.config import Settings
from learntrack.errors import RetryableSinkError
from learntrack.sinks.alerts import (
    AlertTopicSink,
    GraphAlertSink,
    MongoAlertSink,
    RedisAlertSink,
)
from learntrack.sinks.base import Part, Runs, StreamSink
from learntrack.sinks.dlq import DeadLetterSink
from learntrack.sinks.graph import GraphSink
from learntrack.sinks.lake import LakeSink
from learntrack.sinks.mongo import MongoActivitySink, MongoStudentSink
from learntrack.sinks.redis import RedisScoreSink
from learntrack.streaming.detect import DetectSink, newest_event_ms

T = TypeVar("T")

#: The stream's sinks, in write order. Executor sinks run in every task (the first
#: decides which events are new); driver sinks once per batch, after the tasks.
TOPOLOGY: tuple[type[StreamSink], ...] = (
    MongoActivitySink,
    LakeSink,
    MongoStudentSink,
    RedisScoreSink,
    GraphSink,
    DetectSink,
    DeadLetterSink,
    MongoAlertSink,
    RedisAlertSink,
    GraphAlertSink,
    AlertTopicSink,
)

#: What a task returns: one row per figure set, dead letter or alert.
RESULT_SCHEMA = "kind string, key binary, raw binary, body binary"
#: Quantiles of freshness each task reports (0 %, 0.5 %, ... 100 %).
QUANTILES = 201


def sinks(settings: Settings, runs_on: Runs | None = None) -> list[type[StreamSink]]:
    """The topology's sinks enabled by ``settings`` (optionally only one side)."""
    return [
        cls
        for cls in TOPOLOGY
        if cls.enabled(settings) and (runs_on is None or cls.runs_on == runs_on)
    ]


# -- in the executors ---------------------------------------------------------------
_OPEN: dict[tuple[str, str], StreamSink] = {}


def _opened(key: str, cls: type[StreamSink], settings: Settings) -> StreamSink:
    """An open sink of this Python worker (opened once, kept across tasks)."""
    sink = _OPEN.get((key, cls.name))
    if sink is None:
        sink = cls(settings)
        retry_local(sink.open)
        _OPEN[(key, cls.name)] = sink
    return sink


def _discard(key: str, name: str) -> None:
    sink = _OPEN.pop((key, name), None)
    if sink is not None:
        try:
            sink.close()
        except Exception:  # noqa: BLE001, S110 - a broken client may not close
            pass


def task(
    settings: Settings,
    batch_id: int,
    watermarks: dict[int, int],
    *,
    parsed: bool = False,
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function of batch ``batch_id`` (a picklable object).

    It takes Kafka records (``key, value, topic, partition, offset, timestamp``),
    or with ``parsed`` rows the parser already produced (the benchmarks).
    """
    return _Task(settings, batch_id, watermarks, parsed=parsed)


class _Task:
    """One task of a batch: read and parse, then every executor sink, then report."""

    def __init__(
        self,
        settings: Settings,
        batch_id: int,
        watermarks: dict[int, int],
        *,
        parsed: bool,
    ) -> None:
        from learntrack.streaming.parse import Parsed, from_parsed, make_parser

        self.settings = settings
        self.batch_id = batch_id
        self.watermarks = watermarks
        self.parse: Callable[[Iterator[Any]], Parsed] = (
            from_parsed if parsed else make_parser(settings)
        )
        self.key = settings.model_dump_json()
        self.sinks = sinks(settings, Runs.EXECUTOR)
        self.lateness_ms = int(settings.detect.lateness_s * 1000)

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Run the task over Spark's Arrow batches; yield its one result batch."""
        started = time.perf_counter()
        waited = [0.0]  # seconds waiting for Spark's Arrow batches (the read)
        parsed = self.parse(_timed(iter(batches), waited))
        if not parsed.records:
            return
        valid = len(parsed.events["eventId"])
        part = Part(
            self.batch_id,
            min(parsed.ends),
            _first_copies(parsed.events),
            self.watermarks,
        )
        figures: dict[str, Any] = {
            "ends": {str(p): last + 1 for p, last in parsed.ends.items()},
            "invalid": len(parsed.invalid),
            "valid": valid,
            "duplicates": valid - len(part),
            "read": waited[0],
            "parse": time.perf_counter() - started - waited[0],
        }
        try:
            emitted, figures["sinks"] = self._write(part)
        except TaskRetryable as failed:
            # Reported, not raised: the driver sees the error's type and the sink
            # that failed (a raised exception reaches it only as Spark's text).
            yield _failure(failed.sink, failed.message)
            return
        figures["duplicates"] += part.dropped
        figures["freshness"] = _freshness(part.events, time.time() * 1000)
        newest = newest_event_ms(part.events, self.lateness_ms) if len(part) else {}
        figures["newestMs"] = {str(p): ms for p, ms in newest.items()}
        figures["stored"] = len(part)
        figures["seconds"] = time.perf_counter() - started
        yield _result(figures, emitted, parsed.invalid)

    def _write(self, part: Part) -> tuple[dict[str, list[Any]], dict[str, float]]:
        """Every executor sink in topology order: (what each emitted, its seconds)."""
        from learntrack.sinks.fold import fold

        emitted: dict[str, list[Any]] = {}
        seconds: dict[str, float] = {}
        for i, cls in enumerate(self.sinks):
            if not len(part):
                break
            sink = _opened(self.key, cls, self.settings)
            begun = time.perf_counter()
            try:
                emitted[cls.name] = retry_local(partial(sink.write_part, part))
            except RetryableSinkError as err:
                _discard(self.key, cls.name)
                raise TaskRetryable(cls.name, str(err)) from err
            except Exception:
                _discard(self.key, cls.name)
                raise
            seconds[cls.name] = time.perf_counter() - begun
            if i == 0:  # the activity log has left out the events stored before
                part.students = fold(self.settings, part.events)
        return emitted, seconds


class TaskSinkError(RetryableSinkError):
    """On the driver: a task reported its sink unavailable (named in the text)."""


class TaskRetryable(Exception):  # noqa: N818 - a signal inside a task, not an error
    """A sink still failing retryably after the task's own retries (executor)."""

    def __init__(self, sink: str, message: str) -> None:
        """``sink``: the topology name; ``message``: the sink's error text."""
        super().__init__(f"{sink}: {message}")
        self.sink = sink
        self.message = message


def _failure(sink: str, message: str) -> Any:
    """The result batch of a task whose sink stayed unavailable: one ``retryable``."""
    body = orjson.dumps({"sink": sink, "message": message})
    return _result_batch([("retryable", None, None, body)])


def _timed(source: Iterator[Any], waited: list[float]) -> Iterator[Any]:
    """``source``, adding the seconds spent waiting for each item to ``waited[0]``."""
    while True:
        begun = time.perf_counter()
        item = next(source, None)
        waited[0] += time.perf_counter() - begun
        if item is None:
            return
        yield item


def _result(
    figures: dict[str, Any], emitted: dict[str, Any], invalid: list[dict[str, Any]]
) -> Any:
    """The task's result batch: its figures, what its sinks emitted, dead letters."""
    out: list[tuple[str, bytes | None, bytes | None, bytes]] = [
        ("figures", None, None, orjson.dumps(figures)),
        ("emitted", None, None, orjson.dumps(emitted)),
    ]
    for r in invalid:
        stamp = r["kafkaTimestamp"]
        body = {
            "reason": r["reason"],
            "topic": r["topic"],
            "partition": r["partition"],
            "offset": r["offset"],
            "kafkaMs": None if stamp is None else stamp.timestamp() * 1000,
        }
        out.append(("invalid", r["key"], r["raw"], orjson.dumps(body)))
    return _result_batch(out)


def _result_batch(rows: list[tuple[str, bytes | None, bytes | None, bytes]]) -> Any:
    """Rows of (kind, key, raw, body) as one Arrow batch of :data:`RESULT_SCHEMA`."""
    import pyarrow as pa

    return pa.RecordBatch.from_pylist(
        [dict(zip(("kind", "key", "raw", "body"), r, strict=True)) for r in rows],
        schema=_result_arrow_schema(),
    )


def _result_arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("kind", pa.string()), ("key", pa.binary()), ("raw", pa.binary()),
         ("body", pa.binary())]
    )  # fmt: skip


def _first_copies(events: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """One copy of each eventId: the first in (partition, offset) order.

    A producer that re-sends publishes the same key, so the copies of an event are
    in one partition, hence one task. Records arrive in that order (each Kafka
    partition's range is read in offset order, partitions one after the other);
    the sort only runs when they did not.
    """
    ids = events["eventId"]
    order: Iterable[int] = range(len(ids))
    at = list(zip(events["partition"], events["offset"], strict=True))
    if any(at[i] > at[i + 1] for i in range(len(at) - 1)):
        order = sorted(order, key=at.__getitem__)
    elif len(set(ids)) == len(ids):
        return events  # in order, no copies: nothing to do
    seen: set[str] = set()
    keep = []
    for i in order:
        if ids[i] not in seen:
            seen.add(ids[i])
            keep.append(i)
    return {k: [v[i] for i in keep] for k, v in events.items()}


def _freshness(events: dict[str, list[Any]], done_ms: float) -> list[float]:
    """Quantiles (s) of produced -> stored for the task's events (broker time)."""
    ages = sorted(
        (done_ms - ts.timestamp() * 1000) / 1000
        for ts in events.get("kafkaTimestamp", [])
        if ts is not None
    )
    if not ages:
        return []
    last = len(ages) - 1
    return [ages[round(last * q / (QUANTILES - 1))] for q in range(QUANTILES)]


def retry_local(fn: Callable[[], T], attempts: int = 4) -> T:
    """Retry retryable sink errors in the task for a few seconds (0.5, 1, 2 s).

    A store down for longer fails the task, hence the batch's job; the driver
    then retries the whole batch with its own backoff, naming the sink
    (:meth:`learntrack.streaming.job.StreamJob._retry`): every write is
    idempotent, so tasks that had finished change nothing the second time.
    """
    delay = 0.5
    for attempt in range(attempts):
        try:
            return fn()
        except RetryableSinkError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


# -- on the driver ------------------------------------------------------------------
@dataclass
class Gathered:
    """What the tasks of a batch returned, put together on the driver."""

    tasks: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    ends: dict[int, int] = field(default_factory=dict)
    #: Per sink, the slowest task's seconds (the batch waits for it).
    sinks: dict[str, float] = field(default_factory=dict)
    read_s: float = 0.0
    parse_s: float = 0.0
    #: Per partition, the newest event time detection could compare.
    newest_ms: dict[int, int] = field(default_factory=dict)
    #: Executor sink name -> what its tasks emitted (concatenated).
    emitted: dict[str, list[Any]] = field(default_factory=dict)
    #: Driver input kind ("invalid", "alerts") -> rows.
    rows: dict[str, list[Any]] = field(default_factory=dict)
    #: (quantiles, events) of each task, for :meth:`freshness`.
    ages: list[tuple[list[float], int]] = field(default_factory=list)
    #: (sink, message) of each task whose sink stayed unavailable.
    retryable: list[tuple[str, str]] = field(default_factory=list)

    def raise_retryable(self) -> None:
        """Raise :class:`RetryableSinkError` if a task's sink stayed unavailable.

        The batch is then re-run as a whole (every write is idempotent), with the
        driver's backoff; the error names the sink, as the task reported it.
        """
        if self.retryable:
            sink, message = self.retryable[0]
            raise TaskSinkError(f"{sink}: {message[:300]} (in a task)")

    def freshness(self) -> dict[str, float]:
        """p50, p99 and max of produced -> stored over the batch's events (s)."""
        weighted: list[tuple[float, float]] = []
        for quantiles, n in self.ages:
            if quantiles and n:
                weighted += [(q, n / len(quantiles)) for q in quantiles]
        if not weighted:
            return {}
        weighted.sort()
        total = sum(w for _, w in weighted)
        out = {"max": weighted[-1][0]}
        for name, q in (("p50", 0.50), ("p99", 0.99)):
            target, acc = q * total, 0.0
            for value, w in weighted:
                acc += w
                if acc >= target:
                    out[name] = value
                    break
        return {k: round(v, 3) for k, v in out.items()}


def gather(result: Any) -> Gathered:
    """Decode a batch's task results (an Arrow table of :data:`RESULT_SCHEMA`)."""
    import datetime as dt

    g = Gathered()
    for r in result.to_pylist():
        body = orjson.loads(r["body"])
        if r["kind"] == "figures":
            g.tasks += 1
            g.valid += body["valid"]
            g.invalid += body["invalid"]
            g.duplicates += body["duplicates"]
            for p, end in body["ends"].items():
                g.ends[int(p)] = max(g.ends.get(int(p), 0), end)
            for name, s in body["sinks"].items():
                g.sinks[name] = max(g.sinks.get(name, 0.0), s)
            g.read_s = max(g.read_s, body["read"])
            g.parse_s = max(g.parse_s, body["parse"])
            for p, ms in body["newestMs"].items():
                g.newest_ms[int(p)] = max(g.newest_ms.get(int(p), -1), ms)
            g.ages.append((body["freshness"], body["stored"]))
        elif r["kind"] == "retryable":
            g.retryable.append((body["sink"], body["message"]))
        elif r["kind"] == "emitted":
            for name, rows in body.items():
                g.emitted.setdefault(name, []).extend(rows)
        elif r["kind"] == "invalid":
            ms = body.pop("kafkaMs")
            stamp = None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
            g.rows.setdefault("invalid", []).append(
                {**body, "key": r["key"], "raw": r["raw"], "kafkaTimestamp": stamp}
            )
    for cls in TOPOLOGY:
        if cls.emits and g.emitted.get(cls.name):
            g.rows.setdefault(cls.emits, []).extend(cls.decode(g.emitted[cls.name]))
    return g
