"""Bench section ``raw``: what bounds the pipeline, measured with no processing.

Runs in the ``learntrack bench`` process against the bench stack (its own data dir
and ports), in the same run as the other sections: the ceilings the stream is
compared with. Every figure is a median of ``ctx.runs`` runs with its spread:

1. the broker: pre-built events produced with the SDK's producer configuration
   until delivered, then read back by assign + seek (the source's consumer
   settings);
2. MongoDB ``insert_many`` of activity documents (the sink's indexes, chunks of
   5,000, ``ordered=False``);
3. Redis pipelines of the commands the score sink issues;
4. the graph: ``UNWIND $rows ... MERGE`` batches shaped like the graph sink's
   access upserts, for new students and for students that exist;
5. Cassandra: prepared INSERTs through ``execute_concurrent``;
6. the Spark Kafka source alone (our Python data source as the stream job builds
   it, available-now, a ``noop`` sink), timed inside the query's triggers after a
   warm-up query: the run's one SparkSession, so this process is the driver.

Nothing here touches what the stream writes: a bench topic, a scratch collection,
keys under ``benchraw:``, graph nodes whose ids start with ``benchraw-`` (deleted by
id through the unique indexes), a scratch Cassandra table (and the keyspace, if
it had to be created). Everything is deleted at the end, also after a failure.
Medians go to ``ctx.results["raw.<name>"]`` (``raw.mongo_insert_rate`` is what the
stream section compares with).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import statistics
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.core import BenchContext, Figure, Section
from learntrack.config import Settings
from learntrack.errors import LearnTrackError

RAW_TOPIC = "bench.raw"
WARMUP_TOPIC = "bench.raw.warmup"
WARMUP_RECORDS = 6000
#: Enough for a run and a read-back; the broker keeps everything in memory.
RAW_TOPIC_RETENTION_MS = 600_000
MONGO_DB = "_bench_raw"  # suffix of the scratch database
MONGO_CHUNK = 5000  # what the stream's activity writer inserts at a time
REDIS_PREFIX = "benchraw:"
REDIS_PIPELINE = 1000  # commands per pipeline round trip
GRAPH_PREFIX = "benchraw-"
GRAPH_CHUNK = 500  # rows per UNWIND (the graph sink's chunk)
CASSANDRA_TABLE = "bench_raw_writes"
DAY_S = 86_400

#: The access upsert of the graph sink, without its batch fence and read-back.
GRAPH_MERGE = """
UNWIND $rows AS r
MERGE (s:Student {studentId: r.sid})
SET s.lastSeen = r.last, s.lastRegion = r.region, s.lastEventId = r.eventId
MERGE (g:Region {code: r.region})
MERGE (s)-[a:ACCESSED_FROM]->(g)
ON CREATE SET a.firstSeen = r.first, a.lastSeen = r.last, a.count = r.n
ON MATCH SET a.count = a.count + r.n,
  a.lastSeen = CASE WHEN r.last > a.lastSeen THEN r.last ELSE a.lastSeen END
"""


@dataclass(frozen=True)
class Sizes:
    """How much each raw figure moves per run."""

    events: int  # distinct generated events (payloads are reused beyond that)
    broker: int  # records produced then consumed
    mongo: int  # documents inserted
    redis_events: int  # events turned into score-sink commands
    graph_rows: int  # (student, region) rows merged
    cassandra: int  # rows inserted
    spark: int  # records read by the Spark source


def sizes(quick: bool) -> Sizes:
    """Quick: the whole section in well under a minute; full: a few minutes."""
    if quick:
        return Sizes(30_000, 50_000, 30_000, 10_000, 500, 2_000, 30_000)
    return Sizes(100_000, 300_000, 100_000, 50_000, 2_000, 8_000, 300_000)


def _events(count: int) -> list[Any]:
    """Realistic generated events (compact tuples; seed of its own)."""
    from learntrack.producers.generator import Generator, GeneratorConfig

    return (
        Generator(GeneratorConfig(students=5000, events=count, seed=11)).build().events
    )


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


# -- the broker ---------------------------------------------------------------------
def producer_config(settings: Settings) -> dict[str, Any]:
    """The SDK's producer configuration, asking for failure reports only.

    Delivery reports are asked for failures only: a raw figure pays no Python
    callback per message; completeness is checked on the watermarks instead.
    """
    from learntrack.producers.sdk import producer_config as sdk_config

    return {**sdk_config(settings), "delivery.report.only.error": True}


def _fresh_topic(settings: Settings, name: str) -> None:
    from learntrack.topics import create_topic, delete_topics

    delete_topics(settings, [name])
    create_topic(
        settings, name, settings.kafka.partitions, retention_ms=RAW_TOPIC_RETENTION_MS
    )


def _topic_count(settings: Settings, topic: str) -> int:
    """Records in ``topic`` (high - low watermark, summed)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": "learntrack-bench-raw"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False
            )
            total += high - low
        return total
    finally:
        consumer.close()


