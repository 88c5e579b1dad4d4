"""Bench section ``legacy``: the original design's per-event path vs ours, same events.

Runs in the ``learntrack bench`` process against the bench stack; our path runs on
the run's one SparkSession (this process is its driver; the writes run in its
executors' tasks).

The original design (its architecture document) wrote every event as it came, one
round trip per call:

- MongoDB: one ``insert_one`` of the activity document
  ``{studentId, courseId, action, timestamp, region}``;
- Redis: one ``INCRBY`` of the student's engagement score;
- the graph: one session per activity running one statement that MERGEs the
  Student, CREATEs the Activity, MERGEs the Region and creates the PERFORMED and
  IN_REGION relationships.

Each store's per-event loop is timed on its own, from the first event, for at most a
time budget per run (the graph and MongoDB manage a few hundred events/s, so they
see a prefix of the events). The combined per-event rate is ``1 / sum over the
three stores of (seconds per event)``: what one loop doing the three calls for each
event in turn would reach.

Our path gets the same events in micro-batches and writes them exactly as the
stream job does: :meth:`learntrack.streaming.job.StreamJob.process_batch` (one Spark
job per batch; each task writes the activity log, the lake, the students, Redis
and the graph), from a cached DataFrame of parsed rows, one Spark partition per
Kafka partition, i.e. after the parse; detection is off (the original design had
none). ``stream.sustained_rate`` (when the stream section ran) covers the whole
pipeline, and is compared too.

Isolation: a scratch MongoDB database, a scratch Redis database (keys ``lt:*`` and
``benchlegacy:*``), and ids starting with ``benchlegacy-`` in the graph (students,
events, regions), deleted by id. Every store is emptied between the paths and
runs, and at the end.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.core import BenchContext, Figure, Section
from bench.raw import delete_graph, delete_keys, load_note
from learntrack.config import Settings
from learntrack.sinks.redis import PREFIX

MONGO_DATABASE = "learntrack_bench_legacy"
REDIS_DB = 15  # the bench stack's scratch Redis database
REDIS_PREFIX = "benchlegacy:"
ID_PREFIX = "benchlegacy-"
ACTIVITIES = "activities"

#: The original design's graph write, one per activity.
PER_EVENT_GRAPH = """
MERGE (s:Student {studentId: $studentId})
CREATE (a:Activity {eventId: $eventId, action: $action, courseId: $courseId,
                    timestamp: $timestamp, region: $region})
MERGE (r:Region {code: $region})
CREATE (s)-[:PERFORMED]->(a)
CREATE (a)-[:IN_REGION]->(r)
"""


@dataclass(frozen=True)
class Sizes:
    """What one run processes."""

    events: int  # events our path writes (the per-event path, a prefix of them)
    students: int  # distinct students among them
    batch: int  # events per micro-batch on our path
    budget_s: float  # seconds per store per run on the per-event path


def sizes(quick: bool) -> Sizes:
    """Quick: ~5 s per store on the per-event path; full: ~30 s."""
    if quick:
        return Sizes(events=6_000, students=600, batch=6_000, budget_s=1.5)
    return Sizes(events=60_000, students=5000, batch=10_000, budget_s=10.0)


@dataclass
class Event:
    """One generated event, ids prefixed so the graph cleanup finds only ours."""

    eventId: str  # noqa: N815 - the event contract's names
    studentId: str  # noqa: N815
    courseId: str  # noqa: N815
    action: str
    timestamp: Any  # aware datetime
    region: str
    sessionId: str  # noqa: N815
    device: str
    durationMs: int | None  # noqa: N815
    score: float | None


def make_events(size: Sizes) -> list[Event]:
    """Generated events in time order (their own seed), ids prefixed."""
    import datetime as dt

    from learntrack.producers.generator import Generator, GeneratorConfig

    config = GeneratorConfig(students=size.students, events=size.events, seed=23)
    return [
        Event(
            f"{ID_PREFIX}{eid}",
            f"{ID_PREFIX}{sid}",
            cid,
            action,
            dt.datetime.fromtimestamp(ts / 1000, dt.UTC),
            f"{ID_PREFIX}{region}",
            session,
            device,
            duration,
            score,
        )
        for ts, eid, sid, cid, action, region, session, device, duration, score in (
            Generator(config).build().events
        )
    ]


def scratch_settings(settings: Settings, lake_dir: Any) -> Settings:
    """The bench stack's settings, pointed at the scratch database, db and lake."""
    return settings.model_copy(
        update={
            "data_dir": lake_dir,
            "mongo": settings.mongo.model_copy(update={"database": MONGO_DATABASE}),
            "redis": settings.redis.model_copy(update={"db": REDIS_DB}),
            # The original design had no detection: compared without it.
            "detect": settings.detect.model_copy(update={"enabled": False}),
            "spark": settings.spark.model_copy(
                update={"checkpoint_dir": lake_dir / "checkpoints"}
            ),
        }
    )


