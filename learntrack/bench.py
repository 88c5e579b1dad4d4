"""``learntrack bench``: measured figures, with the machine they were measured on.

Runs in the CLI process against the running local stack. Each figure is the median
of repeated runs, reported with its min and max. Results go to
``docs/benchmarks.json`` (machine-readable) and ``docs/benchmarks.md`` (for users).
Benchmarks measure; tests never assert timings.

Today this measures the producer side (issue 3): one load-generator process
publishing to the local broker, and the validating SDK path course apps use.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

from learntrack.config import Settings

BENCH_TOPIC = "learntrack.bench"


@dataclass(frozen=True)
class Figure:
    """One measured quantity: median of ``runs`` with its spread."""

    name: str
    unit: str
    median: float
    low: float
    high: float
    runs: int
    command: str
    note: str = ""


def machine() -> dict[str, Any]:
    """Cores, memory and versions of what was measured."""
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "versions": {
            pkg: version(pkg)
            for pkg in ("confluent-kafka", "pyspark", "pymongo", "noida-db")
        },
    }


def _fresh_topic(settings: Settings) -> None:
    """(Re)create the bench topic so runs don't pile data on the in-memory broker."""
    from learntrack.topics import create_topic, delete_topics

    delete_topics(settings, [BENCH_TOPIC])
    create_topic(settings, BENCH_TOPIC, settings.kafka.partitions, retention_ms=600_000)


def _publish_rates(
    settings: Settings, runs: int, count: int, body: Callable[[Any], object]
) -> list[float]:
    """Records/s of ``body(producer)`` publishing ``count`` records, until delivered."""
    from learntrack.producers import ActivityProducer

    rates = []
    for _ in range(runs):
        _fresh_topic(settings)
        with ActivityProducer(settings, topic=BENCH_TOPIC) as producer:
            started = time.perf_counter()
            body(producer)
            producer.flush(120)
            rates.append(count / (time.perf_counter() - started))
    return rates


def bench_generator(settings: Settings, events: int, runs: int) -> Figure:
    """One generator process: serialize + publish (acks=all, idempotent), delivered."""
    from learntrack.producers.generator import Generator, GeneratorConfig, publish

    data = Generator(GeneratorConfig(students=5000, events=events, seed=1)).build()
    rates = _publish_rates(
        settings, runs, len(data.order), lambda p: publish(data, p.send_serialized)
    )
    return Figure(
        "generator publish (one process, delivered)",
        "events/s",
        statistics.median(rates),
        min(rates),
        max(rates),
        runs,
        f"learntrack bench (events={events})",
        "serialization + produce + delivery reports; events pre-generated",
    )


def bench_sdk_send(settings: Settings, events: int, runs: int) -> Figure:
    """The course-app path: validate each event with the model, then publish."""
    from learntrack.producers.generator import Generator, GeneratorConfig, event_dict

    data = Generator(GeneratorConfig(students=1000, events=events, seed=2)).build()
    dicts = [event_dict(e) for e in data.events]

    def send_all(producer: Any) -> None:
        for d in dicts:
            producer.send(d)

    rates = _publish_rates(settings, runs, len(dicts), send_all)
    return Figure(
        "SDK send() with validation (one thread)",
        "events/s",
        statistics.median(rates),
        min(rates),
        max(rates),
        runs,
        f"learntrack bench (events={events})",
        "pydantic validation + JSON + produce, per event",
    )


def run(settings: Settings, *, quick: bool, out_dir: Path) -> list[Figure]:
    """Run the benchmarks and write the results; returns the figures."""
    runs = 3
    gen_events = 100_000 if quick else 300_000
    sdk_events = 20_000 if quick else 60_000
    figures = [
        bench_generator(settings, gen_events, runs),
        bench_sdk_send(settings, sdk_events, runs),
    ]
    _fresh_topic(settings)  # leave the broker small
    write(figures, out_dir, quick=quick)
    return figures


def write(figures: list[Figure], out_dir: Path, *, quick: bool) -> None:
    """docs/benchmarks.json and docs/benchmarks.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    payload = {
        "measured_at": stamp,
        "quick": quick,
        "machine": info,
        "figures": [asdict(f) for f in figures],
    }
    (out_dir / "benchmarks.json").write_bytes(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2)
    )
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`learntrack bench`; `--quick` for a short run). Each",
        "figure is the median of repeated runs on the local stack, with min and max.",
        "",
        f"Measured {stamp} on {info['cores']} cores, {info['memory_gib']} GiB "
        f"({info['cpu'] or 'unknown CPU'}), Python {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; {'quick' if quick else 'full'} run.",
        "",
        "| what | median | min | max | runs | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {f.name} | {f.median:,.0f} {f.unit} | {f.low:,.0f} | {f.high:,.0f} | "
        f"{f.runs} | {f.note} |"
        for f in figures
    ]
    lines += [
        "",
        "Reproduce: `make up && make bench` (or `learntrack bench --quick`).",
        "",
    ]
    (out_dir / "benchmarks.md").write_text("\n".join(lines))
