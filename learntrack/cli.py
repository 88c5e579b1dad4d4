"""The one ``learntrack`` command and its subcommands.

Runs in the user's terminal. Every error LearnTrack raises on purpose, and every bad
argument, is printed as one line on stderr with a non-zero exit code; tracebacks are
for bugs only. Nothing imports this module.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from learntrack.config import get_settings, masked_dump
from learntrack.errors import LearnTrackError

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
app.add_typer(config_app, name="config")
app.add_typer(stack_app, name="stack")

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


def _print_status(stack: object) -> bool:
    from learntrack.stack.manager import Stack

    assert isinstance(stack, Stack)  # noqa: S101 - typing aid
    rows = stack.status()
    table = Table("server", "version", "address", "pid", "rss", "healthy")
    for r in rows:
        rss = f"{r.rss_bytes / 2**20:.0f} MiB" if r.rss_bytes else "-"
        health = "[green]yes[/]" if r.healthy else f"[red]no[/] {r.detail}"
        table.add_row(r.name, r.version, r.address, str(r.pid or "-"), rss, health)
    console.print(table)
    return all(r.healthy for r in rows)


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
        command.main(
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
