"""The one ``learntrack`` command and its subcommands.

Runs in the user's terminal. Every error LearnTrack raises on purpose, and every bad
argument, is printed as one line on stderr with a non-zero exit code; tracebacks are
for bugs only. Nothing imports this module.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from learntrack.api.commands import register as register_api_commands
from learntrack.batch.commands import register as register_batch_commands
from learntrack.config import get_settings, masked_dump
from learntrack.errors import LearnTrackError

if TYPE_CHECKING:
    from learntrack.stack.manager import Stack

app = typer.Typer(
    name="learntrack",
    help="Streaming analytics for online learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
stack_app = typer.Typer(
    help="Run the local servers (no Docker needed).", no_args_is_help=True
)
topics_app = typer.Typer(help="Manage LearnTrack's Kafka topics.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
query_app = typer.Typer(
    help="Ask the stores what apps, teachers and analysts ask.", no_args_is_help=True
)
app.add_typer(query_app, name="query")
eval_app = typer.Typer(help="Measure results against a generator truth file.")
app.add_typer(eval_app, name="eval")
# Commands that live next to the stage they drive (batch/, api/).
register_batch_commands(app, query_app)
register_api_commands(app, query_app)

console = Console()


# -- config -----------------------------------------------------------------
@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    data = masked_dump(get_settings())
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table("setting (env var)", "value", title="LearnTrack settings")
    for key, value in _flatten(data):
        table.add_row(f"LEARNTRACK_{key.upper()}", "-" if value is None else str(value))
    console.print(table)


def _flatten(data: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}__"))
        else:
            rows.append((name, value))
    return rows


# -- stack ------------------------------------------------------------------
@stack_app.command("up")
def stack_up(
    spark_cluster: Annotated[
        bool,
        typer.Option(
            "--spark-cluster", help="Also start a Spark standalone master and worker."
        ),
    ] = False,
) -> None:
    """Start the local servers that are not running; wait until each answers."""
    from learntrack.stack.manager import Stack

    stack = Stack()
    stack.up(spark_cluster=spark_cluster, report=lambda m: console.print(f"  {m}"))
    _print_status(stack)


@stack_app.command("fetch")
def stack_fetch(
    parts: Annotated[
        list[str] | None,
        typer.Argument(help="kafka, cassandra, neo4j, spark-kafka (default: all)."),
    ] = None,
) -> None:
    """Resolve the JVM servers and Spark's Kafka connector with mvn (when missing)."""
    from learntrack.stack import jars

    settings = get_settings()
    wanted = parts or list(jars.PARTS)
    for part in wanted:
        jars.pom(part)  # one line for an unknown name, before anything runs
    timings = jars.fetch(settings, wanted, report=lambda m: console.print(f"  {m}"))
    if not timings:
        console.print(
            f"already resolved in {settings.stack.jars_dir}: {', '.join(wanted)}"
        )


@stack_app.command("down")
def stack_down() -> None:
    """Stop every local server this data directory started, cleanly."""
    from learntrack.stack.manager import Stack

    stopped = Stack().down(report=lambda m: console.print(f"  {m}"))
    if not stopped:
        console.print("nothing was running")


@stack_app.command("status")
def stack_status() -> None:
    """Show name, version, address, PID, memory and health of each server."""
    from learntrack.stack.manager import Stack

    if not _print_status(Stack()):
        raise typer.Exit(1)


