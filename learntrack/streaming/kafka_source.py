"""A Kafka source for Spark Structured Streaming, written as a Python data source.

No package registry ships Spark's JVM Kafka connector, so LearnTrack reads Kafka with
confluent-kafka behind pyspark's ``DataSourceStreamReader`` (Spark 4.2+ API).

Where code runs:

- ``KafkaStreamReader.initialOffset / latestOffset / partitions`` run on the driver,
  in Spark's long-lived Python planner process: they read the broker's watermarks.
- ``KafkaStreamReader.read`` runs in a Python worker on an executor: it assigns one
  partition, seeks to the start offset and consumes exactly ``[start, end)``.

Offsets are ``{"<partition>": <next offset>}`` and live in the query's checkpoint, so
a restarted query resumes exactly where the last committed batch ended. Rows have the
columns of Spark's own Kafka source (key, value, topic, partition, offset, timestamp),
so switching to ``format("kafka")`` needs no downstream change.

An unreachable broker is waited for, with backoff: by the planner for up to
``retryMaxS`` seconds (default 600), by a reading executor for up to
:data:`READ_STALL_S` without progress. Only then does the query fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)

from learntrack.errors import LearnTrackError

SOURCE_NAME = "learntrack_kafka"
SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp"
)
ARROW_BATCH_ROWS = 10_000
#: How long the planner waits for an unreachable broker (option ``retryMaxS``).
RETRY_MAX_S = 600.0
#: How long a reading executor waits without progress before failing its task.
READ_STALL_S = 120.0

log = logging.getLogger(__name__)
T = TypeVar("T")


class KafkaSourceError(LearnTrackError):
    """The source cannot read what it was asked to (missing topic, lost data)."""


def _normalise(options: Any) -> dict[str, str]:
    """Spark lower-cases option keys; normalise once so lookups never miss."""
    return {str(k).lower(): str(v) for k, v in dict(options).items()}


def _client_config(options: dict[str, str]) -> dict[str, Any]:
    conf = {k[len("kafka.") :]: v for k, v in options.items() if k.startswith("kafka.")}
    if "bootstrap.servers" not in conf:
        msg = "option kafka.bootstrap.servers is required"
        raise KafkaSourceError(msg)
    return conf


def _transient(err: Exception) -> bool:
    """Whether a client error may pass once the broker is reachable again."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(err, KafkaException) or not err.args:
        return False
    error = err.args[0]
    if not isinstance(error, KafkaError) or error.fatal():
        return False
    return bool(error.retriable()) or error.code() in {
        KafkaError._TRANSPORT,  # noqa: SLF001
        KafkaError._TIMED_OUT,  # noqa: SLF001
        KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
        KafkaError._RESOLVE,  # noqa: SLF001
        # The broker went away under a request (seen when it stops mid-call):
        # the handle is gone, the client is not; a fresh client retries below.
        KafkaError._DESTROY_BROKER,  # noqa: SLF001
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
    }


def _waiting_for_broker(what: str, fn: Callable[[], T], limit_s: float) -> T:
    """Call ``fn``; while the broker is unreachable, retry with backoff.

    Waits 0.5 s doubling to 10 s between attempts, for up to ``limit_s`` seconds,
    then re-raises the last error.
    """
    deadline = time.monotonic() + limit_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as err:
            if not _transient(err) or time.monotonic() >= deadline:
                raise
            log.warning("%s: %s; retrying in %.1f s", what, err, delay)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


@dataclass(frozen=True)
class KafkaInputPartition(InputPartition):
    """One Kafka partition's offset range ``[start, end)`` (picklable)."""

    topic: str
    partition: int
    start: int
    end: int


