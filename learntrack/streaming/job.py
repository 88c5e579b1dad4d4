"""``learntrack stream``: Kafka -> Spark Structured Streaming -> every store.

Runs on the Spark driver (the ``learntrack stream`` process). One query reads the
activity topic; each micro-batch (``foreachBatch``) is **one Spark job**:
``mapInArrow`` over the batch's Kafka records, where each task (one partition's
offset range) parses its records once, de-duplicates them and writes every executor
sink of :data:`learntrack.streaming.fanout.TOPOLOGY` (the activity log, the lake's
staged files, the students, Redis, the graph, detection), returning only its
figures, dead letters and alerts. The driver then commits the lake, writes the dead
letters (one Kafka transaction) and the alerts, and records the batch's metrics.

Spark re-runs a batch with the same id and offsets after a crash, and every write
is idempotent (keyed by eventId, fenced by batch id, or versioned by batch id), so
effects are exactly once. A sink that fails with a retryable error is retried with
backoff in the task, then the whole batch is retried (no skipped batch, no crash
loop); a fatal error stops the query. ``docs/streaming.md`` has the design and its
measurements.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from learntrack.config import Settings
from learntrack.errors import LearnTrackError, RetryableSinkError
from learntrack.params import parse_duration
from learntrack.sinks.base import Runs, StreamSink
from learntrack.sinks.mongo import ensure_indexes
from learntrack.sinks.pipeline import PipelineRecorder
from learntrack.streaming import fanout
from learntrack.streaming.detect import EventClock
from learntrack.streaming.kafka_source import SOURCE_NAME, KafkaDataSource

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
    #: Seconds outside the sinks: ``job`` (the batch's one Spark job, wall
    #: clock, the executor sinks included), ``read`` (the slowest task's wait for
    #: its records from Spark: the Kafka read and the JVM -> Arrow hand-over),
    #: ``parse`` (the slowest task's validation and de-duplication), ``clock``
    #: (the event-time watermark, before the job).
    steps: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    #: Produced (broker time) -> stored in every executor store, over the batch's
    #: new events: ``p50``, ``p99``, ``max`` seconds.
    freshness: dict[str, float] = field(default_factory=dict)
    alerts: int = 0

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
        fresh = (
            f"fresh p50 {self.freshness['p50']:.2f} s p99 "
            f"{self.freshness['p99']:.2f} s | "
            if self.freshness
            else ""
        )
        return (
            f"batch {self.batch_id}: {rows:,} rows ({self.invalid:,} to dlq, "
            f"{self.duplicates:,} duplicates) in "
            f"{self.seconds:.2f} s = {rate:,.0f} rows/s | {fresh}{sinks} | "
            f"lag {lag or '-'}"
        )


def _missing_source(err: Exception) -> bool:
    """Whether ``err`` is Spark saying a data source (format) is not installed.

    By the error's condition, never its text: Spark's ``SparkThrowable`` (here a
    ``SparkClassNotFoundException`` reaching Python as a ``Py4JJavaError``, or an
    ``AnalysisException`` when PySpark converts it) names it
    ``DATA_SOURCE_NOT_FOUND``.
    """
    from pyspark.errors import PySparkException

    if isinstance(err, PySparkException):
        return err.getCondition() == "DATA_SOURCE_NOT_FOUND"
    java = getattr(err, "java_exception", None)
    try:
        return java is not None and java.getCondition() == "DATA_SOURCE_NOT_FOUND"
    except Exception:  # noqa: BLE001 - not a SparkThrowable: not ours to name
        return False


def _run_tasks(job: Any) -> fanout.Gathered:
    """Run the batch's one Spark job; its tasks' results, or the retryable error.

    A task whose sink stays unavailable reports it as a typed row
    (:class:`learntrack.streaming.fanout.TaskRetryable`) instead of failing the job,
    so the driver knows the error's kind by type, never by reading Spark's text.
    """
    result = fanout.gather(job.toArrow())
    result.raise_retryable()
    return result


class StreamJob:
    """Builds and runs the streaming query for one settings tree."""

    def __init__(
        self,
        settings: Settings,
        *,
        trigger: str = "500ms",
        available_now: bool = False,
        report: Report = print,
    ) -> None:
        """Configure; nothing starts until :meth:`run`."""
        self.settings = settings
        self.trigger_s = parse_duration(trigger, "trigger").total_seconds()
        self.available_now = available_now
        self.report = report
        self.checkpoint = settings.checkpoint_dir / "stream"
        self.batches: list[BatchReport] = []
        self.alerts_written = 0
        self._stop = threading.Event()
        self._query: Any = None
        self._lag_reader: Any = None
        self._sinks: list[StreamSink] = []
        self._clock = EventClock(settings)
        self._redis: Any = None
        self.metrics = PipelineRecorder(settings, report=report)

    # -- sinks ---------------------------------------------------------------------
    def open_sinks(self) -> None:
        """Build the topology's sinks; open the driver's (executors open their own).

        :meth:`start` calls it; a caller that drives :meth:`process_batch` itself
        (a replay test, the benchmarks) calls it first. Each open is retried like
        a write (a store may still be starting).
        """
        self._sinks = [cls(self.settings) for cls in fanout.sinks(self.settings)]
        for sink in self._sinks:
            if sink.runs_on == Runs.DRIVER:
                self._retry(sink.name, sink.open)

    def close_sinks(self) -> None:
        """Close every open sink (never raises)."""
        for sink in self._sinks:
            if sink.runs_on == Runs.DRIVER:
                with contextlib.suppress(Exception):
                    sink.close()
        self._sinks = []
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None

    def reset(self) -> None:
        """Start over: delete the checkpoints and everything the stream wrote."""
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        # The detection query of releases before 0.6 kept its own checkpoint.
        shutil.rmtree(self.settings.checkpoint_dir / "detect", ignore_errors=True)
        for cls in fanout.TOPOLOGY:
            cls(self.settings).reset()
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
            reader = reader.option(
                "kafka.fetch.max.wait.ms", str(stream.fetch_max_wait_ms)
            )
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
            if stream.source == "jvm" and _missing_source(err):
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

        The same holds for the alerts: the alert topic's commit markers are keyed
        by batch id.
        """
        from learntrack.clients import mongo_client
        from learntrack.sinks.alerts import ALERTS

        if (self.checkpoint / "offsets").exists():
            return
        checks = [("students", {"streamBatch": {"$exists": True}}), (ALERTS, {})]
        with mongo_client(self.settings) as client:
            db = client[self.settings.mongo.database]
            for collection, query in checks:
                if db[collection].find_one(query) is not None:
                    msg = (
                        f"stream state exists but its checkpoint {self.checkpoint} "
                        "is missing: restore the checkpoint, or start over with "
                        "`learntrack stream --reset`"
                    )
                    raise LearnTrackError(msg)

    def start(self, spark: Any) -> Any:
        """Start the query (returns its StreamingQuery)."""
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
        return self._query

    def _triggered(self, writer: Any) -> Any:
        if self.available_now:
            return writer.trigger(availableNow=True)
        return writer.trigger(
            processingTime=f"{int(self.trigger_s * 1000)} milliseconds"
        )

    def queries(self) -> list[Any]:
        """The running queries (one: detection runs inside it)."""
        return [q for q in (self._query,) if q is not None]

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
            if all(not q.isActive for q in queries):
                return
        self.report("stopping after the current batch...")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop.set()

    # -- one micro-batch ---------------------------------------------------------------
    def process_batch(self, df: Any, batch_id: int, *, parsed: bool = False) -> None:
        """One Spark job writes the executor sinks; then the driver's (idempotent).

        ``df``: the batch's Kafka records, or (``parsed``) the parser's rows.
        """
        started = time.perf_counter()
        rep = BatchReport(batch_id)
        with _step(rep, "clock"):
            watermarks = self._watermarks(batch_id)
        for sink in self._sinks:
            sink.prepare(batch_id)
        job = self._tasks(df).mapInArrow(
            fanout.task(self.settings, batch_id, watermarks, parsed=parsed),
            fanout.RESULT_SCHEMA,
        )
        with _step(rep, "job"):
            result = self._retry("tasks", partial(_run_tasks, job))
        rep.valid, rep.invalid = result.valid, result.invalid
        rep.duplicates = result.duplicates
        rep.sinks.update(result.sinks)
        rep.steps["read"] = result.read_s
        rep.steps["parse"] = result.parse_s
        rep.freshness = result.freshness()
        for sink in self._sinks:
            if sink.runs_on == Runs.EXECUTOR:
                if type(sink).commit is StreamSink.commit:
                    continue  # nothing to do on the driver
                emitted = result.emitted.get(sink.name, [])
                self._timed(
                    rep, f"{sink.name}.commit", partial(sink.commit, batch_id, emitted)
                )
            elif result.rows.get(sink.takes):
                rows = result.rows[sink.takes]
                self._timed(rep, sink.name, partial(sink.write_batch, batch_id, rows))
        rep.alerts = len(result.rows.get("alerts", []))
        self.alerts_written += rep.alerts
        if self.settings.detect.enabled:
            self._retry(
                "clock", lambda: self._clock.advance(self._client(), result.newest_ms)
            )
        rep.seconds = time.perf_counter() - started
        rep.lag = self._lag(result.ends)
        self.batches.append(rep)
        self.report(rep.line())
        if rep.alerts:
            self.report(f"alerts batch {batch_id}: {rep.alerts:,} multi-region alerts")
        self.metrics.record(rep)  # Redis + Grafana Live; never raises

    def _tasks(self, df: Any) -> Any:
        """The batch in as many tasks as cores: whole Kafka partitions each.

        A task's fixed cost (its Python worker's round trip, a store round trip per
        sink) is paid per task, so six partitions on two cores cost three waves.
        ``coalesce`` merges partitions without a shuffle; a Kafka partition is
        never split, so each student stays in one task.
        """
        spark = df.sparkSession
        wanted = self.settings.stream.tasks or spark.sparkContext.defaultParallelism
        return df.coalesce(wanted)  # never more partitions than there were

    def _client(self) -> Any:
        from learntrack.clients import redis_client

        if self._redis is None:
            self._redis = redis_client(self.settings)
        return self._redis

    def _watermarks(self, batch_id: int) -> dict[int, int]:
        """The batch's event-time watermarks (fixed on its first attempt)."""
        if not self.settings.detect.enabled:
            return {}

        def read() -> dict[int, int]:
            from learntrack.sinks.redis import classify

            try:
                return self._clock.watermarks(self._client(), batch_id)
            except Exception as err:
                raise classify("clock", err) from err

        return self._retry("redis", read)  # the store that is down

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
                # A task's error names its own sink; a driver step is named here.
                said = str(err) if isinstance(err, fanout.TaskSinkError) else None
                self.report(f"{said or f'{name}: {err}'}; retrying in {delay:.1f} s")
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
