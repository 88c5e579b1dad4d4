"""The CLI's contract: bad input is one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from learntrack.cli import main


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "learntrack.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


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