class KafkaDataSource(DataSource):
    """``spark.readStream.format("learntrack_kafka")``.

    Options: ``subscribe`` (one topic), ``kafka.*`` (librdkafka settings, e.g.
    ``kafka.bootstrap.servers``), ``startingOffsets`` (``earliest`` | ``latest``),
    ``maxOffsetsPerTrigger``, ``failOnDataLoss`` (default true), ``retryMaxS``
    (how long to wait for an unreachable broker, default 600).
    """

    @classmethod
    def name(cls) -> str:
        """The format name to use in ``readStream.format``."""
        return SOURCE_NAME

    def schema(self) -> str:
        """The columns of Spark's own Kafka source (timestampType aside)."""
        return SCHEMA

    def streamReader(self, schema: Any) -> KafkaStreamReader:  # noqa: N802 - Spark API
        """Create the reader (runs on the driver)."""
        return KafkaStreamReader(_normalise(self.options))


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans offset ranges on the driver; reads them on executors."""

    def __init__(self, options: dict[str, str]) -> None:
        """Parse options; the broker is contacted lazily."""
        self.options = options
        self.topic = options.get("subscribe", "")
        if not self.topic:
            msg = "option subscribe (the topic) is required"
            raise KafkaSourceError(msg)
        self.conf = _client_config(options)
        self.starting = options.get("startingoffsets", "earliest")
        if self.starting not in ("earliest", "latest"):
            msg = f"startingOffsets must be earliest or latest, not {self.starting!r}"
            raise KafkaSourceError(msg)
        max_rows = options.get("maxoffsetspertrigger")
        self.max_rows = int(max_rows) if max_rows else None
        self.fail_on_data_loss = options.get("failondataloss", "true") != "false"
        self.retry_max_s = float(options.get("retrymaxs", RETRY_MAX_S))
        self._consumer: Any = None
        self._target: dict[str, int] | None = None

    # -- driver side --------------------------------------------------------------
    def _planner(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(
                {
                    **self.conf,
                    "group.id": f"learntrack-planner-{self.topic}",
                    "enable.auto.commit": False,
                }
            )
        return self._consumer

    def _watermarks(self) -> dict[str, tuple[int, int]]:
        """(low, high) per partition, waiting out a broker that is unreachable."""
        return _waiting_for_broker(
            f"kafka {self.conf['bootstrap.servers']} (planning {self.topic})",
            self._read_watermarks_afresh_on_error,
            self.retry_max_s,
        )

    def _read_watermarks_afresh_on_error(self) -> dict[str, tuple[int, int]]:
        """:meth:`_read_watermarks`; after a failure the next call gets a new client.

        A client whose broker handle was destroyed mid-request may keep failing;
        the planner's consumer is cheap to rebuild.
        """
        try:
            return self._read_watermarks()
        except Exception:
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    self._consumer.close()
                self._consumer = None
            raise

    def _read_watermarks(self) -> dict[str, tuple[int, int]]:
        """(low, high) per partition; a clear error if the topic does not exist."""
        from confluent_kafka import TopicPartition

        consumer = self._planner()
        meta = consumer.list_topics(self.topic, timeout=10)
        topic_meta = meta.topics.get(self.topic)
        missing = topic_meta is None or topic_meta.error is not None
        if missing or not topic_meta.partitions:
            msg = (
                f"Kafka topic {self.topic!r} does not exist on "
                f"{self.conf['bootstrap.servers']}: create it with "
                "`learntrack topics create`"
            )
            raise KafkaSourceError(msg)
        marks = {}
        for p in sorted(topic_meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10, cached=False
            )
            marks[str(p)] = (int(low), int(high))
        return marks

    def initialOffset(self) -> dict[str, int]:  # noqa: N802 - Spark API
        """Where a new query starts: each partition's low or high watermark."""
        index = 1 if self.starting == "latest" else 0
        return {p: m[index] for p, m in self._watermarks().items()}

    def latestOffset(  # noqa: N802 - Spark API
        self, start: dict[str, int], limit: ReadLimit
    ) -> dict[str, int]:
        """End offsets from the watermarks, capped by the read limit.

        New partitions (not in ``start``) are read from their low watermark. Under
        availableNow the end never passes the target recorded at the start.
        """
        marks = self._watermarks()
        begin = {p: int(start.get(p, low)) for p, (low, _high) in marks.items()}
        end = {p: max(begin[p], high) for p, (_low, high) in marks.items()}
        if self._target is not None:
            end = {p: min(e, self._target.get(p, begin[p])) for p, e in end.items()}
            end = {p: max(e, begin[p]) for p, e in end.items()}
        if isinstance(limit, ReadMaxRows):
            end = _cap(begin, end, limit.max_rows)
        return end

    def getDefaultReadLimit(self) -> ReadLimit:  # noqa: N802 - Spark API
        """``maxOffsetsPerTrigger`` when set, else everything available."""
        if self.max_rows:
            return ReadMaxRows(self.max_rows)
        return ReadAllAvailable()

    def reportLatestOffset(self) -> dict[str, int]:  # noqa: N802 - Spark API
        """The broker's high watermarks (shown as the query's latest offset)."""
        return {p: high for p, (_low, high) in self._watermarks().items()}

    def prepareForTriggerAvailableNow(self) -> None:  # noqa: N802 - Spark API
        """Fix the target: what is in the topic now, and nothing after."""
        self._target = self.reportLatestOffset()

    def partitions(
        self, start: dict[str, int], end: dict[str, int]
    ) -> list[KafkaInputPartition]:
        """One input partition per Kafka partition with new data.

        A partition created after ``start`` was planned begins at its low watermark
        (as :meth:`latestOffset` assumed), not at 0.
        """
        begin = dict(start)
        if any(p not in begin for p in end):
            for p, (low, _high) in self._watermarks().items():
                begin.setdefault(p, low)
        return [
            KafkaInputPartition(self.topic, int(p), int(begin.get(p, 0)), int(e))
            for p, e in sorted(end.items(), key=lambda kv: int(kv[0]))
            if int(e) > int(begin.get(p, 0))
        ]

    def commit(self, end: dict[str, int]) -> None:
        """Nothing to do: the offsets live in Spark's checkpoint."""

    def stop(self) -> None:
        """Close the planner's consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- executor side ------------------------------------------------------------
    def read(self, partition: InputPartition) -> Iterator[Any]:
        """Consume exactly ``[start, end)`` of one partition as Arrow batches.

        Offsets missing inside the range (transaction markers, compaction) are
        skipped; a start offset already deleted by retention is an error unless
        ``failOnDataLoss=false``. Runs in a Python worker on an executor.
        """
        assert isinstance(partition, KafkaInputPartition)  # noqa: S101
        yield from read_range(
            self.conf, partition, fail_on_data_loss=self.fail_on_data_loss
        )


# One consumer per worker process and broker config: Python workers are reused,
# and building a consumer per batch costs a connection and a metadata round-trip.
_CONSUMERS: dict[tuple[tuple[str, str], ...], Any] = {}


def reader_config(conf: dict[str, Any], group: str) -> dict[str, Any]:
    """A range reader's consumer settings: assign + seek, no commits, EOF per partition.

    ``conf``: the cluster's client settings (``settings.kafka.client_config()``).
    """
    return {
        **conf,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "fetch.max.bytes": 64 * 1024 * 1024,
    }


def _worker_consumer(conf: dict[str, Any]) -> Any:
    from confluent_kafka import Consumer

    key = tuple(sorted((k, str(v)) for k, v in conf.items()))
    consumer = _CONSUMERS.get(key)
    if consumer is None:
        consumer = Consumer(reader_config(conf, "learntrack-reader"))
        _CONSUMERS[key] = consumer
    return consumer


def read_range(
    conf: dict[str, Any], part: KafkaInputPartition, *, fail_on_data_loss: bool = True
) -> Iterator[Any]:
    """Yield ``pyarrow.RecordBatch`` es with every message in ``[start, end)``."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    consumer = _worker_consumer(conf)
    tp = TopicPartition(part.topic, part.partition, part.start)

    def low_watermark() -> int:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10, cached=False)[0])
        except KafkaException as err:
            if err.args[0].code() != KafkaError._UNKNOWN_PARTITION:  # noqa: SLF001
                raise
            # A partition added since this (reused) consumer last fetched metadata.
            consumer.list_topics(part.topic, timeout=10)
            return int(consumer.get_watermark_offsets(tp, timeout=10, cached=False)[0])

    low = _waiting_for_broker(
        f"kafka {tp.topic}[{tp.partition}]", low_watermark, READ_STALL_S
    )
    start = part.start
    if start < low:
        if fail_on_data_loss:
            msg = (
                f"{part.topic}[{part.partition}] offsets {start}..{low - 1} were "
                "deleted by retention before they were read "
                "(set failOnDataLoss=false to skip them)"
            )
            raise KafkaSourceError(msg)
        start = low
    if start >= part.end:
        return
    consumer.assign([TopicPartition(part.topic, part.partition, start)])
    try:
        batch = _Columns(part)
        deadline = time.monotonic() + READ_STALL_S
        done = False
        while not done:
            messages = consumer.consume(5000, timeout=1.0)
            if messages:
                deadline = time.monotonic() + READ_STALL_S
            elif time.monotonic() > deadline:
                msg = f"timed out reading {part.topic}[{part.partition}] to {part.end}"
                raise KafkaSourceError(msg)
            done = batch.add(messages)
            if batch.rows >= ARROW_BATCH_ROWS or (done and batch.rows):
                yield batch.flush()
    finally:
        consumer.unassign()


