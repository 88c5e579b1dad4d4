"""CLI commands of the producers: ``generate``, ``import-xapi``, ``topics``.

Runs in the user's terminal. Like every stage's ``commands`` module, it declares its
command groups (:data:`GROUPS`) and its commands by their path under ``learntrack``
(:data:`COMMANDS`); :mod:`learntrack.cli` registers them. The topics the producers
publish to are created and reset here too. Heavy modules (the generator, the Kafka
client) are imported inside each command, so ``learntrack --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from learntrack.config import get_settings
from learntrack.params import command_group, parse_duration, parse_instant

console = Console()


def generate(  # noqa: PLR0917 - typer passes options as parameters
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
        start=parse_instant(start) if start else GeneratorConfig().start,
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


def topics_create() -> None:
    """Create the activity, dead-letter and alert topics (idempotent)."""
    from learntrack.topics import ensure_topics

    table = Table("topic", "partitions", "action")
    for state in ensure_topics(get_settings()):
        table.add_row(state.name, str(state.partitions), state.action)
    console.print(table)


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


#: Command groups this module introduces: name -> the group (its help, its options).
GROUPS = {
    "topics": command_group("Manage LearnTrack's Kafka topics."),
}

#: This module's commands, by their path under ``learntrack``, in help order.
COMMANDS = {
    "generate": generate,
    "import-xapi": import_xapi_cmd,
    "topics create": topics_create,
    "topics reset": topics_reset,
}
