"""CLI commands of the local stack: ``learntrack stack up|down|status|...``.

Runs in the user's terminal. Like every stage's ``commands`` module, it declares its
command groups (:data:`GROUPS`) and its commands by their path under ``learntrack``
(:data:`COMMANDS`); :mod:`learntrack.cli` registers them. The stack's modules are
imported inside each command, so ``learntrack --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from learntrack.config import get_settings
from learntrack.params import command_group

if TYPE_CHECKING:
    from learntrack.stack.manager import Stack

console = Console()


def up(
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


def fetch(
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


def down() -> None:
    """Stop every local server this data directory started, cleanly."""
    from learntrack.stack.manager import Stack

    stopped = Stack().down(report=lambda m: console.print(f"  {m}"))
    if not stopped:
        console.print("nothing was running")


def status() -> None:
    """Show name, version, address, PID, memory and health of each server."""
    from learntrack.stack.manager import Stack

    if not _print_status(Stack()):
        raise typer.Exit(1)


def logs(
    name: Annotated[str, typer.Argument(help="kafka, mongo, redis, graph, ...")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 50,
) -> None:
    """Print the last lines of a server's log."""
    from learntrack.stack.manager import Stack

    console.print(Stack().logs(name, lines), markup=False, highlight=False)


def check() -> None:
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


#: Command groups this module introduces: name -> the group (its help, its options).
GROUPS = {
    "stack": command_group("Run the local servers (no Docker needed)."),
}

#: This module's commands, by their path under ``learntrack``, in help order.
COMMANDS = {
    "stack up": up,
    "stack fetch": fetch,
    "stack down": down,
    "stack status": status,
    "stack logs": logs,
    "stack check": check,
}
