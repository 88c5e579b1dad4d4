"""What every benchmark shares: figures, sections, the bench stack, the report.

Runs in the ``learntrack bench`` process (the driver of any Spark work it starts).
A benchmark measures; it never asserts. Each figure is the median of repeated runs
with its min and max, and says how to reproduce it.

The bench works on its **own stack**: its own data directory
(``.learntrack/bench`` by default) and the default ports shifted by
``--port-offset`` (20000), started by :func:`bench_env` + ``Stack().up()`` and
stopped at the end, so a user's ``make up`` stack and its data are never touched
and every run starts from empty stores.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from learntrack.config import Settings, server_ports

#: Settings keys of every port the stack opens, with their defaults (as the
#: tests' conftest shifts them).
PORTS = server_ports()
DEFAULT_PORT_OFFSET = 20000


def bench_env(data_dir: Path, port_offset: int = DEFAULT_PORT_OFFSET) -> dict[str, str]:
    """Environment of the bench stack: its data dir and shifted ports."""
    return {
        "LEARNTRACK_DATA_DIR": str(data_dir),
        **{f"LEARNTRACK_{k}": str(v + port_offset) for k, v in PORTS.items()},
        "LEARNTRACK_SPARK__MASTER": os.environ.get(
            "LEARNTRACK_SPARK__MASTER", "local[2]"
        ),
    }


@contextmanager
def env_vars(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (settings are read from them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def settings_with(**env: str) -> Settings:
    """Settings of the current environment plus ``env`` (``LEARNTRACK_...`` keys)."""
    from learntrack.config import get_settings

    with env_vars(env):
        return get_settings()


@dataclass(frozen=True)
class Figure:
    """One measured quantity: median of ``runs`` samples with its spread.

    ``target`` is the goal from the benchmarks issue in words (e.g. ``>= 25,000``),
    ``met`` whether the median reaches it (None: no target).
    """

    name: str
    unit: str
    median: float
    low: float
    high: float
    runs: int
    note: str = ""
    target: str = ""
    met: bool | None = None

    @classmethod
    def of(
        cls,
        name: str,
        unit: str,
        samples: list[float],
        note: str = "",
        *,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> Figure:
        """A figure from samples; ``at_least``/``at_most`` set the target."""
        med = statistics.median(samples)
        target, met = "", None
        if at_least is not None:
            target, met = f">= {_num(at_least)}", med >= at_least
        elif at_most is not None:
            target, met = f"<= {_num(at_most)}", med <= at_most
        return cls(
            name, unit, med, min(samples), max(samples), len(samples), note, target, met
        )


@dataclass
class Section:
    """One part of the report: a title, its figures, and free text (tables...)."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


@dataclass
class BenchContext:
    """What a section gets: the bench stack's settings and the run's size."""

    settings: Settings
    quick: bool
    runs: int
    work_dir: Path
    report: Callable[[str], None]
    env: dict[str, str] = field(default_factory=dict)
    spark: Any = None
    results: dict[str, Any] = field(default_factory=dict)

    def get_spark(self) -> Any:
        """The run's one SparkSession (built on first use, stopped by the runner)."""
        if self.spark is None:
            from learntrack.spark import build_spark

            self.spark = build_spark(self.settings)
        return self.spark


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def machine() -> dict[str, Any]:
    """Cores, memory and versions of what was measured."""
    mem_kib = 0
    cpu = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in (
        "confluent-kafka",
        "pyspark",
        "pymongo",
        "redis",
        "neo4j",
        "cassandra-driver",
        "duckdb",
    ):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "load_avg_at_start": list(os.getloadavg()),
        "versions": versions,
    }


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def _num(x: float) -> str:
    if abs(x) >= 100:  # noqa: PLR2004
        return f"{x:,.0f}"
    if abs(x) >= 10:  # noqa: PLR2004
        return f"{x:,.1f}"
    return f"{x:,.2f}"


