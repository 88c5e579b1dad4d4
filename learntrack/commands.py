"""CLI commands of the package's top-level modules: ``config``, ``verify``, ``eval``.

Runs in the user's terminal. :mod:`learntrack.config`, :mod:`learntrack.verify` and
:mod:`learntrack.evaluate` sit at the top of the package, not in a stage's folder,
so their commands live here; like every stage's ``commands`` module, this one
declares its command groups (:data:`GROUPS`) and its commands by their path under
``learntrack`` (:data:`COMMANDS`), and :mod:`learntrack.cli` registers them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from learntrack.config import get_settings, masked_dump
from learntrack.errors import LearnTrackError
from learntrack.params import command_group

console = Console()


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


#: Command groups this module introduces: name -> the group (its help, its options).
GROUPS = {
    "config": command_group("Inspect the effective settings."),
    # Without a subcommand `eval` is a usage error (exit 2), not its help.
    "eval": command_group(
        "Measure results against a generator truth file.", no_args_is_help=False
    ),
}

#: This module's commands, by their path under ``learntrack``, in help order.
COMMANDS = {
    "config show": config_show,
    "verify": verify,
    "eval fraud": eval_fraud,
}