def produce(
    settings: Settings, topic: str, records: list[tuple[bytes, bytes]], count: int
) -> float:
    """Seconds to produce ``count`` records (cycling ``records``) until delivered."""
    from confluent_kafka import Producer

    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        failures.append(str(err))

    producer = Producer({**producer_config(settings), "on_delivery": on_delivery})
    n = len(records)
    started = time.perf_counter()
    for i in range(count):
        key, value = records[i % n]
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    if left or failures:
        msg = f"{left} records left, {len(failures)} failed: {failures[:1]}"
        raise LearnTrackError(msg)
    return seconds


def consume(settings: Settings, topic: str, expected: int) -> float:
    """Seconds to read every record of ``topic`` by assign + seek to the start."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from learntrack.streaming.kafka_source import reader_config

    # The stream's own range-reader settings: the raw limit of the same read.
    consumer = Consumer(
        reader_config(settings.kafka.client_config(), "learntrack-bench-raw")
    )
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        read = 0
        deadline = time.monotonic() + 30
        while len(done) < len(parts):
            messages = consumer.consume(10_000, timeout=1.0)
            if messages:
                deadline = time.monotonic() + 30
            elif time.monotonic() > deadline:
                msg = f"no progress reading {topic} ({read:,} read)"
                raise LearnTrackError(msg)
            for m in messages:
                err = m.error()
                if err is None:
                    read += 1
                elif err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    done.add(int(m.partition() or 0))
                else:
                    raise LearnTrackError(f"reading {topic}: {err}")
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if read != expected:
        msg = f"read {read:,} records of {topic}, expected {expected:,}"
        raise LearnTrackError(msg)
    return seconds


def bench_broker(
    settings: Settings, records: list[tuple[bytes, bytes]], count: int, runs: int
) -> list[Figure]:
    """Produce ``count`` records into a fresh topic, then read them back, per run."""
    produced, consumed = [], []
    for _ in range(runs):
        _fresh_topic(settings, RAW_TOPIC)
        produced.append(_rate(count, produce(settings, RAW_TOPIC, records, count)))
        stored = _topic_count(settings, RAW_TOPIC)
        if stored != count:
            msg = f"the broker holds {stored:,} records, {count:,} were produced"
            raise LearnTrackError(msg)
        consumed.append(_rate(count, consume(settings, RAW_TOPIC, count)))
    size = sum(len(v) for _k, v in records) / len(records)
    parts = settings.kafka.partitions
    return [
        Figure.of(
            "broker produce (one producer, delivered)",
            "records/s",
            produced,
            f"{count:,} pre-built events (~{size:.0f} B) into {parts} partitions, "
            "the SDK's producer settings (acks=all, idempotent, lz4), until flush",
        ),
        Figure.of(
            "broker consume (assign + seek)",
            "records/s",
            consumed,
            f"the same {count:,} records read back by one consumer, every partition "
            "to end-of-partition; no decoding",
        ),
    ]


# -- MongoDB --------------------------------------------------------------------------
def activity_docs(events: list[Any]) -> list[dict[str, Any]]:
    """Documents shaped as the activity sink writes them (``_id`` = eventId)."""
    docs = []
    for i, event in enumerate(events):
        ts, eid, sid, cid, action, region, session, device, dur, score = event
        doc: dict[str, Any] = {
            "firstBatch": 0,
            "_id": eid,
            "eventId": eid,
            "studentId": sid,
            "courseId": cid,
            "action": action,
            "timestamp": dt.datetime.fromtimestamp(ts / 1000, dt.UTC),
            "region": region,
            "source": {"partition": i % 6, "offset": i // 6},
            "sessionId": session,
            "device": device,
        }
        if dur is not None:
            doc["durationMs"] = dur
        if score is not None:
            doc["score"] = score
        docs.append(doc)
    return docs


def _mongo_settings(settings: Settings) -> Settings:
    """The stream's settings with a scratch database of the raw section's own."""
    from bench.core import settings_with

    return settings_with(LEARNTRACK_MONGO__DATABASE=settings.mongo.database + MONGO_DB)


def _mongo_collection(client: Any, settings: Settings) -> Any:
    """A fresh activity log with the product's own indexes (``ensure_indexes``)."""
    from learntrack.sinks.mongo import ACTIVITIES, ensure_indexes

    client.drop_database(settings.mongo.database)
    ensure_indexes(settings)
    return client[settings.mongo.database][ACTIVITIES]