@stack_app.command("logs")
def stack_logs(
    name: Annotated[str, typer.Argument(help="kafka, mongo, redis, graph, ...")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 50,
) -> None:
    """Print the last lines of a server's log."""
    from learntrack.stack.manager import Stack

    console.print(Stack().logs(name, lines), markup=False, highlight=False)


@stack_app.command("check")
def stack_check() -> None:
    """Write one record to every store and read it back through its driver."""
    from learntrack.stack.smoke import roundtrip_all

    table = Table("store", "wrote", "read back", "ms", "ok", title="Round-trips")
    results = roundtrip_all(get_settings())
    for r in results:
        ok = "[green]yes[/]" if r.ok else "[red]NO[/]"
        table.add_row(r.store, r.wrote, r.read, f"{r.millis:.1f}", ok)
    console.print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _print_status(stack: Stack) -> bool:
    rows = stack.status()
    table = Table("server", "version", "address", "pid", "rss", "healthy")
    for r in rows:
        rss = f"{r.rss_bytes / 2**20:.0f} MiB" if r.rss_bytes else "-"
        health = "[green]yes[/]" if r.healthy else f"[red]no[/] {r.detail}"
        table.add_row(r.name, r.version, r.address, str(r.pid or "-"), rss, health)
    console.print(table)
    return all(r.healthy for r in rows)


# -- topics -----------------------------------------------------------------
@topics_app.command("create")
def topics_create() -> None:
    """Create the activity, dead-letter and alert topics (idempotent)."""
    from learntrack.topics import ensure_topics

    table = Table("topic", "partitions", "action")
    for state in ensure_topics(get_settings()):
        table.add_row(state.name, str(state.partitions), state.action)
    console.print(table)


@topics_app.command("reset")
def topics_reset(
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: every record in them is deleted.")
    ] = False,
) -> None:
    """Delete and recreate LearnTrack's topics (destructive)."""
    from learntrack.topics import reset_topics

    if not yes:
        raise typer.BadParameter("this deletes every record in the topics: add --yes")
    deleted = reset_topics(get_settings())
    console.print(f"deleted and recreated: {', '.join(deleted) or '(none existed)'}")


# -- generate ---------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``90s``, ``30m``, ``2h``, ``1d``, ``500ms`` (a bare number: seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        msg = f"invalid duration {text!r}: use e.g. 500ms, 90s, 30m, 2h, 1d"
        raise typer.BadParameter(msg)
    return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