# -- cleanup --------------------------------------------------------------------------
def clean(settings: Settings, events: list[Event]) -> None:
    """Empty every scratch store (both paths write only there)."""
    from learntrack.clients import graph_driver, mongo_client, redis_client

    with mongo_client(settings) as client:
        client.drop_database(MONGO_DATABASE)
    client = redis_client(settings)
    try:
        for pattern in (f"{PREFIX}*", f"{REDIS_PREFIX}*"):
            delete_keys(client, pattern)
    finally:
        client.close()
    students = sorted({e.studentId for e in events})
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        delete_graph(session, students, ID_PREFIX)
    shutil.rmtree(settings.data_dir / "lake", ignore_errors=True)


# -- the per-event path ---------------------------------------------------------------
def _bounded(
    events: list[Event], budget_s: float, write: Callable[[Event], object]
) -> tuple[int, float]:
    """Call ``write`` per event until the budget is spent: (events, seconds)."""
    started = time.perf_counter()
    deadline = started + budget_s
    done = 0
    for event in events:
        write(event)
        done += 1
        if time.perf_counter() >= deadline:
            break
    return done, time.perf_counter() - started


def per_event_mongo(
    settings: Settings, events: list[Event], budget_s: float
) -> tuple[int, float]:
    """One ``insert_one`` per activity (the original document)."""
    from pymongo import ASCENDING, DESCENDING

    from learntrack.clients import mongo_client

    with mongo_client(settings) as client:
        coll = client[MONGO_DATABASE][ACTIVITIES]
        # The same indexes as ours: the latest-20 query needs them either way.
        coll.create_index([("studentId", ASCENDING), ("timestamp", DESCENDING)])
        coll.create_index([("courseId", ASCENDING), ("timestamp", DESCENDING)])
        return _bounded(
            events,
            budget_s,
            lambda e: coll.insert_one(
                {
                    "studentId": e.studentId,
                    "courseId": e.courseId,
                    "action": e.action,
                    "timestamp": e.timestamp,
                    "region": e.region,
                }
            ),
        )


def per_event_redis(
    settings: Settings, events: list[Event], budget_s: float
) -> tuple[int, float]:
    """One ``INCRBY`` of the student's score per event (tenths of a point)."""
    from learntrack.clients import redis_client

    points = {a: round(w * 10) for a, w in settings.scoring.weights.items()}
    client = redis_client(settings)
    try:
        return _bounded(
            events,
            budget_s,
            lambda e: client.incrby(
                f"{REDIS_PREFIX}score:{e.studentId}", points.get(e.action, 0)
            ),
        )
    finally:
        client.close()


def per_event_graph(
    settings: Settings, events: list[Event], budget_s: float
) -> tuple[int, float]:
    """One session and one statement per activity."""
    from learntrack.clients import graph_driver
    from learntrack.events import utc_iso

    database = settings.graph.database

    def write(driver: Any, e: Event) -> None:
        with driver.session(database=database) as session:
            session.run(
                PER_EVENT_GRAPH,
                studentId=e.studentId,
                eventId=e.eventId,
                action=e.action,
                courseId=e.courseId,
                timestamp=utc_iso(e.timestamp),
                region=e.region,
            ).consume()

    with graph_driver(settings) as driver:
        driver.verify_connectivity()
        return _bounded(events, budget_s, lambda e: write(driver, e))


# -- our path -------------------------------------------------------------------------
def _rows(events: list[Event], partitions: int, topic: str) -> list[tuple[Any, ...]]:
    """Rows of the parsed schema (``ok`` rows, as the parser yields them)."""
    return [
        (
            True,
            None,
            e.studentId.encode(),
            None,
            topic,
            i % partitions,
            i // partitions,
            e.timestamp,
            e.eventId,
            e.studentId,
            e.courseId,
            e.action,
            e.timestamp,
            e.region,
            e.sessionId,
            e.device,
            e.durationMs,
            e.score,
            None,
            1,
        )
        for i, e in enumerate(events)
    ]