def bench_mongo(settings: Settings, events: list[Any], count: int, runs: int) -> Figure:
    """insert_many(ordered=False) in chunks of 5,000 into an indexed collection."""
    from learntrack.clients import mongo_client

    docs = activity_docs(events[:count])
    rates = []
    settings = _mongo_settings(settings)
    with mongo_client(settings) as client:
        try:
            for _ in range(runs):
                coll = _mongo_collection(client, settings)
                started = time.perf_counter()
                for i in range(0, len(docs), MONGO_CHUNK):
                    coll.insert_many(docs[i : i + MONGO_CHUNK], ordered=False)
                rates.append(_rate(len(docs), time.perf_counter() - started))
                if coll.estimated_document_count() != len(docs):
                    msg = f"the scratch log does not hold the {len(docs):,} docs"
                    raise LearnTrackError(msg)
        finally:
            client.drop_database(settings.mongo.database)
    return Figure.of(
        "MongoDB insert_many",
        "docs/s",
        rates,
        f"{len(docs):,} activity documents (the sink's shape, _id = eventId) into an "
        "empty collection with the sink's two indexes; ordered=False, chunks of "
        "5,000, one client, one chunk at a time",
    )


# -- Redis ----------------------------------------------------------------------------
def score_commands(
    events: list[Any], weights: dict[str, float]
) -> list[tuple[Any, ...]]:
    """Per event, the commands the score sink's script issues, as plain commands.

    ZINCRBY on the global and the course leaderboard, HINCRBY of the student's
    total and action count, HSET of its last time, HINCRBY + EXPIREAT of the
    per-minute counter (the sink does these per student, inside a Lua script).
    """
    p = REDIS_PREFIX
    out: list[tuple[Any, ...]] = []
    for ts, _eid, sid, cid, action, *_rest in events:
        score = float(weights.get(action, 0.0))
        minute = ts // 60_000
        day = minute * 60 // DAY_S
        student = f"{p}student:{sid}"
        recent = f"{p}recent:{sid}:{day}"
        out += [
            ("ZINCRBY", f"{p}lb:global", score, sid),
            ("ZINCRBY", f"{p}lb:course:{cid}", score, sid),
            ("HINCRBY", student, "total", 1),
            ("HINCRBY", student, f"a:{action}", 1),
            ("HSET", student, "lastAt", ts),
            ("HINCRBY", recent, str(minute), 1),
            ("EXPIREAT", recent, (day + 3) * DAY_S),
        ]
    return out


