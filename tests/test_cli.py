"""The CLI's contract: bad input is one line on stderr, never a traceback."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import typer

from learntrack.cli import COMMAND_MODULES, main
from learntrack.errors import LearnTrackError
from learntrack.params import (
    ParameterError,
    parse_day,
    parse_duration,
    parse_instant,
    parse_since,
)
from tests.helpers import run_cli


@pytest.mark.parametrize(
    "args",
    [
        ["stack", "up", "--bogus"],
        ["stack", "nonsense"],
        ["stack", "logs"],
        ["stack", "logs", "redis", "--lines", "zero"],
        ["config", "show", "extra-arg"],
        ["import-xapi", "does-not-exist.jsonl"],
        ["import-xapi", "data/xapi_sample.jsonl", "--default-region", "MOON"],
        ["generate", "--events", "-5"],
        ["topics", "reset"],
        ["stream", "--trigger", "soon"],
        ["verify", "--truth", "missing.json"],
        ["generate", "--span", "99999999999999d"],
        ["query", "multi-region", "--since", "yesterday"],
        ["alerts", "--since", "yesterday"],
        ["batch", "--date", "2026-02-30"],
        ["query", "courses", "--date", "tomorrow"],
        ["eval"],
    ],
)
def test_bad_arguments_give_one_line(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("learntrack: error:")
    assert "Traceback" not in result.stderr


def test_unknown_server_name_is_one_line() -> None:
    result = run_cli("stack", "logs", "postgres")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "learntrack: unknown server 'postgres': choose one of kafka, mongo, redis, "
        "graph, cassandra, spark-master, spark-worker"
    ]


def test_invalid_setting_is_one_line_naming_the_variable() -> None:
    result = run_cli("config", "show", env={"LEARNTRACK_REDIS__PORT": "six"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "LEARNTRACK_REDIS__PORT" in lines[0]
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets() -> None:
    result = run_cli(
        "config", "show", "--json", env={"LEARNTRACK_REDIS__PASSWORD": "hunter2-xyz"}
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-xyz" not in result.stdout
    assert '"password": "********"' in result.stdout


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "up", "--nope"]) == 2
    assert "No such option: --nope" in capsys.readouterr().err


@pytest.mark.stack
def test_commands_that_find_a_problem_exit_non_zero(
    settings: object, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(
        '{"counts": {"valid": 123456789}, "perStudent": {}, "malformed": [],'
        ' "anomalies": []}'
    )
    result = run_cli("verify", "--truth", str(truth))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NO" in result.stdout
    assert main(["verify", "--truth", str(truth)]) == 1


def test_every_declared_command_is_registered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = [path for m in COMMAND_MODULES for path in m.COMMANDS] + ["bench"]
    assert len(paths) == len(set(paths))
    for path in paths:
        assert main([*path.split(), "--help"]) == 0, path
        assert f"Usage: learntrack {path} " in capsys.readouterr().out


def test_a_group_without_subcommand_prints_its_help() -> None:
    result = run_cli("query")
    assert result.returncode == 0, result.stderr
    assert "multi-region" in result.stdout and "courses" in result.stdout


# -- the parameter parsers (pure logic) ---------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5h", 5400),
        (" 2 h ", 7200),
        ("10", 10),  # bare: seconds
        ("0", 0),
        ("500MS", 0.5),  # the stream's trigger accepted any case
        ("1.", 1),  # ... and a trailing or leading point
        (".5s", 0.5),
    ],
)
def test_one_duration_grammar(text: str, seconds: float) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["soon", "", "-1s", "1w", "1e3s", "2 hours", "1.2.3"])
def test_a_bad_duration_is_a_usage_error_and_a_learntrack_error(text: str) -> None:
    with pytest.raises(ParameterError, match="invalid trigger") as caught:
        parse_duration(text, "trigger")
    assert isinstance(caught.value, typer.BadParameter)
    assert isinstance(caught.value, LearnTrackError)
    assert "use e.g. 500ms, 90s" in str(caught.value)


def test_a_duration_too_long_for_a_timedelta_is_rejected() -> None:
    with pytest.raises(ParameterError, match="too long"):
        parse_duration("99999999999999d")


def test_since_reads_durations_dates_and_bare_seconds() -> None:
    now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2h", now) == now - dt.timedelta(hours=2)
    assert parse_since("90s", now) == now - dt.timedelta(seconds=90)
    assert parse_since("3600", now) == now - dt.timedelta(hours=1)
    assert parse_since("2026-11-20", now) == dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    # An eight-digit number is an ISO date, not seconds.
    assert parse_since("20261120", now) == dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    aware = parse_since("2026-11-20T08:00+01:00", now)
    assert aware == dt.datetime(2026, 11, 20, 7, 0, tzinfo=dt.UTC)
    with pytest.raises(ParameterError, match="use e.g. 2h, 7d"):
        parse_since("yesterday", now)
    with pytest.raises(ParameterError, match="too long ago"):
        parse_since("99999999999d", now)


def test_an_instant_without_zone_is_utc() -> None:
    assert parse_instant("2026-11-21T08:00") == dt.datetime(
        2026, 11, 21, 8, 0, tzinfo=dt.UTC
    )
    with pytest.raises(ParameterError, match="invalid start 'tomorrow'"):
        parse_instant("tomorrow")


def test_a_day_is_strictly_yyyy_mm_dd() -> None:
    assert parse_day(" 2026-02-28 ") == dt.date(2026, 2, 28)
    with pytest.raises(ParameterError, match="no such day") as caught:
        parse_day("2026-02-30", "--date")
    assert caught.value.param_hint == "--date"
    for text in ("20260228", "2026-02-28T00:00", "tomorrow"):
        with pytest.raises(ParameterError, match="use YYYY-MM-DD"):
            parse_day(text)