def parse_start(text: str) -> dt.datetime:
    """Parse an ISO date or date-time; naive values are taken as UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = f"invalid start {text!r}: use an ISO date, e.g. 2026-11-21T08:00Z"
        raise typer.BadParameter(msg) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@app.command("generate")
def generate(
    students: Annotated[int, typer.Option(min=1, help="Number of students.")] = 1000,
    courses: Annotated[int, typer.Option(min=1, help="Number of courses.")] = 20,
    events: Annotated[
        int | None, typer.Option(min=1, help="Valid events to publish (default 10000).")
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            help="Publish for this long at --rate instead of --events (e.g. 60s)."
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second; 0 = as fast as possible.")
    ] = 0.0,
    start: Annotated[
        str | None,
        typer.Option(
            help="Simulated event time of the first day (default: yesterday)."
        ),
    ] = None,
    span: Annotated[str, typer.Option(help="Simulated event-time span.")] = "1d",
    seed: Annotated[int, typer.Option(help="Same seed, same events and truth.")] = 42,
    truth: Annotated[
        Path | None, typer.Option(help="Write the ground truth (JSON) to this file.")
    ] = None,
    bad_ratio: Annotated[
        float, typer.Option(min=0, max=1, help="Extra malformed records, as a share.")
    ] = 0.0,
    out_of_order: Annotated[
        str, typer.Option(help="Shuffle delivery within this event-time lag (e.g. 2m).")
    ] = "2m",
    anomaly_ratio: Annotated[
        float, typer.Option(min=0, max=0.5, help="Share of students with an anomaly.")
    ] = 0.01,
    profiles: Annotated[
        bool, typer.Option(help="Upsert the students' profiles into MongoDB.")
    ] = True,
    topic: Annotated[
        str | None, typer.Option(help="Default: the activity topic.")
    ] = None,
) -> None:
    """Publish realistic synthetic activity (with labelled anomalies) to Kafka."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from learntrack.producers import ActivityProducer
    from learntrack.producers.generator import (
        Generator,
        GeneratorConfig,
        build_truth,
        publish,
        upsert_profiles,
    )

    if events is not None and duration is not None:
        raise typer.BadParameter("give --events or --duration, not both")
    if duration is not None:
        if rate <= 0:
            raise typer.BadParameter("--duration needs a --rate above 0")
        events = max(1, int(parse_duration(duration).total_seconds() * rate))
    settings = get_settings()
    config = GeneratorConfig(
        students=students,
        courses=courses,
        events=events or 10_000,
        start=parse_start(start) if start else GeneratorConfig().start,
        span=parse_duration(span),
        seed=seed,
        bad_ratio=bad_ratio,
        anomaly_ratio=anomaly_ratio,
        out_of_order=parse_duration(out_of_order),
        regions=tuple(settings.events.regions),
        weights=dict(settings.scoring.weights),
        half_life_s=settings.scoring.half_life_s,
    )
    with console.status("generating events..."):
        data = Generator(config).build()
    if profiles:
        with console.status("upserting student profiles into MongoDB..."):
            upsert_profiles(settings, data.profiles)
    if truth is not None:
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth.write_bytes(orjson.dumps(build_truth(data), option=orjson.OPT_INDENT_2))
    total = len(data.order)
    progress = Progress(
        TextColumn("[bold]publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )
    started = time.perf_counter()
    with ActivityProducer(settings, topic=topic) as producer, progress:
        task = progress.add_task("publish", total=total, rate="")

        def advance(n: int) -> None:
            done = progress.tasks[0].completed + n
            per_s = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=n, rate=f"{per_s:>9,.0f} events/s")

        publish(data, producer.send_serialized, rate=rate, on_progress=advance)
    elapsed = time.perf_counter() - started
    summary = Table("what", "count", title="Generated")
    summary.add_row("valid events", f"{len(data.events):,}")
    summary.add_row("malformed records", f"{len(data.malformed):,}")
    summary.add_row("students / courses", f"{students:,} / {courses:,}")
    summary.add_row("injected anomalies", f"{len(data.anomalies):,}")
    summary.add_row("legitimate travellers", f"{len(data.travel):,}")
    summary.add_row(
        "published in", f"{elapsed:.1f} s ({total / elapsed:,.0f} records/s)"
    )
    summary.add_row(
        "delivered / failed", f"{producer.delivered:,} / {producer.failed:,}"
    )
    console.print(summary)
    if truth is not None:
        console.print(f"truth written to {truth}")


# -- stream -------------------------------------------------------------------
@app.command("stream")
def stream(
    trigger: Annotated[
        str | None, typer.Option(help="Micro-batch interval (default 500ms).")
    ] = None,
    available_now: Annotated[
        bool,
        typer.Option(
            "--available-now", help="Process what is in Kafka now, then stop."
        ),
    ] = False,
    master: Annotated[
        str | None, typer.Option(help="local[N] or spark://host:port.")
    ] = None,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Run on the local standalone cluster.")
    ] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="Delete the checkpoint and all stream state, then start."
        ),
    ] = False,
) -> None:
    """Consume activity from Kafka; keep MongoDB, Redis, the graph and lake current."""
    from learntrack.spark import build_spark
    from learntrack.streaming.job import StreamJob, parse_trigger

    settings = get_settings()
    chosen_trigger = trigger or settings.stream.trigger
    try:
        parse_trigger(chosen_trigger)  # a bad value fails before Spark starts
    except LearnTrackError as err:
        raise typer.BadParameter(str(err)) from None
    job = StreamJob(
        settings,
        trigger=chosen_trigger,
        available_now=available_now,
        report=lambda line: console.print(
            line, markup=False, highlight=False, soft_wrap=True
        ),
    )
    if reset:
        job.reset()
    chosen_master = settings.spark.cluster_master_url if cluster else master
    with console.status("starting Spark..."):
        spark = build_spark(settings, chosen_master)
    try:
        reports = job.run(spark)
    finally:
        spark.stop()
    valid = sum(r.valid for r in reports)
    invalid = sum(r.invalid for r in reports)
    console.print(
        f"stream stopped after {len(reports)} batches: {valid:,} events, "
        f"{invalid:,} dead-lettered"
    )


# -- verify / summary ---------------------------------------------------------
@app.command("verify")
def verify(
    truth: Annotated[
        Path, typer.Option(help="The truth file of `learntrack generate`.")
    ],
    lake: Annotated[
        bool, typer.Option(help="Also check the Parquet lake (starts Spark).")
    ] = False,
) -> None:
    """Compare every store with a generator truth file; exit 1 on any difference."""
    from learntrack.verify import verify_all

    if not truth.is_file():
        raise typer.BadParameter(f"no such file: {truth}")
    settings = get_settings()
    data = orjson.loads(truth.read_bytes())
    spark = None
    if lake:
        from learntrack.spark import build_spark

        spark = build_spark(settings)
    try:
        checks = verify_all(settings, data, spark)
    finally:
        if spark is not None:
            spark.stop()
    table = Table("store", "check", "expected", "found", "ok", title="Stores vs truth")
    for c in checks:
        mark = "[green]yes[/]" if c.ok else "[red]NO[/]"
        table.add_row(c.store, c.what, str(c.expected), str(c.found), mark)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


