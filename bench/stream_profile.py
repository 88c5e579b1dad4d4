"""Where a micro-batch's time goes, and the change the profile led to.

Runs in the ``learntrack bench`` process. :func:`profile_table` averages the
seconds of each sink and each step of the stream's batch lines (the steps are
the Spark work that belongs to no sink; ``other`` is the batch minus both);
:func:`cores_table`
shows which processes used the cores meanwhile (from
:class:`bench.stream_run.CpuMeter`). :func:`run_fixed_cost` measures,
on the bench's own SparkSession (the driver is this process), what a small batch
costs end to end.

The executor sinks run inside the batch's one Spark job, so their seconds (the
slowest task's) overlap ``job``; ``other`` is the batch minus the job and the
driver's own writes.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from dataclasses import dataclass

from bench.core import BenchContext, Figure
from bench.stream_run import BatchLine

#: The batch report's sinks: executor sinks (the slowest task's seconds, inside
#: the job), then what the driver does after the job.
SINKS = (
    "mongo.activities",
    "lake",
    "mongo.students",
    "redis",
    "graph",
    "detect",
    "lake.commit",
    "dlq",
    "alerts.mongo",
    "alerts.redis",
    "alerts.graph",
    "alerts.topic",
)
#: The batch report's steps outside the sinks (``BatchReport.steps``).
STEPS = {
    "clock": "clock: the batch's event-time watermark",
    "read": "read: the slowest task's wait for its records (Kafka, JVM -> Arrow)",
    "parse": "parse: the slowest task's validation + de-duplication",
    "job": "job: the batch's one Spark job (executor sinks inside)",
}
REST = "other: between the timed parts"
#: Roles of :class:`~bench.stream_run.CpuMeter`, in table order.
ROLES = (
    "stream: Spark JVM",
    "stream: Python workers",
    "stream: driver (Python)",
    "kafka",
    "mongo",
    "redis",
    "graph",
    "cassandra",
    "bench",
    "other",
)


def profile(batches: list[BatchLine]) -> dict[str, float]:
    """Mean seconds per batch of each sink and of the rest; mean rows."""
    if not batches:
        return {}
    out = {
        k: statistics.fmean([b.sinks.get(k, 0.0) for b in batches])
        for k in (*SINKS, *STEPS)
    }
    total = statistics.fmean([b.seconds for b in batches])
    # The executor sinks and the parse run inside the job: not added again.
    outside = ("clock", "job", *SINKS[SINKS.index("lake.commit") :])
    out[REST] = max(0.0, total - sum(out[k] for k in outside))
    out["batch"] = total
    out["rows"] = statistics.fmean([b.rows for b in batches])
    return out


def profile_table(columns: list[tuple[str, list[BatchLine]]]) -> list[str]:
    """Per part: ms per batch, share of the batch and µs per row, per column."""
    profiles = [(name, profile(b)) for name, b in columns if b]
    if not profiles:
        return []
    head = " | ".join(
        f"{name} ({len(b)} batches): ms (share), µs/row" for name, b in columns if b
    )
    lines = [
        f"| part of a micro-batch | {head} |",
        "|---" + "|---:" * len(profiles) + "|",
    ]
    for part in (*SINKS, *STEPS, REST, "batch"):
        cells = []
        for _name, p in profiles:
            share = p[part] / p["batch"] if p["batch"] else 0
            per_row = p[part] / p["rows"] * 1e6 if p["rows"] else 0
            cells.append(f"{p[part] * 1000:,.0f} ({share:.0%}), {per_row:,.0f}")
        lines.append(f"| {STEPS.get(part, part)} | " + " | ".join(cells) + " |")
    rows = " | ".join(f"{p['rows']:,.0f}" for _n, p in profiles)
    lines.append(f"| rows per batch | {rows} |")
    return lines


def cores_table(columns: list[tuple[str, dict[str, float]]]) -> list[str]:
    """Cores busy per process while measuring, one column per measurement."""
    columns = [(name, c) for name, c in columns if c]
    if not columns:
        return []
    lines = [
        "| process | " + " | ".join(name for name, _c in columns) + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for role in ROLES:
        cells = [f"{c.get(role, 0.0):.2f}" for _n, c in columns]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    total = [f"{sum(c.values()):.2f}" for _n, c in columns]
    lines.append("| all (the machine has 2) | " + " | ".join(total) + " |")
    return lines


@dataclass(frozen=True)
class FixedCost:
    """End-to-end seconds of small batches: what a batch costs whatever its size."""

    rows: int
    seconds: list[float]
    #: The same batches' one Spark job (the executor sinks run inside it).
    job: list[float]


def run_fixed_cost(ctx: BenchContext, rows: int = 1000) -> FixedCost:
    """Time ``StreamJob.process_batch`` on batches of ``rows`` records (driver: here).

    Each batch is new generator records (0.5 % malformed) as Spark's Kafka source
    hands them over (key, value, partition, offset, broker time), one Spark
    partition per Kafka partition, through every sink and detection of the
    stream, on scratch stores. The first batch warms the Python workers up and is
    dropped; the next ``1 + 2 * runs`` are kept.
    """
    from bench.stream_load import Load
    from bench.stream_run import cleanup, isolated, prepare
    from learntrack.producers.generator import delivery_stream
    from learntrack.streaming.job import StreamJob

    settings, _env = isolated(ctx, "fixed")
    prepare(settings)
    spark = ctx.get_spark()
    partitions = settings.kafka.partitions
    load = Load(settings, events_per_cycle=rows * (2 + 2 * ctx.runs))
    load.build()
    job = StreamJob(settings, report=lambda line: ctx.report(f"[fixed cost] {line}"))
    job.open_sinks()
    seconds, jobs = [], []
    try:
        for batch_id in range(2 + 2 * ctx.runs):
            data, _marks = load._chunk(rows, batch_id)  # noqa: SLF001
            now = dt.datetime.now(dt.UTC)
            records = [
                (k, v, settings.topics.activity, hash(k) % partitions, i, now)
                for i, (k, v) in enumerate(delivery_stream(data))
            ]
            raw = spark.createDataFrame(
                records,
                "key binary, value binary, topic string, partition int, "
                "offset long, timestamp timestamp",
            ).repartition(partitions, "partition")
            started = time.perf_counter()
            job.process_batch(raw, batch_id)
            if batch_id:
                seconds.append(time.perf_counter() - started)
                jobs.append(job.batches[-1].steps["job"])
    finally:
        job.close_sinks()
        cleanup(settings)
    return FixedCost(rows, seconds, jobs)


def fixed_cost_figures(cost: FixedCost) -> list[Figure]:
    """The batch's seconds end to end and its Spark job's, as figures."""
    note = (
        f"StreamJob.process_batch on {cost.rows:,} new records, every sink and "
        "detection on, warm workers"
    )
    return [
        Figure.of(f"fixed cost: a {cost.rows:,}-row batch end to end", "s",
                  cost.seconds, note, at_most=0.5),
        Figure.of("fixed cost: its one Spark job", "s", cost.job, note),
    ]  # fmt: skip


def changed_text(cost: FixedCost | None, largest: str | None = None) -> list[str]:
    """The design the profile led to, and the fixed cost of a batch.

    ``largest``: the part of a batch that took longest in the first profiled
    column (a sink or a step), named in the text.
    """
    lines = [
        "**What the profile led to.** The earlier design ran about 15 Spark jobs "
        "a batch (counts, distinct eventIds, a fold with a shuffle, collects) and "
        "a second query for detection that read and parsed every record again; "
        "each Spark job costs 80-100 ms of scheduling on `local[2]` whatever its "
        "size. A batch is now one job: each task parses its partition's records "
        "once and writes every store itself (`docs/streaming.md`).",
    ]
    if cost is None:
        lines[0] += " (The fixed cost of a batch was not measured in this run.)"
    else:
        lines[0] += (
            f" The fixed cost of a batch, measured here: "
            f"{statistics.median(cost.seconds):.2f} s for {cost.rows:,} rows end "
            f"to end (median of {len(cost.seconds)}, "
            f"{min(cost.seconds):.2f}-{max(cost.seconds):.2f}), of which the "
            f"Spark job {statistics.median(cost.job):.2f} s."
        )
    if largest:
        lines += ["", f"The largest part of a batch in this run: "
                  f"{STEPS.get(largest, largest)}."]  # fmt: skip
    return lines
