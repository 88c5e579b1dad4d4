"""Helpers shared by more than one test module (no test module imports another).

Runs in the pytest process. Settings for one test are built by a function
(:func:`settings_for`, :func:`isolated`) on top of the test stack's settings; the
test process's own environment is never changed. A subprocess (the CLI,
``learntrack stream``) gets the same overrides as an ``env`` dict.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from learntrack.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings, get_settings
from learntrack.producers import ActivityProducer
from learntrack.producers.generator import (
    Dataset,
    Generator,
    GeneratorConfig,
    build_truth,
    publish,
)
from learntrack.topics import ensure_topics
from learntrack.verify import verify_all

#: The checkout's root (the tests run with ``tests/`` as working directory).
ROOT = Path(__file__).resolve().parents[1]

#: A fan-out batch line of ``learntrack stream``: its id and records (valid + DLQ).
BATCH_LINE = re.compile(r"^batch (\d+): ([\d,]+) rows")

#: Yesterday, 00:00 UTC: recent-activity counters expire two days after their day
#: ends, so a fixed date would make the counters' test fail as the calendar moves on.
START = dt.datetime.now(dt.UTC).replace(
    hour=0, minute=0, second=0, microsecond=0
) - dt.timedelta(days=1)


# -- settings --------------------------------------------------------------------------
def settings_for(env: Mapping[str, str]) -> Settings:
    """The test stack's settings with the ``LEARNTRACK_*`` variables of ``env`` on top.

    ``{"LEARNTRACK_MONGO__DATABASE": "x"}`` becomes ``get_settings(mongo={"database":
    "x"})``: the same value a subprocess given ``env`` reads, validated the same way,
    merged over the stack's ports and credentials; ``os.environ`` is not touched.
    Other variables are ignored.
    """
    overrides: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        *sections, field = (
            name.removeprefix(ENV_PREFIX).lower().split(ENV_NESTED_DELIMITER)
        )
        node = overrides
        for section in sections:
            node = node.setdefault(section, {})
        node[field] = value
    return get_settings(**overrides)


def isolated(
    prefix: str, tmp_path: Path, **extra: str
) -> tuple[Settings, dict[str, str]]:
    """Settings, and the same as env vars for a subprocess: own topics, db, checkpoint.

    ``extra`` adds more ``LEARNTRACK_*`` variables (e.g.
    ``LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="400"``). The lake stays under the
    test stack's data dir (a subprocess writes it there); each test starts with
    ``StreamJob.reset()``, which empties it.
    """
    env = {
        "LEARNTRACK_TOPICS__ACTIVITY": f"{prefix}.activity",
        "LEARNTRACK_TOPICS__DLQ": f"{prefix}.dlq",
        "LEARNTRACK_TOPICS__ALERTS": f"{prefix}.alerts",
        "LEARNTRACK_MONGO__DATABASE": prefix,
        "LEARNTRACK_SPARK__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        **extra,
    }
    return settings_for(env), {**os.environ, **env}


# -- data ------------------------------------------------------------------------------
def dataset(settings: Settings, events: int, seed: int, bad_ratio: float) -> Dataset:
    """A generated day of activity for ``settings`` (150 students, 6 courses)."""
    return Generator(
        GeneratorConfig(
            students=150,
            courses=6,
            events=events,
            start=START,
            seed=seed,
            bad_ratio=bad_ratio,
            out_of_order=dt.timedelta(minutes=2),
            weights=dict(settings.scoring.weights),
            half_life_s=settings.scoring.half_life_s,
        )
    ).build()


def publish_data(
    settings: Settings, events: int, seed: int
) -> tuple[Dataset, dict[str, Any]]:
    """Publish a generated data set (2 % malformed) to ``settings``' topic.

    Returns the data set and its truth.
    """
    ensure_topics(settings)
    data = dataset(settings, events, seed, bad_ratio=0.02)
    with ActivityProducer(settings) as producer:
        publish(data, producer.send_serialized)
    return data, build_truth(data)


def publish_records(
    settings: Settings, records: list[tuple[bytes | None, bytes]]
) -> None:
    """Publish raw (key, value) records through the SDK; every one acknowledged."""
    ensure_topics(settings)
    with ActivityProducer(settings) as producer:
        for key, value in records:
            producer.send_serialized(key, value)


def assert_matches_truth(settings: Settings, truth: dict[str, Any], spark: Any) -> None:
    """Every store (MongoDB, Redis, graph, DLQ, lake, alerts) equals the truth."""
    checks = verify_all(settings, truth, spark)
    bad = [c for c in checks if not c.ok]
    assert not bad, "\n".join(
        f"{c.store} {c.what}: {c.expected} != {c.found}" for c in bad
    )
    assert {c.store for c in checks} == {
        "mongo",
        "redis",
        "graph",
        "dlq",
        "lake",
        "alerts",
    }


# -- processes -------------------------------------------------------------------------
def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``learntrack ARGS`` in a subprocess; ``env`` is added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", "learntrack.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


class StreamProcess:
    """``learntrack stream`` in its own process group, its output read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        """Start the stream with ``args``; a thread collects its output lines."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "learntrack.cli", "stream", *args],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def exited(self) -> bool:
        """Whether the stream has exited; if so, after its last line has been read.

        The reader thread can lag behind the process (a broker outage floods the
        output with client logs), so a failure message taken at once would miss
        the error the stream exited with.
        """
        if self.proc.poll() is None:
            return False
        self._reader.join(60)
        return True

    def output(self, last: int = 150) -> str:
        """The last ``last`` lines (for failure messages)."""
        with self._changed:
            return "\n".join(self.lines[-last:])

    def wait_for(
        self, condition: Callable[[list[str]], bool], timeout_s: float, what: str
    ) -> None:
        """Poll the output until ``condition`` holds; fail on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition(self.lines):
                if self.eof:
                    pytest.fail(f"stream exited waiting for {what}:\n{self.output()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {what} within {timeout_s:.0f} s:\n{self.output()}")
                self._changed.wait(1.0)

    def batches(self) -> list[tuple[int, int]]:
        """(batch id, rows) of every fan-out batch line so far."""
        with self._changed:
            found = [BATCH_LINE.match(line) for line in self.lines]
        return [(int(m[1]), int(m[2].replace(",", ""))) for m in found if m]

    def rows(self) -> int:
        """Records the fan-out has processed so far (valid + dead-lettered)."""
        return sum(rows for _b, rows in self.batches())

    def wait_rows(self, n: int, timeout_s: float) -> None:
        """Until the fan-out has processed ``n`` records."""
        self.wait_for(lambda _l: self.rows() >= n, timeout_s, f"{n:,} records")

    def wait_batches(self, n: int, timeout_s: float, what: str) -> None:
        """Until ``n`` fan-out batch lines have been printed."""
        self.wait_for(lambda _l: len(self.batches()) >= n, timeout_s, what)

    def kill(self) -> None:
        """``kill -9`` of the whole group: driver, Spark JVM, Python workers."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)
        self._reader.join(10)

    def stop(self, timeout_s: float = 300) -> int:
        """SIGTERM to the driver (a graceful stop); its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def close(self) -> None:
        """Kill whatever is left (after a failed test)."""
        if self.proc.poll() is None:
            self.kill()


def wait_until_answers(
    url: str, server: subprocess.Popen[Any], why: Callable[[], str], timeout: float = 60
) -> None:
    """Poll ``url`` until it answers 200; fail with ``why()`` if ``server`` died."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, why()
        try:
            if httpx.get(url, timeout=10).status_code == 200:  # noqa: PLR2004
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.2)