@dataclass
class OurRun:
    """Our path over every batch of one run."""

    events: int = 0
    seconds: float = 0.0
    sinks: dict[str, float] = field(default_factory=dict)


def our_path(ctx: BenchContext, settings: Settings, batches: list[Any]) -> OurRun:
    """The stream job's batches (its own code, from parsed rows), timed end to end."""
    from learntrack.sinks.mongo import ensure_indexes
    from learntrack.streaming.job import StreamJob

    ensure_indexes(settings)
    job = StreamJob(settings, report=ctx.report)
    job.open_sinks()
    out = OurRun()
    try:
        for batch_id, (df, n) in enumerate(batches):
            started = time.perf_counter()
            job.process_batch(df, batch_id, parsed=True)
            out.seconds += time.perf_counter() - started
            out.events += n
            for name, seconds in job.batches[-1].sinks.items():
                out.sinks[name] = out.sinks.get(name, 0.0) + seconds
    finally:
        job.close_sinks()
    return out


def cached_batches(
    ctx: BenchContext, events: list[Event], size: Sizes
) -> list[tuple[Any, int]]:
    """Each micro-batch as the stream holds it: cached, de-duplicated valid rows."""
    from learntrack.streaming.parse import parsed_schema

    spark = ctx.get_spark()
    partitions = ctx.settings.kafka.partitions
    out = []
    for start in range(0, len(events), size.batch):
        chunk = events[start : start + size.batch]
        rows = _rows(chunk, partitions, ctx.settings.topics.activity)
        df = (
            spark.createDataFrame(rows, parsed_schema())
            .repartition(partitions, "partition")  # a task per Kafka partition
            .persist()
        )
        out.append((df, df.count()))
    return out


# -- the section ----------------------------------------------------------------------
@dataclass
class Samples:
    """Per-run rates."""

    mongo: list[float] = field(default_factory=list)
    redis: list[float] = field(default_factory=list)
    graph: list[float] = field(default_factory=list)
    combined: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    per_event_counts: dict[str, list[int]] = field(default_factory=dict)
    our_sinks: dict[str, list[float]] = field(default_factory=dict)
    ours_without_lake: list[float] = field(default_factory=list)
    write_concern: str = "the server's default"


def _one_run(
    ctx: BenchContext,
    *,
    settings: Settings,
    events: list[Event],
    batches: list[tuple[Any, int]],
    size: Sizes,
    samples: Samples,
) -> None:
    clean(settings, events)
    seconds_per_event = 0.0
    for name, fn, kept in (
        ("mongo", per_event_mongo, samples.mongo),
        ("redis", per_event_redis, samples.redis),
        ("graph", per_event_graph, samples.graph),
    ):
        n, seconds = fn(settings, events, size.budget_s)
        kept.append(n / seconds)
        samples.per_event_counts.setdefault(name, []).append(n)
        seconds_per_event += seconds / n
        ctx.report(f"[legacy] per-event {name}: {n:,} events in {seconds:.1f} s")
    combined = 1 / seconds_per_event
    samples.combined.append(combined)
    clean(settings, events)
    ours = our_path(ctx, settings, batches)
    rate = ours.events / ours.seconds
    samples.ours.append(rate)
    samples.ratio.append(rate / combined)
    for name, seconds in ours.sinks.items():
        samples.our_sinks.setdefault(name, []).append(ours.events / seconds)
    lake_s = ours.sinks.get("lake", 0.0)
    samples.ours_without_lake.append(ours.events / (ours.seconds - lake_s))
    stores = " ".join(f"{k}={v:.1f}s" for k, v in ours.sinks.items())
    ctx.report(
        f"[legacy] ours: {ours.events:,} events in {ours.seconds:.1f} s "
        f"({rate:,.0f}/s; {stores}); per-event combined {combined:,.0f}/s"
    )


def run(ctx: BenchContext) -> Section:
    """The per-event path and ours on the same events; the speedup."""
    size = sizes(ctx.quick)
    settings = scratch_settings(ctx.settings, ctx.work_dir / "legacy")
    events = make_events(size)
    samples = Samples()
    batches = cached_batches(ctx, events, size)
    try:
        # Untimed, one batch: the first batches of a SparkSession start Python
        # workers and warm the JVMs up; the stream being compared runs warm.
        warm = cached_batches(ctx, events[: size.batch], size)
        clean(settings, events)
        our_path(ctx, settings, warm)
        for df, _n in warm:
            df.unpersist()
        samples.write_concern = write_concern(settings)
        for _ in range(ctx.runs):
            _one_run(
                ctx,
                settings=settings,
                events=events,
                batches=batches,
                size=size,
                samples=samples,
            )
    finally:
        for df, _n in batches:
            df.unpersist()
        clean(settings, events)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    section = Section("legacy", "The original design's path on the same events")
    section.figures = _figures(ctx, size, samples)
    section.text = _text(size, samples)
    section.text.append(load_note())
    combined = statistics.median(samples.combined)
    ctx.results["legacy.per_event_rate"] = combined
    ctx.results["legacy.our_rate"] = statistics.median(samples.ours)
    ctx.results["legacy.speedup"] = statistics.median(samples.ratio)
    return section


