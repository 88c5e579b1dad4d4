"""``learntrack stream``: Kafka -> Spark Structured Streaming -> every store.

Runs on the Spark driver (the ``learntrack stream`` process). Each micro-batch
(``foreachBatch``) is parsed once and cached, then:

1. invalid records -> the dead-letter topic (one Kafka transaction per batch);
2. valid events -> MongoDB ``activities`` (executors, idempotent by eventId) and the
   Parquet lake (staged, then moved into place per batch id);
3. per-student aggregates -> MongoDB ``students``, Redis and the graph (driver,
   each fenced by batch id).

A second query (``learntrack-detect``, :mod:`learntrack.streaming.detect`) reads the
same topic with its own checkpoint and raises multi-region alerts
(:mod:`learntrack.sinks.alerts`); turn it off with ``LEARNTRACK_DETECT__ENABLED``.

Spark re-runs a batch with the same id and offsets after a crash, and every write
above is idempotent, so effects are exactly once. A sink that fails with a
retryable error is retried with backoff inside the batch (no skipped batch, no
crash loop); a fatal error stops the query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from learntrack.config import Settings
from learntrack.errors import LearnTrackError, RetryableSinkError
from learntrack.sinks.alerts import alert_doc, alert_sinks
from learntrack.sinks.dlq import DeadLetterSink
from learntrack.sinks.graph import GraphSink
from learntrack.sinks.lake import LakeSink
from learntrack.sinks.mongo import (
    MongoActivitySink,
    MongoStudentSink,
    ensure_indexes,
)
from learntrack.sinks.redis import RedisScoreSink
from learntrack.streaming import aggregate, detect
from learntrack.streaming.kafka_source import SOURCE_NAME, KafkaDataSource
from learntrack.streaming.metrics import PipelineMetrics
from learntrack.streaming.parse import make_parser, parsed_schema

T = TypeVar("T")
Report = Callable[[str], None]


@dataclass
class BatchReport:
    """What one micro-batch did (printed as one line, kept for tests)."""

    batch_id: int
    valid: int = 0
    invalid: int = 0
    seconds: float = 0.0
    duplicates: int = 0
    sinks: dict[str, float] = field(default_factory=dict)
    #: Seconds of the Spark work that belongs to no sink: ``read`` (the first
    #: job: read, parse, cache, counts), ``dedup``, ``fold`` (per-student
    #: aggregation), ``switch`` (the region switches' events for the graph).
    steps: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """``batch 3: 12,000 rows (12 dlq) in 0.84 s = 14,286 rows/s | ...``."""
        rows = self.valid + self.invalid
        rate = rows / self.seconds if self.seconds else 0.0
        sinks = " ".join(
            f"{k}={v * 1000:.0f}ms" for k, v in {**self.sinks, **self.steps}.items()
        )
        lag = ",".join(
            f"{p}:{n}" for p, n in sorted(self.lag.items(), key=lambda x: int(x[0]))
        )
        return (
            f"batch {self.batch_id}: {rows:,} rows ({self.invalid:,} to dlq, "
            f"{self.duplicates:,} duplicates) in "
            f"{self.seconds:.2f} s = {rate:,.0f} rows/s | {sinks} | lag {lag or '-'}"
        )


def parse_trigger(text: str) -> float:
    """'500ms', '2s', '1m' -> seconds (0 = as fast as possible)."""
    text = text.strip().lower()
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * factor
    if text.replace(".", "", 1).isdigit():
        return float(text)
    msg = f"invalid trigger {text!r}: use e.g. 500ms, 2s, 0"
    raise LearnTrackError(msg)


class StreamJob:
    """Builds and runs the streaming query for one settings tree."""

    def __init__(
        self,
        settings: Settings,
        *,
        trigger: str = "500ms",
        available_now: bool = False,
        master: str | None = None,
        report: Report = print,
    ) -> None:
        """Configure; nothing starts until :meth:`run`."""
        self.settings = settings
        self.trigger_s = parse_trigger(trigger)
        self.available_now = available_now
        self.master = master
        self.report = report
        self.checkpoint = settings.checkpoint_dir / "stream"
        self.detect_checkpoint = settings.checkpoint_dir / "detect"
        self.batches: list[BatchReport] = []
        self.alerts_written = 0
        self._stop = threading.Event()
        self._query: Any = None
        self._detect_query: Any = None
        self._lag_reader: Any = None
        self._sinks: dict[str, Any] = {}
        self._alert_sinks: dict[str, Any] = {}
        self.metrics = PipelineMetrics(settings, report=report)

    # -- sinks ---------------------------------------------------------------------
    def _driver_sinks(self) -> dict[str, Any]:
        return {
            "dlq": DeadLetterSink(self.settings, writer_id=str(self.checkpoint)),
            "students": MongoStudentSink(self.settings),
            "redis": RedisScoreSink(self.settings),
            "graph": GraphSink(self.settings),
            "lake": LakeSink(self.settings),
        }

    def open_sinks(self, names: Collection[str] | None = None) -> None:
        """Open the driver's sinks (all, or only those in ``names``).

        :meth:`start` opens all of them; a caller that drives :meth:`process_batch`
        or :meth:`write_valid` itself (a replay test, the benchmarks) opens them
        here. Each open is retried like a write (a store may still be starting).
        """
        sinks = self._driver_sinks()
        if self.settings.detect.enabled:
            self._alert_sinks = alert_sinks(self.settings, str(self.detect_checkpoint))
            sinks.update({f"alerts.{k}": v for k, v in self._alert_sinks.items()})
        self._sinks = {k: v for k, v in sinks.items() if names is None or k in names}
        for sink in self._sinks.values():
            self._retry(sink.name, sink.open)

    def close_sinks(self) -> None:
        """Close every open sink (never raises)."""
        for sink in self._sinks.values():
            with contextlib.suppress(Exception):
                sink.close()
        self._sinks = {}

    def reset(self) -> None:
        """Start over: delete the checkpoints and everything the stream wrote."""
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        shutil.rmtree(self.detect_checkpoint, ignore_errors=True)
        for sink in [
            MongoActivitySink(self.settings),
            *self._driver_sinks().values(),
            *alert_sinks(self.settings, str(self.detect_checkpoint)).values(),
        ]:
            sink.reset()
        self.report("reset: checkpoint and stream state deleted")

    # -- the query -----------------------------------------------------------------
    def source(self, spark: Any) -> Any:
        """The raw Kafka stream: the Python source, or Spark's JVM connector."""
        s = self.settings
        stream = s.stream
        if stream.source == "jvm":
            reader = spark.readStream.format("kafka")
            for key, value in s.kafka.spark_options().items():
                reader = reader.option(key, value)
        else:
            spark.dataSource.register(KafkaDataSource)
            reader = spark.readStream.format(SOURCE_NAME)
            for key, value in s.kafka.client_config().items():
                reader = reader.option(f"kafka.{key}", value)
        reader = (
            reader.option("subscribe", s.topics.activity)
            .option("startingOffsets", stream.starting_offsets)
            .option("failOnDataLoss", str(stream.fail_on_data_loss).lower())
        )
        if stream.max_offsets_per_trigger:
            reader = reader.option(
                "maxOffsetsPerTrigger", stream.max_offsets_per_trigger
            )
        try:
            loaded = reader.load()
        except Exception as err:
            if stream.source == "jvm" and "kafka" in str(err).lower():
                msg = (
                    "the JVM Kafka connector (spark-sql-kafka) is not available to "
                    "this Spark: add it to the cluster, or set "
                    "LEARNTRACK_STREAM__SOURCE=python"
                )
                raise LearnTrackError(msg) from err
            raise
        return loaded.select(
            "key", "value", "topic", "partition", "offset", "timestamp"
        )

    def _refuse_orphan_state(self) -> None:
        """A lost checkpoint restarts batch ids at 0, which the fences would misread.

        The same holds for the detection query: its alert topic's commit markers
        are keyed by batch id.
        """
        from learntrack.clients import mongo_client
        from learntrack.sinks.alerts import ALERTS

        checks = [(self.checkpoint, "students", {"streamBatch": {"$exists": True}})]
        if self.settings.detect.enabled:
            checks.append((self.detect_checkpoint, ALERTS, {}))
        missing = [c for c in checks if not (c[0] / "offsets").exists()]
        if not missing:
            return
        with mongo_client(self.settings) as client:
            db = client[self.settings.mongo.database]
            for checkpoint, collection, query in missing:
                if db[collection].find_one(query) is not None:
                    msg = (
                        f"stream state exists but its checkpoint {checkpoint} is "
                        "missing: restore the checkpoint, or start over with "
                        "`learntrack stream --reset`"
                    )
                    raise LearnTrackError(msg)

    def start(self, spark: Any) -> Any:
        """Start the queries (returns the fan-out's StreamingQuery)."""
        self._refuse_orphan_state()
        ensure_indexes(self.settings)
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        self.open_sinks()
        writer = (
            self.source(spark)
            .writeStream.foreachBatch(self.process_batch)
            .option("checkpointLocation", str(self.checkpoint))
            .queryName("learntrack-stream")
        )
        self._query = self._triggered(writer).start()
        if self.settings.detect.enabled:
            valid = (
                self.source(spark)
                .mapInArrow(make_parser(self.settings), parsed_schema())
                .where("ok")
            )
            detector = (
                detect.alerts_stream(self.settings, valid)
                .writeStream.foreachBatch(self.process_alerts)
                .option("checkpointLocation", str(self.detect_checkpoint))
                .outputMode("append")
                .queryName("learntrack-detect")
            )
            self._detect_query = self._triggered(detector).start()
        return self._query

    def _triggered(self, writer: Any) -> Any:
        if self.available_now:
            return writer.trigger(availableNow=True)
        return writer.trigger(
            processingTime=f"{int(self.trigger_s * 1000)} milliseconds"
        )

    def queries(self) -> list[Any]:
        """The running queries (fan-out first)."""
        return [q for q in (self._query, self._detect_query) if q is not None]

    def run(self, spark: Any) -> list[BatchReport]:
        """Run until done (available-now), stopped by a signal, or failed."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.start(spark)
            queries = self.queries()
            self._wait(queries)
            for query in queries:
                _stop_gracefully(query)
            for query in queries:
                exc = query.exception()
                if exc is not None:
                    raise LearnTrackError(f"streaming query {query.name} failed: {exc}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close_sinks()
            if self._lag_reader is not None:
                self._lag_reader.close()
                self._lag_reader = None
            self.metrics.close()
        return self.batches

    def _wait(self, queries: list[Any]) -> None:
        """Until a signal, a failed query, or (available-now) all have caught up."""
        while not self._stop.wait(0.25):
            if any(not q.isActive and q.exception() is not None for q in queries):
                return
            done = [not q.isActive for q in queries]
            if all(done) or (any(done) and not self.available_now):
                return
        self.report("stopping after the current batch...")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop.set()

    # -- one micro-batch of the detection query ------------------------------------
    def process_alerts(self, df: Any, batch_id: int) -> None:
        """Write a batch of alerts to every alert sink (driver; idempotent)."""
        rows = df.collect()
        if not rows:
            return
        now = dt.datetime.now(dt.UTC)
        docs = [alert_doc(r, now) for r in rows]
        for name, sink in self._alert_sinks.items():
            self._retry(f"alerts.{name}", partial(sink.write_batch, batch_id, docs))
        self.alerts_written += len(docs)
        self.report(f"alerts batch {batch_id}: {len(docs):,} multi-region alerts")

    # -- one micro-batch ---------------------------------------------------------------
    def process_batch(self, df: Any, batch_id: int) -> None:
        """Parse once, then write every sink (runs on the driver; idempotent)."""
        from pyspark.sql import functions as F  # noqa: N812

        started = time.perf_counter()
        rep = BatchReport(batch_id)
        parsed = df.mapInArrow(make_parser(self.settings), parsed_schema()).persist()
        unique = None
        ends: dict[int, int] = {}
        try:
            with _step(rep, "read"):
                stats = (
                    parsed.groupBy("partition", "ok")
                    .agg(F.count(F.lit(1)).alias("n"), F.max("offset").alias("last"))
                    .collect()
                )
            rep.valid = sum(r["n"] for r in stats if r["ok"])
            rep.invalid = sum(r["n"] for r in stats if not r["ok"])
            for r in stats:
                ends[r["partition"]] = max(ends.get(r["partition"], 0), r["last"] + 1)
            valid = parsed.where("ok")
            with _step(rep, "dedup"):
                distinct = (
                    valid.select("eventId").distinct().count() if rep.valid else 0
                )
                rep.duplicates = rep.valid - distinct
                if rep.duplicates:
                    # Only then the full-row shuffle that picks one copy of each.
                    unique = _first_copy_of_each_event(valid).persist()
                    unique.count()
                    valid = unique
            if rep.invalid:
                bad = parsed.where("NOT ok").select(
                    "key",
                    "raw",
                    "reason",
                    "topic",
                    "partition",
                    "offset",
                    "kafkaTimestamp",
                )
                rows = [r.asDict() for r in bad.collect()]
                self._timed(
                    rep, "dlq", lambda: self._sinks["dlq"].write_batch(batch_id, rows)
                )
            if rep.valid:
                self.write_valid(batch_id, valid, rep)
        finally:
            parsed.unpersist()
            if unique is not None:
                unique.unpersist()
        rep.seconds = time.perf_counter() - started
        rep.lag = self._lag(ends)
        self.batches.append(rep)
        self.report(rep.line())
        self.metrics.record(rep)  # Redis + Grafana Live; never raises

    def write_valid(self, batch_id: int, valid: Any, rep: BatchReport) -> None:
        """Write a batch's valid, de-duplicated events to every store (driver).

        The activity log first (executors): events an earlier batch already stored
        are then left out of the lake and the per-student aggregates. Needs the
        sinks open (:meth:`open_sinks`); each write is timed into ``rep.sinks``.
        """
        settings = self.settings
        earlier: list[str] = []

        def activities() -> None:
            def write_partition(rows: Any) -> Any:
                with MongoActivitySink(settings) as sink:
                    chunk: list[Any] = []
                    for row in rows:
                        chunk.append(row)
                        if len(chunk) >= 5000:  # noqa: PLR2004
                            yield from _write_chunk(sink, batch_id, chunk)
                            chunk = []
                    if chunk:
                        yield from _write_chunk(sink, batch_id, chunk)

            earlier[:] = valid.rdd.mapPartitions(write_partition).collect()

        self._timed(rep, "mongo", activities)
        if earlier:
            # Published again after an earlier batch stored them: count them once.
            rep.duplicates += len(earlier)
            seen = valid.sparkSession.createDataFrame(
                [(e,) for e in earlier], "eventId string"
            )
            valid = valid.join(seen, "eventId", "left_anti")
        self._timed(
            rep, "lake", lambda: self._sinks["lake"].write_batch(batch_id, valid)
        )
        with _step(rep, "fold"):
            students = aggregate.fold(settings, valid)
        self._timed(
            rep,
            "students",
            lambda: self._sinks["students"].write_batch(
                batch_id, aggregate.mongo_rows(students)
            ),
        )
        self._timed(
            rep,
            "redis",
            lambda: self._sinks["redis"].write_batch(
                batch_id, aggregate.redis_rows(students)
            ),
        )
        with _step(rep, "switch"):
            activities_by_student = aggregate.switch_activities(valid, students)
        self._timed(
            rep,
            "graph",
            lambda: self._sinks["graph"].write_batch(
                batch_id, aggregate.graph_rows(students, activities_by_student)
            ),
        )

    def _timed(self, rep: BatchReport, name: str, fn: Callable[[], object]) -> None:
        started = time.perf_counter()
        self._retry(name, fn)
        rep.sinks[name] = time.perf_counter() - started

    def _retry(self, name: str, fn: Callable[[], T]) -> T:
        """Retry retryable sink errors with exponential backoff (bounded)."""
        delay, waited = 0.5, 0.0
        limit = self.settings.stream.retry_max_s
        while True:
            try:
                return fn()
            except RetryableSinkError as err:
                if waited >= limit:
                    raise
                self.report(f"{name}: {err}; retrying in {delay:.1f} s")
            except Exception as err:  # a Spark task failing on an executor
                if "RetryableSinkError" not in str(err) or waited >= limit:
                    raise
                self.report(
                    f"{name}: retryable failure on an executor; retry in {delay:.1f} s"
                )
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)

    def _lag(self, ends: dict[int, int]) -> dict[str, int]:
        """Records behind the broker's high watermark, for partitions in this batch."""
        if not ends:
            return {}
        from confluent_kafka import Consumer, TopicPartition

        if self._lag_reader is None:
            self._lag_reader = Consumer(
                {**self.settings.kafka.client_config(), "group.id": "learntrack-lag"}
            )
        lag = {}
        try:
            for p, end in ends.items():
                _low, high = self._lag_reader.get_watermark_offsets(
                    TopicPartition(self.settings.topics.activity, p), timeout=2
                )
                lag[str(p)] = max(0, high - end)
        except Exception:  # noqa: BLE001 - a metric must never fail a batch
            return {}
        return lag