def write(
    sections: list[Section],
    out_dir: Path,
    *,
    quick: bool,
    info: dict[str, Any],
    keep: Sequence[str] = (),
    order: Sequence[str] = (),
) -> None:
    """``benchmarks.json`` (machine-readable) and ``benchmarks.md`` in ``out_dir``.

    ``keep``: keys of sections not re-run this time to carry over from the report
    already in ``out_dir`` (same kind, quick or full); each section says when it
    was measured. ``order``: section keys in report order (others go last).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    fresh = {
        s.key: {
            "key": s.key,
            "title": s.title,
            "seconds": round(s.seconds, 1),
            "error": s.error,
            "figures": [asdict(f) for f in s.figures],
            "text": s.text,
            "measured_at": stamp,
            "load_avg_at_start": info["load_avg_at_start"][0],
        }
        for s in sections
    }
    earlier = _earlier_sections(out_dir, quick) if keep else {}
    rank = {k: i for i, k in enumerate(order)}
    keys = sorted(dict.fromkeys([*keep, *fresh]), key=lambda k: rank.get(k, len(rank)))
    chosen = [fresh.get(k) or earlier.get(k) for k in keys]
    payload = {
        "measured_at": stamp,
        "quick": quick,
        "machine": info,
        "sections": [c for c in chosen if c is not None],
    }
    (out_dir / "benchmarks.json").write_bytes(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2)
    )
    (out_dir / "benchmarks.md").write_text(_markdown(payload))


def carried_results(
    out_dir: Path, quick: bool, result_keys: Mapping[str, Mapping[str, str]]
) -> dict[str, float]:
    """``ctx.results`` entries of sections kept from the report in ``out_dir``.

    ``result_keys``: for each kept section, figure name -> result key (a
    section's ``RESULT_KEYS``). A section re-run alone (``--only stream``) thus
    still compares with the raw limits of the report it joins.
    """
    carried: dict[str, float] = {}
    for key, section in _earlier_sections(out_dir, quick).items():
        names = result_keys.get(key, {})
        for fig in section["figures"]:
            if fig["name"] in names:
                carried[names[fig["name"]]] = float(fig["median"])
    return carried


def _earlier_sections(out_dir: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The sections of the report already in ``out_dir``, if of the same kind."""
    try:
        earlier = orjson.loads((out_dir / "benchmarks.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if earlier.get("quick") != quick:
        return {}
    for s in earlier["sections"]:
        s.setdefault("measured_at", earlier["measured_at"])
        s.setdefault("load_avg_at_start", earlier["machine"]["load_avg_at_start"][0])
    return {s["key"]: s for s in earlier["sections"]}


def _markdown(payload: dict[str, Any]) -> str:
    info, stamp = payload["machine"], payload["measured_at"]
    mixed = any(s["measured_at"] != stamp for s in payload["sections"])
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`learntrack bench`; `--quick` for a short run; "
        "`--only SECTION,...` re-runs some sections and keeps the others). The bench "
        "starts its own stack (own data directory and ports), so nothing of yours is "
        "touched. Each figure is the median of repeated runs, with min and max; the "
        "target is the one the benchmarks issue set, and the last column says "
        "whether the median reaches it.",
        "",
        f"Measured {stamp} on {info['cores']} cores, {info['memory_gib']} GiB "
        f"({info['cpu'] or 'unknown CPU'}), load average at start "
        f"{info['load_avg_at_start'][0]:.2f}, Python {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; {'quick' if payload['quick'] else 'full'} run."
        + (" Sections measured at another time say so at their end." if mixed else ""),
        "",
    ]
    for s in payload["sections"]:
        lines += [f"## {s['title']}", ""]
        if s["error"]:
            lines += [f"**Not measured**: {s['error']}", ""]
        if s["figures"]:
            lines += [
                "| what | median | min | max | runs | target | met | notes |",
                "|---|---:|---:|---:|---:|---|---|---|",
            ]
            lines += [
                f"| {f['name']} | {_num(f['median'])} {f['unit']} | {_num(f['low'])} "
                f"| {_num(f['high'])} | {f['runs']} | {f['target']} | "
                f"{_met(f['met'])} | {f['note']} |"
                for f in s["figures"]
            ]
            lines.append("")
        lines += [*s.get("text", []), ""] if s.get("text") else []
        when = (
            f" Measured {s['measured_at']}, load average at start "
            f"{s['load_avg_at_start']:.2f}."
            if s["measured_at"] != stamp
            else ""
        )
        lines += [f"_Section time: {s['seconds']:.0f} s._{when}", ""]
    lines += ["Reproduce: `make bench` (or `learntrack bench --quick`).", ""]
    return "\n".join(lines)