def _figures(ctx: BenchContext, size: Sizes, s: Samples) -> list[Figure]:
    budget = f"from the first event, at most {size.budget_s:g} s per run"
    figures = [
        Figure.of(
            "per-event MongoDB insert_one",
            "events/s",
            s.mongo,
            f"one insert_one per activity (the original 5-field document, same two "
            f"indexes and write concern as ours: {s.write_concern}), {budget}",
        ),
        Figure.of(
            "per-event Redis INCRBY",
            "events/s",
            s.redis,
            f"one INCRBY of the student's score per event, {budget}",
        ),
        Figure.of(
            "per-event graph session",
            "events/s",
            s.graph,
            "one session + one statement per activity: MERGE Student, CREATE "
            f"Activity, MERGE Region, PERFORMED + IN_REGION; {budget}",
        ),
        Figure.of(
            "per-event path, three stores",
            "events/s",
            s.combined,
            "1 / (sum of the three stores' seconds per event): one loop doing the "
            "three calls per event in turn; each store timed on its own",
        ),
        Figure.of(
            "our path, same events",
            "events/s",
            s.ours,
            f"{size.events:,} events ({size.students:,} students) in micro-batches "
            f"of {size.batch:,}, written by the stream job's own batch writer "
            "(activities on the executors, lake, fold, students, Redis, graph), "
            "from cached valid rows (parse and de-duplication not included)",
        ),
        Figure.of(
            "speedup: ours / per-event",
            "x",
            s.ratio,
            "per run: our events/s over the per-event path's combined events/s",
            at_least=20,
        ),
    ]
    sustained = ctx.results.get("stream.sustained_rate")
    if sustained:
        figures.append(
            Figure.of(
                "end-to-end sustained / per-event",
                "x",
                [float(sustained) / c for c in s.combined],
                f"the stream section's sustained rate ({float(sustained):,.0f} "
                "events/s, Kafka to every store) over each run's per-event combined "
                "rate",
            )
        )
    return figures


def _text(size: Sizes, s: Samples) -> list[str]:
    """Per store: what the per-event path and ours reached (medians)."""
    counts = {k: int(statistics.median(v)) for k, v in s.per_event_counts.items()}
    ours = {k: statistics.median(v) for k, v in s.our_sinks.items()}
    lines = [
        "Per store (medians; ours = the batch's events over the time that store's "
        "writes took, so the fold and the switch lookup are outside every store):",
        "",
        "| store | per-event events/s | events per run | ours events/s |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        ("MongoDB", statistics.median(s.mongo), counts.get("mongo", 0), "mongo"),
        ("Redis", statistics.median(s.redis), counts.get("redis", 0), "redis"),
        ("graph", statistics.median(s.graph), counts.get("graph", 0), "graph"),
    ]
    for label, rate, n, key in rows:
        lines.append(f"| {label} | {rate:,.0f} | {n:,} | {ours.get(key, 0):,.0f} |")
    for key in ("students", "lake"):
        if key in ours:
            lines.append(f"| ours only: {key} | - | - | {ours[key]:,.0f} |")
    lines += [
        "",
        "Our path without the lake (which the original design did not have; the "
        "stream writes it in sequence, so its time subtracts): "
        f"{statistics.median(s.ours_without_lake):,.0f} events/s, "
        f"{statistics.median(s.ours_without_lake) / statistics.median(s.combined):.1f}"
        "x the per-event path (medians).",
        "",
    ]
    return lines


def write_concern(settings: Settings) -> str:
    """The deployment's default write concern, as both paths get it."""
    from learntrack.clients import mongo_client

    try:
        with mongo_client(settings) as client:
            found = client.admin.command("getDefaultRWConcern")
        concern = found.get("defaultWriteConcern") or {}
        return "w: " + str(concern.get("w", 1))
    except Exception:  # noqa: BLE001 - a note, never a failure
        return "the server's default"