class _Columns:
    """Accumulates consumed messages into Arrow columns (executor side)."""

    def __init__(self, part: KafkaInputPartition) -> None:
        import pyarrow as pa

        self.pa = pa
        self.part = part
        self.schema = pa.schema(
            [
                ("key", pa.binary()),
                ("value", pa.binary()),
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
            ]
        )
        self._reset()

    def _reset(self) -> None:
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.offsets: list[int] = []
        self.times: list[dt.datetime | None] = []

    @property
    def rows(self) -> int:
        return len(self.offsets)

    def add(self, messages: list[Any]) -> bool:
        """Take messages in order; True once the range's end (or EOF) is reached."""
        from confluent_kafka import KafkaError, KafkaException

        end = self.part.end
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    return True
                if _transient(KafkaException(err)):
                    continue  # the broker went away; read_range waits for it
                raise KafkaSourceError(str(err))
            offset = m.offset()
            if offset >= end:
                return True
            self.keys.append(m.key())
            self.values.append(m.value())
            self.offsets.append(offset)
            _ts_type, ts_ms = m.timestamp()
            self.times.append(
                dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC) if ts_ms > 0 else None
            )
            if offset >= end - 1:
                return True
        return False

    def flush(self) -> Any:
        n = self.rows
        batch = self.pa.RecordBatch.from_arrays(
            [
                self.pa.array(self.keys, self.pa.binary()),
                self.pa.array(self.values, self.pa.binary()),
                self.pa.array([self.part.topic] * n, self.pa.string()),
                self.pa.array([self.part.partition] * n, self.pa.int32()),
                self.pa.array(self.offsets, self.pa.int64()),
                self.pa.array(self.times, self.pa.timestamp("us", tz="UTC")),
            ],
            schema=self.schema,
        )
        self._reset()
        return batch