def delete_keys(client: Any, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (SCAN, then DEL by 1,000)."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:  # noqa: PLR2004
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


def bench_redis(settings: Settings, events: list[Any], count: int, runs: int) -> Figure:
    """The score sink's kinds of commands, pipelined (no transaction), ops/s."""
    from learntrack.clients import redis_client

    commands = score_commands(events[:count], settings.scoring.weights)
    rates = []
    client = redis_client(settings)
    try:
        for _ in range(runs):
            delete_keys(client, f"{REDIS_PREFIX}*")
            started = time.perf_counter()
            for i in range(0, len(commands), REDIS_PIPELINE):
                pipe = client.pipeline(transaction=False)
                for command in commands[i : i + REDIS_PIPELINE]:
                    pipe.execute_command(*command)
                pipe.execute()
            rates.append(_rate(len(commands), time.perf_counter() - started))
    finally:
        delete_keys(client, f"{REDIS_PREFIX}*")
        client.close()
    return Figure.of(
        "Redis pipelined writes",
        "ops/s",
        rates,
        f"an op is one command: {len(commands):,} commands for {count:,} events (7 "
        "each: 2 ZINCRBY, 3 HINCRBY, HSET, EXPIREAT, the score sink's kinds), "
        f"pipelines of {REDIS_PIPELINE:,} without MULTI, one client",
    )


# -- the graph ------------------------------------------------------------------------
def graph_rows(events: list[Any], count: int, run: int) -> list[dict[str, Any]]:
    """``count`` (student, region) rows as the graph sink's access upsert gets them.

    Student ids and region codes carry ``benchraw-<run>-`` so each run creates its
    own nodes and the cleanup deletes only those.
    """
    from learntrack.events import utc_iso

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for ts, eid, sid, _cid, _action, region, *_rest in events:
        key = (sid, region)
        at = utc_iso(dt.datetime.fromtimestamp(ts / 1000, dt.UTC))
        row = rows.get(key)
        if row is None:
            if len(rows) >= count:
                continue
            rows[key] = {
                "sid": f"{GRAPH_PREFIX}{run}-{sid}",
                "region": f"{GRAPH_PREFIX}{region}",
                "eventId": eid,
                "n": 1,
                "first": at,
                "last": at,
            }
        else:
            row["n"] += 1
            row["last"] = max(row["last"], at)
    return list(rows.values())


def _merge_all(session: Any, rows: list[dict[str, Any]]) -> float:
    def write(tx: Any, chunk: list[dict[str, Any]]) -> None:
        tx.run(GRAPH_MERGE, rows=chunk).consume()

    started = time.perf_counter()
    for i in range(0, len(rows), GRAPH_CHUNK):
        session.execute_write(write, rows[i : i + GRAPH_CHUNK])
    return time.perf_counter() - started


def delete_graph(session: Any, student_ids: Sequence[str], region_prefix: str) -> None:
    """Delete the given Students with their Activities, then Regions by prefix.

    Students are found by id through the unique index and Activities through
    their PERFORMED edges: a ``STARTS WITH`` scan deleted ~10x slower on
    ArcadeDB. Regions are few, so their prefix scan is cheap.
    """

    def by_ids(tx: Any, query: str, ids: list[str]) -> None:
        tx.run(query, ids=ids).consume()

    ids = list(student_ids)
    for query in (
        "UNWIND $ids AS id MATCH (:Student {studentId: id})-[:PERFORMED]->(a:Activity) "
        "DETACH DELETE a",
        "UNWIND $ids AS id MATCH (s:Student {studentId: id}) DETACH DELETE s",
    ):
        for i in range(0, len(ids), 1000):
            session.execute_write(by_ids, query, ids[i : i + 1000])
    session.run(
        "MATCH (n:Region) WHERE n.code STARTS WITH $p DETACH DELETE n", p=region_prefix
    ).consume()


def bench_graph(
    settings: Settings, events: list[Any], count: int, runs: int
) -> list[Figure]:
    """UNWIND MERGE batches: first new students, then the same rows again."""
    from learntrack.clients import graph_driver
    from learntrack.sinks.graph import SCHEMA

    created, matched = [], []
    made: list[str] = []
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        try:
            for statement in SCHEMA:  # the sink's constraints (idempotent)
                session.run(statement).consume()
            for run in range(runs):
                rows = graph_rows(events, count, run)
                made += [r["sid"] for r in rows]
                created.append(_rate(len(rows), _merge_all(session, rows)))
                matched.append(_rate(len(rows), _merge_all(session, rows)))
        finally:
            delete_graph(session, made, GRAPH_PREFIX)
    note = (
        f"{count:,} (student, region) rows in UNWIND batches of {GRAPH_CHUNK}, one "
        "transaction each: MERGE Student, SET, MERGE Region, MERGE ACCESSED_FROM "
        "(the graph sink's access upsert without its fence)"
    )
    return [
        Figure.of("graph UNWIND MERGE, new students", "rows/s", created, note),
        Figure.of(
            "graph UNWIND MERGE, existing students",
            "rows/s",
            matched,
            "the same rows again right after: every MERGE matches",
        ),
    ]


# -- Cassandra ------------------------------------------------------------------------
def _scratch_cql(keyspace: str, table: Any) -> dict[str, str]:
    """The scratch table's statements (driver side).

    Only identifiers are interpolated: the keyspace is validated by the settings (a
    plain identifier), the table and its columns are constants of the code; every
    value is a bound ``?`` parameter.
    """
    columns = ", ".join(c.name for c in table.columns)
    marks = ", ".join("?" for _ in table.columns)
    name = f"{keyspace}.{table.name}"
    return {
        "insert": f"INSERT INTO {name} ({columns}) VALUES ({marks})",  # noqa: S608
        "drop_table": f"DROP TABLE IF EXISTS {name}",
        "drop_keyspace": f"DROP KEYSPACE IF EXISTS {keyspace}",
    }


def bench_cassandra(settings: Settings, count: int, runs: int) -> Figure:
    """Prepared INSERTs of engagement-shaped rows through execute_concurrent."""
    from cassandra.concurrent import execute_concurrent_with_args

    from learntrack.clients import cassandra_session
    from learntrack.sinks.cassandra import (
        CONCURRENCY,
        ENGAGEMENT,
        _existing_tables,
        keyspace_cql,
    )

    keyspace = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    made_keyspace = False
    table = dataclasses.replace(ENGAGEMENT, name=CASSANDRA_TABLE)
    cql = _scratch_cql(keyspace, table)
    rates = []
    try:
        made_keyspace = _existing_tables(session, keyspace) is None
        session.execute(keyspace_cql(keyspace))
        session.execute(cql["drop_table"])  # a scratch table left by a crashed run
        session.execute(table.create_cql(keyspace))
        insert = session.prepare(cql["insert"])
        first = dt.date(2026, 1, 1)
        for run in range(runs):
            params = [
                (
                    f"R{run}C{i % 200:03d}",
                    first + dt.timedelta(days=i // 200),
                    1000 + i,
                    50 + i % 40,
                    i % 70,
                    12.5,
                    {"page_view": 600, "quiz_attempt": 70, "video_play": 200},
                )
                for i in range(count)
            ]
            started = time.perf_counter()
            execute_concurrent_with_args(
                session, insert, params, concurrency=CONCURRENCY
            )
            rates.append(_rate(count, time.perf_counter() - started))
    finally:
        try:
            if made_keyspace:
                session.execute(cql["drop_keyspace"])
            else:
                session.execute(cql["drop_table"])
        finally:
            cluster.shutdown()
    return Figure.of(
        "Cassandra concurrent writes",
        "rows/s",
        rates,
        f"{count:,} prepared INSERTs of course_engagement-shaped rows (map column "
        f"included) into a scratch table, execute_concurrent with {CONCURRENCY} in "
        f"flight, protocol v{settings.cassandra.protocol_version}, consistency "
        f"{settings.cassandra.consistency}",
    )


# -- the Spark source -----------------------------------------------------------------
def _read_once(
    ctx: BenchContext, settings: Settings, name: str
) -> tuple[int, float, float]:
    """One available-now query over the topic into ``noop``.

    Returns (rows, seconds inside the query's triggers, seconds start to end).
    """
    from learntrack.streaming.job import StreamJob

    spark = ctx.get_spark()
    checkpoint = ctx.work_dir / f"raw-source-{name}"
    shutil.rmtree(checkpoint, ignore_errors=True)
    job = StreamJob(settings, available_now=True, report=lambda _m: None)
    try:
        started = time.perf_counter()
        query = (
            job.source(spark)
            .writeStream.format("noop")
            .option("checkpointLocation", str(checkpoint))
            .trigger(availableNow=True)
            .queryName(f"bench-raw-source-{name}")
            .start()
        )
        query.awaitTermination()
        wall = time.perf_counter() - started
        if query.exception() is not None:
            raise LearnTrackError(f"source query failed: {query.exception()}")
        progress = query.recentProgress
        rows = sum(int(p.get("numInputRows", 0)) for p in progress)
        triggers = sum(
            int(p.get("durationMs", {}).get("triggerExecution", 0)) for p in progress
        )
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return rows, triggers / 1000, wall


def _on_topic(settings: Settings, topic: str) -> Settings:
    """``settings`` with the stream's topic replaced (the source reads that one)."""
    return settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"activity": topic})}
    )


