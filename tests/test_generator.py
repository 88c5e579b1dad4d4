"""The load generator: determinism, realism, truth consistency, and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from pydantic import ValidationError

from learntrack.config import Settings
from learntrack.events import ActivityEvent, validation_context
from learntrack.producers.generator import (
    MALFORMED_KINDS,
    MS,
    Dataset,
    Generator,
    GeneratorConfig,
    build_truth,
    event_bytes,
    multi_region_students,
)
from learntrack.topics import read_topic

START = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
CTX = validation_context(now=dt.datetime(2026, 11, 23, tzinfo=dt.UTC))


def make(seed: int = 7, **kw: object) -> Dataset:
    params: dict[str, object] = {
        "students": 400,
        "courses": 12,
        "events": 30_000,
        "start": START,
        "seed": seed,
        "bad_ratio": 0.01,
    }
    params.update(kw)
    return Generator(GeneratorConfig(**params)).build()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make()


def test_same_seed_same_everything(data: Dataset) -> None:
    again = make()
    assert again.events == data.events
    assert again.order == data.order
    assert [m.value for m in again.malformed] == [m.value for m in data.malformed]
    assert again.profiles == data.profiles
    assert build_truth(again) == build_truth(data)
    other = make(seed=8)
    assert other.events != data.events


def test_every_generated_event_satisfies_the_contract(data: Dataset) -> None:
    assert len(data.events) == 30_000
    for e in data.events:
        ActivityEvent.model_validate_json(event_bytes(e), context=CTX)
    assert len({e[1] for e in data.events}) == len(data.events)  # unique eventIds


def test_every_malformed_record_is_rejected_and_all_kinds_appear(data: Dataset) -> None:
    assert len(data.malformed) == 300
    assert {m.kind for m in data.malformed} == set(MALFORMED_KINDS)
    for m in data.malformed:
        if m.kind == "oversized":
            assert len(m.value) > 64 * 1024
            continue
        with pytest.raises((ValidationError, ValueError)):
            ActivityEvent.model_validate_json(m.value, context=CTX)


def test_truth_is_consistent_with_the_events(data: Dataset) -> None:
    truth = build_truth(data)
    assert truth["counts"]["valid"] == len(data.events)
    assert truth["counts"]["malformed"] == len(data.malformed)
    assert sum(s["total"] for s in truth["perStudent"].values()) == len(data.events)
    assert sum(c["count"] for c in truth["perCourseDay"].values()) == len(data.events)
    by_action = Counter(e[4] for e in data.events)
    summed: Counter[str] = Counter()
    for s in truth["perStudent"].values():
        summed.update(s["actions"])
    assert summed == by_action
    for key, cd in truth["perCourseDay"].items():
        students = {e[2] for e in data.events if f"{e[3]}|{key.split('|')[1]}" == key}
        assert cd["activeStudents"] == len(students)
    assert len(truth["malformed"]) == len(data.malformed)
    assert json.loads(json.dumps(truth)) == truth  # JSON-ready


def test_labelled_anomalies_are_exactly_the_multi_region_students(
    data: Dataset,
) -> None:
    labelled = {a["studentId"] for a in data.anomalies}
    assert len(labelled) == 4  # 1% of 400 students
    assert {a["kind"] for a in data.anomalies} == {
        "impossible_travel",
        "concurrent_sessions",
    }
    assert multi_region_students(data.events, dt.timedelta(minutes=30)) == labelled


def test_legitimate_travel_is_hours_away_from_other_regions(data: Dataset) -> None:
    assert data.travel
    for trip in data.travel:
        items = sorted((e[0], e[5]) for e in data.events if e[2] == trip["studentId"])
        switches = [
            b[0] - a[0] for a, b in zip(items, items[1:], strict=False) if a[1] != b[1]
        ]
        assert all(gap >= 2 * 3600 * MS for gap in switches), switches


def test_activity_is_heavy_tailed_and_follows_a_daily_rhythm(data: Dataset) -> None:
    per_student = sorted(Counter(e[2] for e in data.events).values(), reverse=True)
    top_decile = sum(per_student[: len(per_student) // 10])
    assert top_decile > 0.3 * len(data.events)
    hours = Counter(
        dt.datetime.fromtimestamp(e[0] / MS, dt.UTC).hour for e in data.events
    )
    assert hours[11] > 3 * hours[3]
    sessions: dict[str, list[str]] = defaultdict(list)
    for e in data.events:
        sessions[e[6]].append(e[4])
    assert sum(1 for s in sessions.values() if s[0] == "login") > len(sessions) / 2


def test_out_of_order_delivery_is_bounded() -> None:
    data = make(out_of_order=dt.timedelta(minutes=2), bad_ratio=0.0)
    times = [data.events[i][0] for i in data.order]
    assert times != sorted(times)
    running_max = 0
    for t in times:
        running_max = max(running_max, t)
        assert running_max - t <= 2 * 60 * MS


@pytest.mark.stack
def test_cli_generate_publishes_exactly_the_data_set(
    settings: Settings, prefix: str, tmp_path: Path
) -> None:
    from learntrack.clients import mongo_client
    from learntrack.topics import create_topic

    topic = f"{prefix}.activity"
    create_topic(settings, topic, 6)
    truth_file = tmp_path / "truth.json"
    args = [
        "--students", "60", "--courses", "5", "--events", "3000", "--seed", "5",
        "--bad-ratio", "0.02", "--start", "2026-11-20", "--topic", topic,
        "--truth", str(truth_file),
    ]  # fmt: skip
    env = {**os.environ, "LEARNTRACK_MONGO__DATABASE": prefix}
    proc = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "generate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    expected = Generator(
        GeneratorConfig(
            students=60, courses=5, events=3000, seed=5, bad_ratio=0.02,
            start=dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
        )
    ).build()  # fmt: skip
    messages = read_topic(settings, topic)
    assert len(messages) == 3000 + 60
    published: Counter[str] = Counter()
    for m in messages:
        try:
            published[json.loads(m.value())["eventId"]] += 1
        except (ValueError, KeyError):
            continue  # a malformed record
    expected_ids = {e[1] for e in expected.events}
    assert all(published[eid] == 1 for eid in expected_ids)
    truth = json.loads(truth_file.read_text())
    assert truth["counts"] == build_truth(expected)["counts"]
    with mongo_client(settings) as client:
        students = client[prefix]["students"]
        assert students.count_documents({}) == 60
        doc = students.find_one({"studentId": "S000001"})
        assert doc is not None and set(doc) >= {"name", "email", "progress"}
        client.drop_database(prefix)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "10", "--duration", "5s", "--rate", "5"], "not both"),
        (["--duration", "5s"], "needs a --rate"),
        (["--span", "forever"], "invalid duration"),
        (["--start", "yesterday"], "invalid start"),
        (["--students", "0"], "students"),
        (["--bad-ratio", "2"], "bad-ratio"),
    ],
)
def test_cli_generate_rejects_bad_arguments_in_one_line(
    args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "generate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