@contextlib.contextmanager
def _step(rep: BatchReport, name: str) -> Iterator[None]:
    """Add the block's wall-clock seconds to ``rep.steps[name]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        rep.steps[name] = rep.steps.get(name, 0.0) + time.perf_counter() - started


def _stop_gracefully(query: Any, timeout_s: float = 300) -> None:
    """Stop ``query`` once its batch in flight has committed (stop() cancels jobs).

    Waits until the trigger is idle or a newer batch has reported progress than the
    one seen now: back-to-back batches (an available-now run, a backlog) may never
    look idle when polled. A batch that starts in between is cancelled by stop() and
    replayed on the next start, which the sinks make harmless.
    """

    def last_batch() -> int:
        progress = query.lastProgress
        return -1 if not progress else int(progress["batchId"])

    seen = last_batch()
    deadline = time.monotonic() + timeout_s
    while (
        query.isActive
        and query.status.get("isTriggerActive")
        and last_batch() <= seen
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    if query.isActive:
        query.stop()


def _first_copy_of_each_event(valid: Any) -> Any:
    """One row per eventId: the copy with the lowest (partition, offset).

    Deterministic, so a replayed batch keeps the same copy as the original run.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812

    first = Window.partitionBy("eventId").orderBy("partition", "offset")
    return (
        valid.withColumn("_copy", F.row_number().over(first))
        .where(F.col("_copy") == 1)
        .drop("_copy")
    )


def _write_chunk(sink: MongoActivitySink, batch_id: int, chunk: list[Any]) -> list[str]:
    """Insert a chunk (executor); the eventIds an earlier batch already had."""
    return _retry_local(lambda: sink.write_and_find_earlier(batch_id, chunk))[1]


def _retry_local(fn: Callable[[], T], attempts: int = 8) -> T:
    """Executor-side retry for retryable sink errors (Spark retries the task after)."""
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
