"""CLI commands of the streaming stage: ``stream`` and ``spark-check``.

Runs in the user's terminal, which is also the Spark driver of the job it starts.
Like every stage's ``commands`` module, it declares its commands by their path
under ``learntrack`` (:data:`COMMANDS`, and :data:`GROUPS`: none here);
:mod:`learntrack.cli` registers them. Spark is imported inside each command, so
``learntrack --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from learntrack.config import get_settings
from learntrack.params import Cluster, Master, parse_duration

console = Console()


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
    master: Master = None,
    cluster: Cluster = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="Delete the checkpoint and all stream state, then start."
        ),
    ] = False,
) -> None:
    """Consume activity from Kafka; keep MongoDB, Redis, the graph and lake current."""
    from learntrack.spark import build_spark
    from learntrack.streaming.job import StreamJob

    settings = get_settings()
    chosen_trigger = trigger or settings.stream.trigger
    parse_duration(chosen_trigger, "trigger")  # a bad value fails before Spark starts
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


#: Command groups this module introduces (none: its commands are top-level).
GROUPS: dict[str, typer.Typer] = {}

#: This module's commands, by their path under ``learntrack``, in help order.
COMMANDS = {
    "stream": stream,
    "spark-check": spark_check,
}