def _cap(begin: dict[str, int], end: dict[str, int], max_rows: int) -> dict[str, int]:
    """Limit the total range to ``max_rows``, prorated by each partition's backlog.

    Like Spark's own Kafka source: every partition advances by the same share of
    what it has waiting (at least one row), so partitions holding the same span of
    event time move through it together (an even split would let a small
    partition run hours ahead in event time, and the watermark would turn the
    others' events late).
    Remainders go to the largest fractions, ties to the lowest partition.
    """
    avail = {p: end[p] - begin[p] for p in end}
    total = sum(avail.values())
    if total <= max_rows:
        return end
    exact = {p: max_rows * a / total for p, a in avail.items()}
    # A share below one row is rounded up, as Spark's Kafka source does (the cap
    # may be passed by a few rows): otherwise a small partition would read nothing
    # until the big ones are drained, and fall hours behind in event time.
    take = {p: 1 if 0 < x < 1 else int(x) for p, x in exact.items()}
    left = max(0, max_rows - sum(take.values()))
    by_fraction = sorted(avail, key=lambda p: (-(exact[p] - take[p]), int(p)))
    for p in by_fraction[:left]:
        take[p] += 1
    return {p: begin[p] + take[p] for p in end}


def checkpoint_offsets(line: str | bytes, topic: str) -> dict[int, int]:
    """Per-partition end offsets from the last line of a query's ``offsets/N`` file.

    Runs wherever a checkpoint is read (the bench's lag, tests). Spark's own
    connector writes ``{topic: {partition: offset}}``, this Python source
    ``{partition: offset}``; both come back as ``{partition: offset}``.
    """
    data = json.loads(line)
    if isinstance(data.get(topic), dict):
        data = data[topic]
    return {int(p): int(o) for p, o in data.items()}