def bench_spark_source(
    ctx: BenchContext, records: list[tuple[bytes, bytes]], count: int
) -> tuple[Figure, str]:
    """Our Python Kafka source reading ``count`` records, nothing else.

    A first query over a small topic starts the Python workers and the planner
    (seconds, paid once per SparkSession) so the timed queries are warm.
    """
    warmup = _on_topic(ctx.settings, WARMUP_TOPIC)
    settings = _on_topic(ctx.settings, RAW_TOPIC)
    _fresh_topic(warmup, WARMUP_TOPIC)
    produce(warmup, WARMUP_TOPIC, records, WARMUP_RECORDS)
    _rows, _triggers, warm_s = _read_once(ctx, warmup, "warmup")
    _fresh_topic(settings, RAW_TOPIC)
    produce(settings, RAW_TOPIC, records, count)
    rates, walls = [], []
    for run in range(ctx.runs):
        rows, seconds, wall = _read_once(ctx, settings, str(run))
        if rows != count:
            msg = f"the source read {rows:,} rows, {count:,} were published"
            raise LearnTrackError(msg)
        rates.append(_rate(rows, seconds))
        walls.append(wall)
    cap = settings.stream.max_offsets_per_trigger
    figure = Figure.of(
        "Spark Kafka source alone",
        "rows/s",
        rates,
        f"{count:,} records, our Python data source as the stream job builds it "
        f"(maxOffsetsPerTrigger {cap or 'none'}), available-now into a noop sink: "
        f"no parsing, no sinks; {ctx.settings.spark.master}; time inside the "
        "query's triggers (offsets, planning, the read, the commit), warm",
    )
    wall = statistics.median(walls)
    text = (
        f"Spark source: start to end of each query took {wall:.1f} s (median), i.e. "
        f"{_rate(count, wall):,.0f} rows/s counting the query's start and stop (a "
        "long-running stream pays those once). The warm-up query "
        f"({WARMUP_RECORDS:,} records; it starts the Python workers) took "
        f"{warm_s:.1f} s."
    )
    return figure, text


