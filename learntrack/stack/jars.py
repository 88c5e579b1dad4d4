"""The JVM parts of the local stack, resolved from Maven Central by ``mvn``.

Runs in the CLI process (``learntrack stack fetch``, ``make setup``, ``stack up``)
and in the Spark driver (Spark's Kafka connector). Each part is a small committed
``pom.xml`` under ``learntrack/stack/jvm/<part>/`` with pinned versions; Maven's own
``dependency:copy-dependencies`` copies its jars into ``<jars_dir>/<part>/``. A part
is fetched only when missing or when its pom changed (a stamp holds the pom's hash),
and a failed fetch leaves nothing half-copied behind.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from learntrack.config import Settings
from learntrack.errors import StackError

#: The committed poms, one folder per part.
POM_ROOT = Path(__file__).parent / "jvm"
#: Every part: the three JVM servers and Spark's Kafka connector.
PARTS = ("kafka", "cassandra", "neo4j", "spark-kafka")
STAMP = ".resolved"


def pom(part: str) -> Path:
    """The committed pom of ``part``."""
    if part not in PARTS:
        msg = f"unknown JVM part {part!r}: choose one of {', '.join(PARTS)}"
        raise StackError(msg)
    return POM_ROOT / part / "pom.xml"


def part_dir(settings: Settings, part: str) -> Path:
    """Where the jars of ``part`` are copied."""
    return settings.stack.jars_dir / part


def _pom_hash(part: str) -> str:
    return hashlib.sha256(pom(part).read_bytes()).hexdigest()


def resolved(settings: Settings, part: str) -> bool:
    """Whether the jars of ``part`` are there and match the committed pom."""
    stamp = part_dir(settings, part) / STAMP
    try:
        return stamp.read_text().strip() == _pom_hash(part)
    except OSError:
        return False


def jars(settings: Settings, part: str) -> list[Path]:
    """The jar files of a resolved ``part`` (sorted), or a StackError with the fix."""
    if not resolved(settings, part):
        msg = (
            f"the {part} jars are not in {part_dir(settings, part)}: run "
            "`learntrack stack fetch` (or `make setup`)"
        )
        raise StackError(msg)
    return sorted(part_dir(settings, part).glob("*.jar"))


def classpath(settings: Settings, part: str) -> str:
    """A ``-cp`` value holding every jar of ``part``."""
    return ":".join(str(j) for j in jars(settings, part))


def fetch(
    settings: Settings,
    parts: Iterable[str] = PARTS,
    report: Callable[[str], None] = print,
) -> dict[str, float]:
    """Resolve every missing part with ``mvn``; return the seconds each one took.

    Idempotent: a part already resolved from the same pom is skipped (not timed).
    """
    timings: dict[str, float] = {}
    for part in parts:
        if resolved(settings, part):
            continue
        report(f"resolving {part} with mvn (its jars are missing or its pom changed)")
        started = time.monotonic()
        _copy_dependencies(settings, part)
        timings[part] = time.monotonic() - started
        count = len(list(part_dir(settings, part).glob("*.jar")))
        report(f"{part}: {count} jars in {timings[part]:.1f} s")
    return timings


def _copy_dependencies(settings: Settings, part: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = "mvn not found on PATH: apt-get install -y maven (make setup does it)"
        raise StackError(msg)
    final = part_dir(settings, part).resolve()  # mvn -f runs in the pom's folder
    staging = final.with_name(f".{part}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom(part)),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        errors = [ln for ln in lines if "ERROR" in ln][:5] or lines[-5:]
        msg = f"mvn could not resolve {part}:\n" + "\n".join(errors)
        raise StackError(msg)
    (staging / STAMP).write_text(_pom_hash(part) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.replace(final)