# -- detection --------------------------------------------------------------
def parse_since(text: str) -> dt.datetime:
    """``24h``/``30m`` (that long ago) or an ISO date/date-time (UTC if naive)."""
    try:
        return dt.datetime.now(dt.UTC) - parse_duration(text)
    except typer.BadParameter:
        pass
    try:
        return parse_start(text)
    except typer.BadParameter:
        msg = f"invalid --since {text!r}: use e.g. 24h, 7d or 2026-11-20T08:00"
        raise typer.BadParameter(msg) from None


@query_app.command("multi-region")
def query_multi_region(
    window: Annotated[
        str, typer.Option(help="Two regions within this span (e.g. 30m).")
    ] = "30m",
    since: Annotated[
        str | None,
        typer.Option(help="Only activity since (e.g. 24h, or an ISO date-time)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Students who acted from two or more regions within the window (graph)."""
    from learntrack.events import utc_iso
    from learntrack.sinks.graph import multi_region

    span = parse_duration(window)
    if span.total_seconds() <= 0:
        raise typer.BadParameter("--window must be positive")
    start = utc_iso(parse_since(since)) if since else ""
    try:
        found = multi_region(get_settings(), span.total_seconds(), start, limit)
    except Exception as err:  # a driver error: one line, not a traceback
        msg = f"graph query failed: {type(err).__name__}: {err}"
        raise LearnTrackError(msg) from err
    if as_json:
        console.print_json(json.dumps(found))
        return
    table = Table(
        "student", "regions", "switches", "closest switch (UTC)", "gap", "events",
        title=f"Students in two or more regions within {window}",
    )  # fmt: skip
    for row in found:
        best = min(row["evidence"], key=lambda e: e["gapS"])
        table.add_row(
            row["studentId"],
            " ".join(row["regions"]),
            str(len(row["evidence"])),
            f"{best['prevAt'][:16]} {best['prevRegion']} -> "
            f"{best['at'][11:16]} {best['region']}",
            f"{best['gapS'] / 60:.1f} min",
            f"{best['prevEventId'][:8]}.. {best['eventId'][:8]}..",
        )
    console.print(table)
    if found:
        console.print("full event ids: add --json")
    console.print(f"{len(found):,} students")


@eval_app.command("fraud")
def eval_fraud(
    truth: Annotated[
        Path, typer.Option(help="The truth file of `learntrack generate`.")
    ],
    min_recall: Annotated[
        float, typer.Option(min=0, max=1, help="Exit 1 below this recall.")
    ] = 1.0,
    min_precision: Annotated[
        float, typer.Option(min=0, max=1, help="Exit 1 below this precision.")
    ] = 0.99,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare the stream's alerts with the injected anomalies: precision, recall."""
    from learntrack.evaluate import evaluate_stored

    if not truth.is_file():
        raise typer.BadParameter(f"no such file: {truth}")
    try:
        data = orjson.loads(truth.read_bytes())
        anomalies = data["anomalies"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as err:
        msg = f"{truth} is not a truth file of `learntrack generate` ({err})"
        raise typer.BadParameter(msg) from err
    if not isinstance(anomalies, list):
        raise typer.BadParameter(f"{truth}: 'anomalies' is not a list")
    try:
        report = evaluate_stored(get_settings(), data)
    except (KeyError, TypeError) as err:
        msg = f"{truth}: an anomaly lacks a field ({err})"
        raise typer.BadParameter(msg) from err
    except Exception as err:  # a driver error: one line, not a traceback
        msg = f"reading the alerts failed: {type(err).__name__}: {err}"
        raise LearnTrackError(msg) from err
    if as_json:
        console.print_json(json.dumps(report.__dict__))
    else:
        table = Table("measure", "value", title="Multi-region alerts vs truth")
        table.add_row("injected anomalies", f"{report.anomalies:,}")
        table.add_row("alerts", f"{report.alerts:,}")
        table.add_row("precision", f"{report.precision:.2%}")
        table.add_row("recall", f"{report.recall:.2%}")
        table.add_row("kind agreement", f"{report.kind_agreement:.2%}")
        table.add_row(
            "alerts citing a planted event",
            f"{report.evidence_matches:,} of {report.true_alerts:,}",
        )
        for name, value in report.latency_s.items():
            table.add_row(f"detection latency {name}", f"{value:.2f} s")
        if report.missed:
            table.add_row("missed students", ", ".join(report.missed[:10]))
        if report.false_students:
            table.add_row("false alerts on", ", ".join(report.false_students[:10]))
        console.print(table)
    if report.recall < min_recall or report.precision < min_precision:
        raise typer.Exit(1)


@app.command("summary")
def summary(
    top: Annotated[int, typer.Option(min=1, max=100, help="Leaderboard size.")] = 10,
) -> None:
    """What the stream has produced: events, students, top engaged students, DLQ."""
    from learntrack.clients import mongo_client, redis_client
    from learntrack.sinks.redis import PREFIX
    from learntrack.topics import read_topic, topic_sizes

    settings = get_settings()
    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        events = db["activities"].estimated_document_count()
        active = db["students"].count_documents({"activity": {"$exists": True}})
        r = redis_client(settings)
        try:
            leaders = r.zrevrange(f"{PREFIX}lb:global", 0, top - 1, withscores=True)
        finally:
            r.close()
        ids = [sid.decode() for sid, _ in leaders]
        names = {
            d["studentId"]: d for d in db["students"].find({"studentId": {"$in": ids}})
        }
    sizes = topic_sizes(settings)
    head = Table("what", "count", title="LearnTrack now")
    head.add_row("events stored (MongoDB activities)", f"{events:,}")
    head.add_row("students with activity", f"{active:,}")
    head.add_row(
        "records in the activity topic", f"{sizes[settings.topics.activity]:,}"
    )
    dead = len(read_topic(settings, settings.topics.dlq))
    head.add_row("dead-lettered records (DLQ topic)", f"{dead:,}")
    console.print(head)
    board = Table("#", "student", "name", "events", "level", title="Most engaged")
    for rank, sid in enumerate(ids, 1):
        doc = names.get(sid, {})
        board.add_row(
            str(rank),
            sid,
            str(doc.get("name", "-")),
            f"{doc.get('activity', {}).get('total', 0):,}",
            str(doc.get("studentLevel", "-")),
        )
    console.print(board)


# -- import-xapi -------------------------------------------------------------
@app.command("import-xapi")
def import_xapi_cmd(
    file: Annotated[Path, typer.Argument(help="xAPI statements, JSON lines (.gz ok).")],
    default_region: Annotated[
        str, typer.Option(help="Region when a statement carries none.")
    ] = "EU",
    dlq: Annotated[
        bool, typer.Option("--dlq", help="Send rejected statements to the DLQ topic.")
    ] = False,
    topic: Annotated[
        str | None, typer.Option(help="Default: the activity topic.")
    ] = None,
) -> None:
    """Import xAPI statements as activity events (idempotent by statement id)."""
    from learntrack.producers import ActivityProducer
    from learntrack.producers.xapi import import_xapi

    if not file.is_file():
        raise typer.BadParameter(f"no such file: {file}")
    settings = get_settings()
    if default_region not in settings.events.regions:
        known = ", ".join(settings.events.regions)
        raise typer.BadParameter(
            f"unknown region {default_region!r}: use one of {known}"
        )
    with console.status(f"importing {file.name}..."):
        producer = ActivityProducer(settings, topic=topic)
        try:
            summary = import_xapi(
                file,
                settings,
                default_region=default_region,
                send_dlq=dlq,
                producer=producer,
            )
        finally:
            producer.close()
    table = Table("", "statements", title=f"xAPI import: {file.name}")
    for label, count in summary.rows():
        table.add_row(label, f"{count:,}")
    console.print(table)


# -- bench ------------------------------------------------------------------
def _checkout_bench() -> ModuleType:
    """The source checkout's ``bench`` package (not part of the installed product).

    The benchmarks measure the product from outside and ship only with the source
    tree: found beside this package (an editable install, ``make bench``) or on
    ``sys.path``; anywhere else, a one-line error says where to run them.
    """
    import importlib
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    if (root / "bench" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if importlib.util.find_spec("bench") is None:
        raise LearnTrackError(
            "learntrack bench runs from a source checkout (the benchmarks are not "
            "part of the installed package): clone the repository and run make bench"
        )
    return importlib.import_module("bench")


@app.command("bench")
def bench(  # noqa: PLR0913
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A short run at smaller sizes, for a first look (under 5 minutes "
            "on a quiet 2-core machine); written under the bench data directory "
            "unless --out is given.",
        ),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated sections: raw, producers, stream, legacy, "
            "queries, batch (default: all). The others keep their figures from "
            "the report already in --out."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where benchmarks.md and benchmarks.json go (default: docs; "
            "with --quick: DATA_DIR/quick, so the full run in docs stays)."
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="The bench stack's own data directory.")
    ] = Path(".learntrack/bench"),
    port_offset: Annotated[
        int,
        typer.Option(min=1, max=30000, help="Bench stack ports = defaults + this."),
    ] = 20000,
    keep_stack: Annotated[
        bool, typer.Option("--keep-stack", help="Leave the bench stack running.")
    ] = False,
) -> None:
    """Measure the pipeline on its own stack; write docs/benchmarks.md and .json."""
    benchmarks = _checkout_bench()
    if out is None:
        out = data_dir / "quick" if quick else Path("docs")
    sections = benchmarks.run(
        quick=quick,
        out_dir=out,
        only=benchmarks.parse_only(only),
        data_dir=data_dir.resolve(),
        port_offset=port_offset,
        keep_stack=keep_stack,
        # Plain text: "[raw] ..." is not rich markup.
        report=lambda line: console.print(line, markup=False, highlight=False),
    )
    table = Table("section", "what", "median", "min", "max", "target", title="Bench")
    for s in sections:
        if s.error:
            table.add_row(s.key, f"[red]not measured: {s.error}[/red]", "", "", "", "")
        for f in s.figures:
            met = "" if f.met is None else (" ok" if f.met else " [red]missed[/red]")
            table.add_row(
                s.key,
                f.name,
                f"{f.median:,.2f} {f.unit}",
                f"{f.low:,.2f}",
                f"{f.high:,.2f}",
                f"{f.target}{met}",
            )
    console.print(table)
    console.print(f"written to {out / 'benchmarks.md'} and {out / 'benchmarks.json'}")


# -- spark ------------------------------------------------------------------
@app.command("spark-check")
def spark_check(
    master: Annotated[
        str | None,
        typer.Option(help="local[N] or spark://host:port; default from settings."),
    ] = None,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Use the local standalone cluster.")
    ] = False,
) -> None:
    """Run a small real Spark job and show where its tasks ran."""
    from learntrack.spark import build_spark, run_check

    settings = get_settings()
    chosen = settings.spark.cluster_master_url if cluster else master
    spark = build_spark(settings, chosen)
    try:
        result = run_check(spark)
    finally:
        spark.stop()
    console.print_json(json.dumps(result))


# -- entry point --------------------------------------------------------------
def _say_error(message: str) -> None:
    """One line on stderr, never wrapped, never a traceback."""
    sys.stderr.write(f"learntrack: {' '.join(message.split())}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; print expected errors as one line; return the exit code."""
    command = typer.main.get_command(app)
    try:
        # Outside standalone mode click *returns* the code of typer.Exit.
        code = command.main(
            args=argv if argv is not None else sys.argv[1:],
            prog_name="learntrack",
            standalone_mode=False,
        )
    except NoArgsIsHelpError:
        return 0  # typer has printed the help already
    except UsageError as err:
        hint = f" (see `{err.ctx.command_path} --help`)" if err.ctx else ""
        _say_error(f"error: {err.format_message()}{hint}")
        return 2
    except typer.Exit as err:
        return int(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _say_error("interrupted")
        return 130
    except LearnTrackError as err:
        # Multi-line details (a server's log tail) follow the one-line summary.
        head, _, details = str(err).partition("\n")
        _say_error(head)
        if details:
            sys.stderr.write(details + "\n")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
