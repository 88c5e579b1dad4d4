"""The one-job batch's pure parts: topology, copies, fold, freshness, the sink contract.

What crosses a wire (every store, replays, kill -9) is proven against the real stack
in ``test_stream.py``, ``test_detect.py``, ``test_crash.py`` and ``test_outages.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from learntrack.config import Settings
from learntrack.sinks.base import Part, Runs
from learntrack.sinks.fold import fold, switch_activities
from learntrack.streaming import fanout
from learntrack.streaming.detect import comparable_events, newest_event_ms

T0 = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)


@pytest.fixture
def settings() -> Settings:
    """Default settings: these tests touch no server."""
    return Settings()


def events(rows: list[tuple[str, str, int, str, int, int]]) -> dict[str, list[Any]]:
    """Columns from (eventId, studentId, minute, region, partition, offset)."""
    return {
        "eventId": [r[0] for r in rows],
        "studentId": [r[1] for r in rows],
        "courseId": ["c1"] * len(rows),
        "action": ["page_view"] * len(rows),
        "timestamp": [T0 + dt.timedelta(minutes=r[2]) for r in rows],
        "region": [r[3] for r in rows],
        "partition": [r[4] for r in rows],
        "offset": [r[5] for r in rows],
        "kafkaTimestamp": [T0 + dt.timedelta(minutes=r[2]) for r in rows],
        "metadata": [None] * len(rows),
    }


def test_the_topology_puts_the_activity_log_first_and_obeys_detection(
    settings: Settings,
) -> None:
    on = fanout.sinks(settings)
    assert on[0].name == "mongo.activities"  # it decides which events are new
    assert {c.runs_on for c in on} == {Runs.EXECUTOR, Runs.DRIVER}
    assert all(c.takes for c in on if c.runs_on == Runs.DRIVER)
    # Every driver sink takes something an executor sink or the parser emits.
    emitted = {"invalid"} | {c.emits for c in on if c.emits}
    assert {c.takes for c in on if c.runs_on == Runs.DRIVER} <= emitted
    off = settings.model_copy(
        update={"detect": settings.detect.model_copy(update={"enabled": False})}
    )
    names = {c.name for c in fanout.sinks(off)}
    assert "detect" not in names
    assert not any(n.startswith("alerts.") for n in names)
    assert len(fanout.sinks(off)) == len(on) - 5  # detect + 4 alert sinks


def test_one_copy_of_each_event_the_first_by_partition_and_offset() -> None:
    cols = events(
        [("e2", "s1", 1, "EU", 0, 7), ("e1", "s1", 0, "EU", 0, 5),
         ("e2", "s1", 1, "EU", 0, 6), ("e3", "s2", 2, "US", 1, 1)]
    )  # fmt: skip
    cols["metadata"] = [[("k", "v")], None, None, None]
    first = fanout._first_copies(cols)  # noqa: SLF001
    assert first["eventId"] == ["e1", "e2", "e3"]
    assert first["offset"] == [5, 6, 1]  # e2's copy at offset 6, not 7
    assert first["metadata"] == [None, None, None]  # the kept e2 had none
    part = Part(3, 0, first)
    part.drop({"e2"})
    assert part.events["eventId"] == ["e1", "e3"] and part.dropped == 1
    assert [r["eventId"] for r in part.rows()] == ["e1", "e3"]
    # Already in (partition, offset) order: copies still go, the first stays.
    ordered = events(
        [("e1", "s1", 0, "EU", 0, 5), ("e2", "s1", 1, "EU", 0, 6),
         ("e2", "s1", 1, "US", 0, 7), ("e3", "s2", 2, "US", 1, 1)]
    )  # fmt: skip
    first = fanout._first_copies(ordered)  # noqa: SLF001
    assert first["eventId"] == ["e1", "e2", "e3"]
    assert first["region"] == ["EU", "EU", "US"]
    unique = events([("e1", "s1", 0, "EU", 0, 5), ("e2", "s1", 1, "EU", 0, 6)])
    assert fanout._first_copies(unique) == unique  # noqa: SLF001


def test_the_fold_and_the_switches_of_a_task(settings: Settings) -> None:
    cols = events(
        [("a1", "s1", 0, "EU", 0, 0), ("a2", "s1", 5, "US", 0, 1),
         ("a3", "s1", 7, "US", 0, 2), ("b1", "s2", 1, "EU", 1, 0)]
    )  # fmt: skip
    students = fold(settings, cols)
    s1 = students["s1"]
    assert s1.total == 3 and s1.actions == {"page_view": 3}
    assert s1.regions["US"][0] == 2 and s1.lastRegion == "US"
    assert s1.first is not None and s1.first[1] == "a1"
    switches = switch_activities(cols, students)
    moved = [a for a in switches["s1"] if "prevEventId" in a]
    assert [(a["eventId"], a["prevEventId"], a["gapS"]) for a in moved] == [
        ("a2", "a1", 300.0)
    ]
    assert [a.get("isFirst") for a in switches["s2"]] == [True]


def test_detection_compares_only_timely_events_and_moves_the_clock() -> None:
    cols = events(
        [("a", "s", 0, "EU", 0, 0), ("b", "s", 10, "US", 0, 1),
         ("c", "t", 1, "EU", 1, 0)]
    )  # fmt: skip
    ms = int(T0.timestamp() * 1000)
    late = ms + 5 * 60_000
    # Each partition has its own watermark: "a" is behind partition 0's, "c" is not
    # behind partition 1's (a partition behind in event time is not made late).
    found = comparable_events(cols, {0: late}, 3_600_000)
    assert [e[2] for e in found["s"]] == ["b"]
    assert [e[2] for e in found["t"]] == ["c"]
    assert newest_event_ms(cols, 3_600_000) == {0: ms + 600_000, 1: ms + 60_000}
    # An event dated far ahead of its broker time is left out, and moves nothing.
    cols["kafkaTimestamp"][1] = T0 - dt.timedelta(hours=3)
    assert [e[2] for e in comparable_events(cols, {}, 3_600_000)["s"]] == ["a"]
    assert newest_event_ms(cols, 3_600_000) == {0: ms, 1: ms + 60_000}
    cols["kafkaTimestamp"] = [None, None, None]
    assert comparable_events(cols, {}, 3_600_000) == {}
    assert newest_event_ms(cols, 3_600_000) == {}


def test_freshness_merges_each_tasks_quantiles_by_its_events() -> None:
    g = fanout.Gathered()
    g.ages = [([1.0] * fanout.QUANTILES, 300), ([3.0] * fanout.QUANTILES, 100)]
    assert g.freshness() == {"max": 3.0, "p50": 1.0, "p99": 3.0}
    assert fanout.Gathered().freshness() == {}
    done = (T0 + dt.timedelta(seconds=2)).timestamp() * 1000
    quantiles = fanout._freshness(  # noqa: SLF001
        {"kafkaTimestamp": [T0, T0 + dt.timedelta(seconds=1), None]}, done
    )
    assert len(quantiles) == fanout.QUANTILES
    assert quantiles[0] == pytest.approx(1.0) and quantiles[-1] == pytest.approx(2.0)


def test_broker_timestamps_are_the_same_datetimes_as_arrow_gives() -> None:
    import pyarrow as pa

    from learntrack.streaming.parse import _stamps

    values = [
        dt.datetime(2026, 12, 6, 9, 1, 2, 345678, tzinfo=dt.UTC),
        None,
        dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),
    ]
    for unit in ("us", "ms"):
        column = pa.array(values, pa.timestamp(unit, tz="UTC"))
        assert _stamps(column) == column.to_pylist()
