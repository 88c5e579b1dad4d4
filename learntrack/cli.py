"""The one ``learntrack`` command: its subcommands, gathered from every stage.

Runs in the user's terminal. Each stage declares its commands in a ``commands``
module of its folder (the package's top-level modules in :mod:`learntrack.commands`):
``GROUPS`` (the command groups it introduces) and ``COMMANDS`` (each command's path
under ``learntrack`` and its function). :func:`build_app` registers them all the
same way. Every error LearnTrack raises on purpose, and every bad argument, is
printed as one line on stderr with a non-zero exit code; tracebacks are for bugs
only. Nothing imports this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from learntrack import commands as package_commands
from learntrack.api import commands as api_commands
from learntrack.batch import commands as batch_commands
from learntrack.errors import LearnTrackError
from learntrack.producers import commands as producer_commands
from learntrack.stack import commands as stack_commands
from learntrack.streaming import commands as streaming_commands

#: The modules whose commands make up ``learntrack``, in the order of the data flow
#: (the order ``learntrack --help`` lists them in).
COMMAND_MODULES: tuple[ModuleType, ...] = (
    stack_commands,
    producer_commands,
    streaming_commands,
    batch_commands,
    api_commands,
    package_commands,
)

console = Console()


def build_app(modules: tuple[ModuleType, ...] = COMMAND_MODULES) -> typer.Typer:
    """The ``learntrack`` app: every module's groups and commands, and ``bench``.

    Called once, when this module is imported: the groups are the modules' own
    ``typer.Typer`` objects, so registering twice would list each command twice.
    """
    app = typer.Typer(
        name="learntrack",
        help="Streaming analytics for online learning.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    groups: dict[str, typer.Typer] = {}
    for module in modules:
        for name, group in module.GROUPS.items():
            if name in groups:
                msg = f"two modules declare the command group {name!r}"
                raise RuntimeError(msg)
            groups[name] = group
    for module in modules:
        for path, function in module.COMMANDS.items():
            group_name, _, name = path.rpartition(" ")
            (groups[group_name] if group_name else app).command(name)(function)
    app.command("bench")(bench)
    for name, group in groups.items():
        app.add_typer(group, name=name)
    return app


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
            help="Comma-separated sections: raw, producers, xapi, stream, legacy, "
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


app = build_app()


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
