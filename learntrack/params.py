"""The parsers of LearnTrack's command-line values: durations, instants and days.

One grammar per kind of value, shared by every command and by the stream job:

* a **duration** (``--duration``, ``--span``, ``--out-of-order``, ``--window``,
  ``--trigger``): a number, optionally with a decimal part, and a unit ``ms``,
  ``s``, ``m``, ``h`` or ``d`` (any case, blanks allowed around it); a bare number
  is seconds. ``500ms``, ``90s``, ``1.5h``, ``2 d``, ``0``.
* an **instant** (``--start``): an ISO date or date-time; naive values are UTC.
* a **since** (``--since``): a duration with a unit (that long before now), an ISO
  date or date-time, or a bare number of seconds ago.
* a **day** (``--date``, ``--from``, ``--to``): exactly ``YYYY-MM-DD``.

Runs wherever a value is parsed: in the CLI process, and on the Spark driver when
:class:`learntrack.streaming.job.StreamJob` reads its trigger. A value that does not
parse raises :class:`ParameterError`, which the CLI prints as one line (exit code
2) and library callers can catch as a :class:`learntrack.errors.LearnTrackError`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import typer

from learntrack.errors import LearnTrackError

#: Seconds per duration unit.
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

DURATION_HINT = "use e.g. 500ms, 90s, 30m, 2h, 1d"
SINCE_HINT = "use e.g. 2h, 7d or 2026-11-21T08:00Z"


class ParameterError(typer.BadParameter, LearnTrackError):
    """A command-line value that does not parse (CLI: one line, exit code 2)."""


def parse_duration(text: str, what: str = "duration") -> dt.timedelta:
    """Parse a duration (``500ms``, ``90s``, ``30m``, ``2h``, ``1d``; bare: seconds).

    Args:
        text: The value as given.
        what: The value's name in the error message (``duration``, ``trigger``).

    Raises:
        ParameterError: ``text`` is not a duration, or too long for a timedelta.
    """
    match = _DURATION.fullmatch(text)
    if not match:
        msg = f"invalid {what} {text!r}: {DURATION_HINT}"
        raise ParameterError(msg)
    seconds = float(match[1]) * UNITS[(match[2] or "s").lower()]
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError:
        msg = f"invalid {what} {text!r}: too long"
        raise ParameterError(msg) from None


def parse_instant(text: str, what: str = "start") -> dt.datetime:
    """Parse an ISO date or date-time; a naive value is taken as UTC.

    Raises:
        ParameterError: ``text`` is not an ISO date or date-time.
    """
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"invalid {what} {text!r}: use an ISO date, e.g. 2026-11-21T08:00Z"
        raise ParameterError(msg) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """Parse ``--since``: ``2h``/``7d`` before ``now``, or an ISO date/date-time.

    A duration with a unit is read first, then an ISO date or date-time (naive:
    UTC), then a bare number as seconds before ``now`` (default: the current time).

    Raises:
        ParameterError: none of these, or further back than a datetime reaches.
    """
    match = _DURATION.fullmatch(text)
    if not match or match[2] is None:
        try:
            return parse_instant(text)
        except ParameterError:
            if not match:
                msg = f"invalid --since {text!r}: {SINCE_HINT}"
                raise ParameterError(msg) from None
    try:
        ago = parse_duration(text, "--since")
        return (now or dt.datetime.now(dt.UTC)) - ago
    except (ParameterError, OverflowError):
        msg = f"invalid --since {text!r}: too long ago"
        raise ParameterError(msg) from None


def parse_day(text: str, option: str | None = None) -> dt.date:
    """Parse a UTC day, strictly ``YYYY-MM-DD`` (no other ISO forms).

    Args:
        text: The value as given.
        option: The option it came from (``--date``), named in the error.

    Raises:
        ParameterError: not of that form, or no such day.
    """
    if not _DAY.fullmatch(text.strip()):
        msg = f"invalid date {text!r}: use YYYY-MM-DD"
        raise ParameterError(msg, param_hint=option)
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        msg = f"invalid date {text!r}: no such day"
        raise ParameterError(msg, param_hint=option) from None


# -- options shared by the Spark commands (stream, batch) ----------------------------
#: ``--master``: where the Spark job runs.
Master = Annotated[str | None, typer.Option(help="local[N] or spark://host:port.")]
#: ``--cluster``: the local standalone cluster (`stack up --spark-cluster`).
Cluster = Annotated[
    bool, typer.Option("--cluster", help="Run on the local standalone cluster.")
]


def command_group(help_text: str, *, no_args_is_help: bool = True) -> typer.Typer:
    """A command group (`learntrack <group> ...`), declared alike by every stage.

    Without a subcommand a group prints its help (``no_args_is_help``), unless the
    group says otherwise.
    """
    return typer.Typer(help=help_text, no_args_is_help=no_args_is_help)
