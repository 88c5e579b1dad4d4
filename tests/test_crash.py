"""Crash and restart of ``learntrack stream``: ``kill -9`` at random moments, SIGTERM.

The stream runs against its own topics, MongoDB database and checkpoint
(:func:`tests.helpers.isolated`) as a separate process, as users run it. Its whole
process group (driver, Spark JVM, Python workers) is killed with ``kill -9`` at
random moments, restarted after each kill, then stopped once with SIGTERM (a clean
exit after the batch in flight) and run to the end. Every store is then compared
with the generator's truth (:func:`tests.helpers.assert_matches_truth`: MongoDB,
Redis, the graph, the lake, the DLQ and the alerts; 0 lost, 0 counted twice).

``make test`` runs 12,000 events with 2 kills; ``LEARNTRACK_SOAK=1`` (``make
soak``) runs 200,000 events with 5 kills, both then one SIGTERM.
``LEARNTRACK_CHAOS_SEED`` replays the random kill moments of an earlier run.
These tests stop the stream, not the servers, but they run for minutes: run them
on a test stack of your own.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from learntrack.producers.generator import build_truth, delivery_stream
from learntrack.stack.manager import Stack
from learntrack.streaming.job import StreamJob
from tests.helpers import (
    StreamProcess,
    assert_matches_truth,
    dataset,
    isolated,
    publish_records,
)

pytestmark = [
    pytest.mark.stack,
    pytest.mark.spark,
    pytest.mark.usefixtures("restore_stack"),
]

SOAK = os.environ.get("LEARNTRACK_SOAK", "") not in ("", "0")
SEED = int(
    os.environ.get("LEARNTRACK_CHAOS_SEED") or random.SystemRandom().randrange(10**6)
)


@pytest.mark.slow
@pytest.mark.timeout(5400 if SOAK else 1500)
def test_kill_9_at_random_moments_and_sigterm_lose_nothing_count_nothing_twice(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    events, per_trigger = (200_000, 5000) if SOAK else (24_000, 1000)
    settings, env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER=str(per_trigger)
    )
    StreamJob(settings, report=lambda _l: None).reset()
    data = dataset(settings, events, seed=21, bad_ratio=0.01)
    truth = build_truth(data)
    publish_records(settings, list(delivery_stream(data)))
    rng = random.Random(SEED)
    moments: list[str] = []

    kills = 5 if SOAK else 2  # then one SIGTERM; make soak has the 5 kills
    for crash in range(kills + 1):
        stream = StreamProcess(env, "--available-now")
        try:
            # A random moment: after 1-2 batch lines of this run, plus 0-1.5 s
            # (a 1,000-row batch takes about 0.4 s), so kills land inside sink
            # writes as well as between batches, and every run still has data
            # left when its fault comes (at most ~6 batches a run, 24 in all).
            after = rng.randint(1, 2)
            delay = rng.uniform(0.0, 1.5)
            stream.wait_batches(after, 600, f"{after} batch lines")
            time.sleep(delay)
            assert not stream.exited(), (
                f"run {crash} ended before its fault (seed {SEED}): the data set is "
                f"too small\n{stream.output()}"
            )
            moments.append(f"{after} batch lines + {delay:.1f} s")
            if crash < kills:
                stream.kill()
                assert stream.proc.returncode == -signal.SIGKILL
            else:
                code = stream.stop()
                assert code == 0, stream.output()
                stream.wait_for(
                    lambda lines: any("stream stopped after" in x for x in lines),
                    10,
                    "the final line",
                )
        finally:
            stream.close()

    done = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "stream", "--available-now"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3000 if SOAK else 900,
        check=False,
    )
    assert done.returncode == 0, (
        f"seed {SEED}, faults at {moments}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    try:
        assert_matches_truth(settings, truth, spark)
    except AssertionError as err:
        raise AssertionError(f"seed {SEED}, faults at {moments}: {err}") from err