# -- the section ----------------------------------------------------------------------
RESULT_KEYS = {
    "broker produce (one producer, delivered)": "raw.broker_produce_rate",
    "broker consume (assign + seek)": "raw.broker_consume_rate",
    "MongoDB insert_many": "raw.mongo_insert_rate",
    "Redis pipelined writes": "raw.redis_ops_rate",
    "graph UNWIND MERGE, new students": "raw.graph_merge_new_rate",
    "graph UNWIND MERGE, existing students": "raw.graph_merge_existing_rate",
    "Cassandra concurrent writes": "raw.cassandra_write_rate",
    "Spark Kafka source alone": "raw.spark_source_rate",
}


@contextmanager
def _part(ctx: BenchContext, section: Section, what: str) -> Iterator[None]:
    """Run one measurement; a failure is reported and the others still run."""
    started = time.perf_counter()
    try:
        yield
    except Exception as err:  # noqa: BLE001 - report it, measure the rest
        ctx.report(traceback.format_exc())
        section.text.append(f"**{what} not measured**: {type(err).__name__}: {err}")
    ctx.report(f"[raw] {what}: {time.perf_counter() - started:.1f} s")


def run(ctx: BenchContext) -> Section:
    """Each store's and the source's ceiling, measured in the same run."""
    from learntrack.producers.generator import event_bytes
    from learntrack.topics import delete_topics

    size = sizes(ctx.quick)
    section = Section("raw", "Raw limits, same run")
    settings = ctx.settings
    events = _events(size.events)
    records = [(e[2].encode(), event_bytes(e)) for e in events]
    steps: list[tuple[str, Callable[[], list[Figure]]]] = [
        ("broker", lambda: bench_broker(settings, records, size.broker, ctx.runs)),
        ("mongo", lambda: [bench_mongo(settings, events, size.mongo, ctx.runs)]),
        (
            "redis",
            lambda: [bench_redis(settings, events, size.redis_events, ctx.runs)],
        ),
        ("graph", lambda: bench_graph(settings, events, size.graph_rows, ctx.runs)),
        ("cassandra", lambda: [bench_cassandra(settings, size.cassandra, ctx.runs)]),
    ]
    try:
        for what, step in steps:
            with _part(ctx, section, what):
                section.figures += step()
        with _part(ctx, section, "spark source"):
            figure, text = bench_spark_source(ctx, records, size.spark)
            section.figures.append(figure)
            section.text.append(text)
    finally:
        delete_topics(settings, [RAW_TOPIC, WARMUP_TOPIC])
    for f in section.figures:
        ctx.results[RESULT_KEYS[f.name]] = f.median
    section.text.append(load_note())
    return section


def load_note() -> str:
    """The machine's load average now (other work on the cores skews figures)."""
    one, five, _fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    return (
        f"Load average at the end of the section: {one:.1f} (1 min), {five:.1f} "
        f"(5 min) on {cores} cores."
    )
