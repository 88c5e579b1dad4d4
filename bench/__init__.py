"""``learntrack bench``: measured figures, with the machine they were measured on.

Runs in the CLI process. It starts a stack of its own (see
:mod:`bench.core`), runs the requested sections in order, and writes
``docs/benchmarks.json`` (machine-readable) and ``docs/benchmarks.md`` (for users).
A section that fails is reported as not measured, with its error; the others
still run. Benchmarks measure; tests never assert timings.

Sections, in run order (each a module with ``run(ctx) -> Section``):
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.core import (
    DEFAULT_PORT_OFFSET,
    BenchContext,
    Figure,
    Section,
    bench_env,
    carried_results,
    env_vars,
    machine,
    write,
)
from learntrack.errors import LearnTrackError

__all__ = ["SECTIONS", "Figure", "Section", "run"]

#: key -> (module, what it measures). Order is run order: raw limits first, the
#: stream while the stores are small (legacy compares with its rate), the 5M-row
#: sections last.
SECTIONS: dict[str, tuple[str, str]] = {
    "raw": ("bench.raw", "raw limits of each store and the Spark source"),
    "producers": ("bench.producers", "generator and SDK publish rates"),
    "xapi": ("bench.xapi", "statements/s through the LRS, 100 per request and one"),
    "stream": (
        "bench.stream",
        "sustained end-to-end rate, freshness, scaling, a micro-batch profile",
    ),
    "legacy": ("bench.legacy", "the original per-event path vs ours"),
    "queries": ("bench.queries", "latest-20 and profile update at 5M"),
    "batch": ("bench.batch", "a 5M-event day to Cassandra vs DuckDB"),
}
__doc__ += "\n".join(f"- ``{k}``: {v[1]}" for k, v in SECTIONS.items()) + "\n"


def parse_only(text: str | None) -> list[str]:
    """``raw,stream`` -> the section keys, in run order; a bad name is an error."""
    if not text:
        return list(SECTIONS)
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in SECTIONS]
    if unknown or not wanted:
        msg = (
            f"unknown bench section {', '.join(unknown) or repr(text)}: "
            f"choose from {', '.join(SECTIONS)}"
        )
        raise LearnTrackError(msg)
    return [k for k in SECTIONS if k in wanted]


def run(  # noqa: PLR0913
    *,
    quick: bool,
    out_dir: Path,
    only: list[str],
    data_dir: Path,
    port_offset: int = DEFAULT_PORT_OFFSET,
    keep_stack: bool = False,
    report: Callable[[str], None] = print,
) -> list[Section]:
    """Start the bench stack, run ``only``'s sections, write the report."""
    from learntrack.config import get_settings
    from learntrack.stack.manager import Stack

    env = bench_env(data_dir, port_offset)
    info = machine()
    keep = [k for k in SECTIONS if k not in only]
    sections: list[Section] = []
    with env_vars(env):
        stack = Stack()
        was_running = stack.all_running()
        report(f"bench stack: starting in {data_dir} (ports +{port_offset})")
        stack.up(report=lambda _m: None)
        ctx = BenchContext(
            settings=get_settings(),
            quick=quick,
            runs=2 if quick else 3,
            work_dir=data_dir / "work",
            report=report,
            env=env,
        )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        ctx.results.update(carried_results(out_dir, quick, result_keys(keep)))
        try:
            for key in only:
                module, what = SECTIONS[key]
                report(f"[{key}] {what}")
                started = time.perf_counter()
                try:
                    section: Section = importlib.import_module(module).run(ctx)
                except Exception as err:  # noqa: BLE001 - report it, run the rest
                    report(traceback.format_exc())
                    section = Section(key, f"{key}: {what}", error=f"{err}")
                section.seconds = time.perf_counter() - started
                sections.append(section)
                for f in section.figures:
                    report(f"[{key}] {f.name}: {f.median:,.2f} {f.unit}")
                # After each section (partial results too); sections not asked
                # for this time are kept from the report already there.
                write(
                    sections,
                    out_dir,
                    quick=quick,
                    info=info,
                    keep=keep,
                    order=list(SECTIONS),
                )
        finally:
            if ctx.spark is not None:
                ctx.spark.stop()
            if not was_running and not keep_stack:
                stack.down(report=lambda _m: None)
    return sections


def result_keys(keys: list[str]) -> dict[str, dict[str, str]]:
    """Each section's ``RESULT_KEYS`` (figure name -> ``ctx.results`` key)."""
    return {
        k: dict(getattr(importlib.import_module(SECTIONS[k][0]), "RESULT_KEYS", {}))
        for k in keys
    }
