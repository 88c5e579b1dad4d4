"""The bench's own logic (pure): section choice, figures and targets, the report.

Benchmarks measure and never assert timings; these tests check the code that turns
samples into figures and figures into docs/benchmarks.*, not any speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import SECTIONS, parse_only, result_keys
from bench.core import (
    DEFAULT_PORT_OFFSET,
    PORTS,
    BenchContext,
    Figure,
    Section,
    bench_env,
    carried_results,
    percentile,
    settings_with,
    write,
)
from bench.stream import SUSTAINED, Ladder, Step, build_section
from bench.stream_load import Published
from bench.stream_profile import REST, profile, profile_table
from bench.stream_run import BatchLine, LagReader, LagSample
from learntrack.config import Settings
from learntrack.errors import LearnTrackError
from learntrack.streaming.job import BatchReport
from learntrack.topics import create_topic
from tests.helpers import run_cli

#: What :func:`bench.core.machine` returns, for the report tests.
INFO = {
    "cores": 2,
    "memory_gib": 23.5,
    "cpu": "x",
    "python": "3.11",
    "load_avg_at_start": [0.5, 0.4, 0.3],
    "versions": {"pyspark": "4.3.0"},
}


def test_sections_are_chosen_in_run_order_and_unknown_names_refused() -> None:
    assert parse_only(None) == list(SECTIONS)
    assert parse_only("batch, raw") == ["raw", "batch"]  # run order, not typed order
    with pytest.raises(LearnTrackError, match="unknown bench section nope: choose"):
        parse_only("raw,nope")
    with pytest.raises(LearnTrackError, match="unknown bench section"):
        parse_only(" , ")


def test_figure_is_median_with_spread_and_judges_its_target() -> None:
    f = Figure.of("rate", "events/s", [30.0, 10.0, 20.0], at_least=15)
    assert (f.median, f.low, f.high, f.runs) == (20.0, 10.0, 30.0, 3)
    assert (f.target, f.met) == (">= 15.0", True)
    g = Figure.of("p99", "ms", [7.0, 6.0, 9.0], at_most=5)
    assert (g.median, g.target, g.met) == (7.0, "<= 5.00", False)
    h = Figure.of("plain", "s", [1.5])
    assert (h.target, h.met) == ("", None)


@pytest.mark.parametrize(
    ("q", "expected"), [(0.0, 1.0), (0.5, 50.0), (0.99, 99.0), (1.0, 100.0)]
)
def test_percentile_by_nearest_rank(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, q) == pytest.approx(expected, abs=1.0)
    assert percentile([], q) == 0.0


def test_bench_stack_has_its_own_dir_and_shifted_ports(tmp_path: Path) -> None:
    env = bench_env(tmp_path, 123)
    assert env["LEARNTRACK_DATA_DIR"] == str(tmp_path)
    assert {
        k: int(env[f"LEARNTRACK_{k}"]) - v for k, v in PORTS.items()
    } == dict.fromkeys(PORTS, 123)
    default = bench_env(tmp_path)
    assert int(default["LEARNTRACK_KAFKA__PORT"]) == 9092 + DEFAULT_PORT_OFFSET


def test_report_has_every_figure_target_verdict_and_failed_sections(
    tmp_path: Path,
) -> None:
    ok = Section(
        "raw",
        "Raw limits",
        [
            Figure.of("mongo insert_many", "docs/s", [50_000.0, 40_000.0, 60_000.0]),
            Figure.of("latest-20 p99", "ms", [6.0, 7.0, 8.0], at_most=5),
        ],
        text=["| a | b |", "|---|---|"],
        seconds=12.0,
    )
    failed = Section("batch", "Batch", error="cassandra unreachable")
    write([ok, failed], tmp_path, quick=True, info=INFO)
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| mongo insert_many | 50,000 docs/s | 40,000 | 60,000 | 3 |  |  |" in md
    assert "| latest-20 p99 | 7.00 ms | 6.00 | 8.00 | 3 | <= 5.00 | **no** |" in md
    assert "**Not measured**: cassandra unreachable" in md
    assert "quick run" in md
    assert "| a | b |" in md
    data = orjson.loads((tmp_path / "benchmarks.json").read_bytes())
    assert data["quick"] is True
    assert data["machine"]["cores"] == 2
    assert [s["key"] for s in data["sections"]] == ["raw", "batch"]
    assert data["sections"][0]["figures"][1]["met"] is False
    assert data["sections"][1]["error"] == "cassandra unreachable"


def test_bad_bench_arguments_are_one_line_before_any_server_starts() -> None:
    result = run_cli("bench", "--only", "raw,warp")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "learntrack: unknown bench section warp: choose from " + ", ".join(SECTIONS)
    ]
    result = run_cli("bench", "--port-offset", "0")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_batch_line_carries_sinks_and_steps_into_the_profile() -> None:
    rep = BatchReport(
        7,
        valid=990,
        invalid=10,
        seconds=4.0,
        sinks={"mongo.activities": 0.5, "graph": 0.25, "dlq": 0.25},
        steps={"clock": 0.0, "job": 3.0, "read": 1.5, "parse": 0.5},
        lag={"0": 3, "1": 4},
        freshness={"p50": 1.0, "p99": 2.0, "max": 2.5},
    )
    line = BatchLine.parse(rep.line(), at=1.0)
    assert line is not None
    assert (line.batch_id, line.rows, line.seconds, line.lag) == (7, 1000, 4.0, 7)
    assert line.sinks == {**rep.sinks, **rep.steps}
    other = BatchLine(8, 1000, 6.0, {**rep.sinks, **rep.steps}, 0, 2.0)
    p = profile([line, other])
    assert (p["read"], p["mongo.activities"], p["batch"], p["rows"]) == (
        1.5, 0.5, 5.0, 1000,
    )  # fmt: skip
    # The executor sinks, read and parse run inside the job: not counted again.
    assert p[REST] == 5.0 - (0.0 + 3.0 + 0.25)
    table = "\n".join(profile_table([("drain", [line, other])]))
    assert (
        "| job: the batch's one Spark job (executor sinks inside) | 3,000 (60%)"
        in table
    )
    assert "| other: between the timed parts | 1,750 (35%), 1,750 |" in table


def test_only_some_sections_keeps_the_others_with_their_date(tmp_path: Path) -> None:
    raw = Section("raw", "Raw", [Figure.of("a", "x", [1.0])], text=["raw text"])
    first = Section("batch", "Batch", [Figure.of("b", "s", [9.0])], text=["old"])
    write([raw, first], tmp_path, quick=False, info=INFO)
    before = orjson.loads((tmp_path / "benchmarks.json").read_bytes())
    for s in before["sections"]:  # as if measured on another day
        s["measured_at"] = "2026-01-01T00:00:00+00:00"
    (tmp_path / "benchmarks.json").write_bytes(orjson.dumps(before))
    again = Section("batch", "Batch", [Figure.of("b", "s", [7.0])], text=["new"])
    keep = [k for k in SECTIONS if k != "batch"]
    later = {**INFO, "load_avg_at_start": [1.25, 1.0, 1.0]}
    write([again], tmp_path, quick=False, info=later, keep=keep)
    data = orjson.loads((tmp_path / "benchmarks.json").read_bytes())
    assert [s["key"] for s in data["sections"]] == ["raw", "batch"]
    kept, redone = data["sections"]
    assert kept == before["sections"][0]  # as measured the first time
    assert redone["figures"][0]["median"] == 7.0
    assert redone["load_avg_at_start"] == 1.25
    md = (tmp_path / "benchmarks.md").read_text()
    assert "raw text" in md and "new" in md and "old" not in md
    assert "Measured 2026-01-01T00:00:00+00:00, load average at start 0.50" in md
    assert "Sections measured at another time say so" in md
    # A quick report never mixes with a full one.
    write([again], tmp_path, quick=True, info=INFO, keep=keep)
    quick = orjson.loads((tmp_path / "benchmarks.json").read_bytes())
    assert [s["key"] for s in quick["sections"]] == ["batch"]


def test_a_section_run_alone_keeps_report_order_and_the_raw_figures(
    tmp_path: Path,
) -> None:
    raw = Section("raw", "Raw", [Figure.of("MongoDB insert_many", "docs/s", [3e4])])
    batch = Section("batch", "Batch", [Figure.of("b", "s", [9.0])])
    write([raw, batch], tmp_path, quick=False, info=INFO, order=list(SECTIONS))
    # `--only stream` then `--only raw`: each lands in its place, not at the end.
    stream = Section("stream", "Stream", [Figure.of("c", "x", [1.0])])
    keep = [k for k in SECTIONS if k != "stream"]
    write([stream], tmp_path, quick=False, info=INFO, keep=keep, order=list(SECTIONS))
    keep = [k for k in SECTIONS if k != "raw"]
    write([raw], tmp_path, quick=False, info=INFO, keep=keep, order=list(SECTIONS))
    data = orjson.loads((tmp_path / "benchmarks.json").read_bytes())
    assert [s["key"] for s in data["sections"]] == ["raw", "stream", "batch"]
    # The stream section re-run alone still gets the raw insert rate it compares to.
    keep = [k for k in SECTIONS if k != "stream"]
    carried = carried_results(tmp_path, False, result_keys(keep))
    assert carried == {"raw.mongo_insert_rate": 3e4}
    assert carried_results(tmp_path, True, result_keys(keep)) == {}  # quick != full


def test_ladder_lag_is_the_one_querys_with_or_without_detection(
    settings: Settings, prefix: str, tmp_path: Path
) -> None:
    """Lag is the fan-out query's (real broker): detection runs inside its batches.

    A detection query of its own once had its own lag, and a ladder with
    ``LEARNTRACK_DETECT__ENABLED=false`` waited for a query that never ran.
    """
    from confluent_kafka import Producer

    topic = f"{prefix}.activity"
    create_topic(settings, topic, 2)
    producer = Producer(settings.kafka.client_config())
    for partition, count in ((0, 10), (1, 5)):
        for i in range(count):
            producer.produce(topic, value=b"%d" % i, partition=partition)
    assert producer.flush(10) == 0
    # The fan-out committed a batch ending at offset 4 of partition 0, 5 of 1.
    root = tmp_path / "stream"
    (root / "commits").mkdir(parents=True)
    (root / "offsets").mkdir()
    (root / "commits" / "0").write_text("v1\n{}\n")
    (root / "offsets" / "0").write_text('v1\n{}\n{"0": 4, "1": 5}\n')
    env = {"LEARNTRACK_TOPICS__ACTIVITY": topic}
    env["LEARNTRACK_SPARK__CHECKPOINT_DIR"] = str(tmp_path)
    for detect in ("false", "true"):
        reader = LagReader(settings_with(**env, LEARNTRACK_DETECT__ENABLED=detect))
        try:
            sample = reader.sample()
        finally:
            reader.close()
        assert (sample.produced, sample.stream, sample.lag) == (15, 6, 6), detect


def _step(
    rate: float, lag: tuple[int, int], drained: float | None, **probe: Any
) -> Step:
    """A ladder step published at ``rate`` for 60 s; lag ``first -> last`` third."""
    first, last = lag
    lags = [LagSample(float(t), 0, first if t < 30 else last) for t in range(60)]
    return Step(
        rate,
        60.0,
        Published(round(rate * 60), 0.0, 60.0),
        lags,
        drained,
        [],
        {},
        **probe,
    )


def test_ladder_runs_give_medians_with_spread_and_one_table(tmp_path: Path) -> None:
    """Three ladder runs: every ladder figure is their median, with min and max."""
    ok, grew = (100, 120), (1000, 9000)
    one = Ladder([_step(1000, ok, 1.0, mongo=[0.2, 0.3]), _step(2000, grew, None)])
    one.fresh = _step(5000, grew, 20.0, mongo=[1.0, 2.0, 9.0], alerts=[0.5])
    two = Ladder([_step(1000, grew, 30.0), _step(500, grew, 12.0)])  # none held
    two.fresh = _step(5000, grew, 25.0, mongo=[3.0, 4.0, 5.0], redis=[6.0])
    three = Ladder(
        [
            _step(1000, ok, 2.0),
            _step(2000, ok, 3.0, mongo=[0.4]),
            _step(3000, grew, None),
        ]
    )
    three.fresh = _step(5000, grew, 30.0, mongo=[2.0, 2.0, 2.0])
    ctx = BenchContext(
        Settings(),
        quick=False,
        runs=3,
        work_dir=tmp_path,
        report=print,
        results={"raw.mongo_insert_rate": 4000.0},
    )
    section = build_section(ctx, [one, two, three], [], None, [])
    figures = {f.name: f for f in section.figures}
    held = figures[SUSTAINED]
    assert (held.median, held.low, held.high, held.runs) == (1000, 0, 2000, 3)
    assert held.met is False and "0 = no step sustained in that run" in held.note
    ratio = figures["sustained rate / raw MongoDB insert_many rate"]
    assert (ratio.median, ratio.low, ratio.high) == (0.25, 0.0, 0.5)
    assert ctx.results["stream.sustained_rate"] == 1000
    p99 = figures["produce -> MongoDB activities, p99"]  # each run's p99: 9, 5, 2
    assert (p99.median, p99.low, p99.high, p99.runs) == (5.0, 2.0, 9.0, 3)
    # A path seen in one run only is one sample, and says how many it had.
    redis = figures["produce -> Redis student hash, p50"]
    assert (redis.runs, redis.median) == (1, 6.0)
    # Runs 1 and 3 sustained a step below 5k: their steady freshness, apart.
    steady = figures["produce -> MongoDB activities, p99 at 1,000/2,000/s (sustained)"]
    assert (steady.runs, steady.low, steady.high) == (2, 0.3, 0.4)
    text = "\n".join(section.text)
    assert "3 ladder runs, each a stream started anew on emptied" in text
    rows = [line for line in section.text if line.startswith("| ") and "/s" not in line]
    assert [r.split(" | ")[0:2] for r in rows if r[2].isdigit()] == [
        ["| 1", "1,000"],
        ["| 1", "2,000"],
        ["| 1", "5,000"],
        ["| 2", "1,000"],
        ["| 2", "500"],
        ["| 2", "5,000"],
        ["| 3", "1,000"],
        ["| 3", "2,000"],
        ["| 3", "3,000"],
        ["| 3", "5,000"],
    ]
    # Each reason once, however many runs gave it.
    assert "5,000 events/s in 3 of 3 runs (not drained in 10 s):" in text
