"""Bench section ``stream``: the streaming job end to end, on the bench stack.

Runs in the ``learntrack bench`` process. The stream under test is a
``learntrack stream`` subprocess, as users run it (default trigger, every sink
and detection on), with its own topics, MongoDB database, Redis db and
checkpoint (:mod:`bench.stream_run`), fed by paced generator events
from a thread of the bench (:mod:`bench.stream_load`).

1. **Sustained rate.** A ladder of input rates, each held for 60 s (quick: one
   3 s step at 5,000 events/s, which is also the freshness step),
   the stream running throughout. Every second the bench reads each query's
   *lag*: records on the broker (its end offsets) that the query's last committed
   batch (its checkpoint) does not cover yet. A step is **sustained** when

   a. the producer published at >= 95 % of the step's rate;
   b. the lag does not grow: the query's mean lag over the last third of
      the step is at most its mean over the first third plus
      max(2 s of input, 1,000 records);
   c. the backlog drains: the stream has processed every published record
      within 10 s after the producer stops.

   The ladder stops at the first step that is not sustained (the full run then
   tries the midpoint once). The figure is the published rate of the highest
   sustained step; its ratio to the raw section's MongoDB ``insert_many`` rate
   says how much of a store's raw speed the whole pipeline keeps.

   The full run climbs the ladder ``ctx.runs`` times, each with a stream started
   anew on emptied topics and stores, and reports the median of the runs with
   their spread; the quick run climbs it once.
2. **Freshness at 5,000 events/s** (a ladder step; run on its own when the ladder
   stopped below it): p50/p95/p99 from handing a record to the producer to seeing
   it in MongoDB ``activities`` and in the student's Redis hash, and from the
   second region's event to its alert in MongoDB ``alerts``, by polling every
   0.1 s (:class:`bench.stream_load.Probe`).
3. **Scaling.** Drain rate of a pre-published backlog by ``learntrack stream
   --available-now`` with 1 or 2 Spark cores, 3 or 6 partitions, and with the
   detection off: rows over the wall-clock time between the first and the
   last batch line (the first batch pays for starting Python workers). A
   capacity estimate in bigger batches, not a sustained rate. Not in a quick run.
4. **Where time goes.** Per-sink seconds of the batch reports (the rest = the
   batch minus its sinks), averaged over the steady batches of the highest
   sustained step and of the drain, the cores each process used meanwhile, and
   the before/after of the change the profile led to
   (:mod:`bench.stream_profile`; not in a quick run).

Everything the section creates (topics, the MongoDB database, the Redis db,
checkpoints, graph nodes, the lake) is deleted after each run; the streams are
stopped by PID with SIGTERM. Their output is kept in ``<work>/stream/*.log``.
"""

from __future__ import annotations

import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from bench.core import BenchContext, Figure, Section, percentile
from bench.stream_load import Load, Prepared, Probe, Published
from bench.stream_profile import (
    SINKS,
    STEPS,
    FixedCost,
    changed_text,
    cores_table,
    fixed_cost_figures,
    profile,
    profile_table,
    run_fixed_cost,
)
from bench.stream_run import (
    BatchLine,
    CpuMeter,
    LagReader,
    LagSample,
    StreamProcess,
    cleanup,
    isolated,
    prepare,
    restore_lake,
    set_lake_aside,
)
from learntrack.errors import LearnTrackError

SUSTAINED = "highest sustained input rate, every sink on"
#: Figure name -> ``ctx.results`` key, for a report this section is kept in.
RESULT_KEYS = {SUSTAINED: "stream.sustained_rate"}
#: Rates (events/s) climbed until a step is not sustained, and the rates tried
#: downwards when the first one is not.
FRESH_RATE = 5000
LADDER_FULL = (1000, 2000, 3000, 5000, 7500, 10_000, 15_000, 20_000, 25_000, 30_000)
DOWN_FULL = (500,)
#: The quick run (``--quick``, minutes in all): one short step at the freshness
#: rate, no steps down, no scaling runs (each starts a stream anew) and no
#: de-duplication before/after.
LADDER_QUICK = (FRESH_RATE,)
DOWN_QUICK: tuple[int, ...] = ()
STEP_S, STEP_QUICK_S = 60.0, 3.0
PRODUCER_SHORT = 0.95
GROWTH_S = 2.0
GROWTH_MIN = 1000
DRAIN_OK_S = 10.0
#: Longest wait for a backlog before the next step (the ladder ends if exceeded).
DRAIN_MAX_S, DRAIN_MAX_QUICK_S = 180.0, 90.0
#: Ladder runs in a quick run (a full run makes ``ctx.runs`` of them): each
#: starts a stream anew, which a quick run cannot afford twice.
LADDER_RUNS_QUICK = 1
#: Partitions and cores of the scaling runs; the first is the default setup.
SCALING = (
    ("local[2]", 6, True),
    ("local[1]", 6, True),
    ("local[2]", 3, True),
    ("local[2]", 6, False),  # what detection costs
)


@dataclass
class Step:
    """One rung of the ladder: what was published and how the stream kept up."""

    rate: float
    seconds: float
    published: Published
    lags: list[LagSample]
    drained_s: float | None
    batches: list[BatchLine]
    cores: dict[str, float]
    mongo: list[float] = field(default_factory=list)
    redis: list[float] = field(default_factory=list)
    alerts: list[float] = field(default_factory=list)
    unseen: int = 0

    def thirds(self) -> tuple[float, float]:
        """Mean lag over the first and the last third of the step."""
        lags = [s.lag for s in self.lags] or [0]
        k = max(1, len(lags) // 3)
        return statistics.fmean(lags[:k]), statistics.fmean(lags[-k:])

    @property
    def max_lag(self) -> int:
        """Highest lag seen while publishing."""
        return max((s.lag for s in self.lags), default=0)

    @property
    def verdict(self) -> str:
        """``sustained``, or every reason it was not (see the module's definition)."""
        reasons = []
        first, last = self.thirds()
        if last > first + max(GROWTH_S * self.rate, GROWTH_MIN):
            reasons.append("lag grew")
        if self.drained_s is None or self.drained_s > DRAIN_OK_S:
            reasons.append(f"not drained in {DRAIN_OK_S:.0f} s")
        if self.published.rate < PRODUCER_SHORT * self.rate:
            reasons.append(
                f"producer reached {self.published.rate / self.rate:.1%} of the rate"
            )
        return "; ".join(reasons) or "sustained"

    @property
    def sustained(self) -> bool:
        """Whether the stream kept up with this step."""
        return self.verdict == "sustained"

    def steady_batches(self) -> list[BatchLine]:
        """Batches that ended while publishing, after the first two seconds."""
        p = self.published
        return [b for b in self.batches if p.started + 2 <= b.at <= p.ended]


@dataclass
class Ladder:
    """The ladder's steps and the freshness step."""

    steps: list[Step] = field(default_factory=list)
    fresh: Step | None = None
    alerts_unattributed: int = 0
    detect: bool = True  # detection ran (LEARNTRACK_DETECT__ENABLED)

    def best(self) -> Step | None:
        """The highest sustained step."""
        ok = [s for s in self.steps if s.sustained]
        return max(ok, key=lambda s: s.rate) if ok else None


@dataclass
class Drain:
    """One ``--available-now`` run over a pre-published backlog."""

    master: str
    partitions: int
    detect: bool
    backlog: int
    per_batch: int
    batches: list[BatchLine]
    cores: dict[str, float]

    @property
    def rate(self) -> float:
        """Rows/s over the batches after the first (wall clock between lines)."""
        done = [b for b in self.batches if b.rows]
        if len(done) < 2:  # noqa: PLR2004
            msg = f"{self.label}: fewer than 2 batches with rows ({len(done)})"
            raise LearnTrackError(msg)
        return sum(b.rows for b in done[1:]) / max(done[-1].at - done[0].at, 1e-9)

    @property
    def label(self) -> str:
        """``2 cores, 6 partitions``."""
        cores = self.master.removeprefix("local[").removesuffix("]")
        plural = "s" if cores != "1" else ""
        label = f"{cores} core{plural}, {self.partitions} partitions"
        return label if self.detect else f"{label}, detection off"


# -- the ladder -------------------------------------------------------------------
class _Rig:
    """The running stream with its load, lag reader, probe and CPU meter."""

    def __init__(self, ctx: BenchContext, load: Load, proc: StreamProcess) -> None:
        from learntrack.producers import ActivityProducer

        self.ctx = ctx
        self.load = load
        self.proc = proc
        self.lag = LagReader(load.settings)
        self.probe = Probe(load.settings, load)
        self.cpu = CpuMeter(ctx.settings, proc.pid)
        self.producer = ActivityProducer(load.settings)

    def close(self) -> None:
        self.producer.close(60)
        self.probe.close()
        self.lag.close()

    def publish_in_thread(
        self, rate: float, prepared: Prepared
    ) -> tuple[Any, dict[str, Any]]:
        out: dict[str, Any] = {}

        def body() -> None:
            try:
                out["published"] = self.load.send(self.producer, rate, prepared)
            except Exception as err:  # noqa: BLE001 - re-raised in the main thread
                out["error"] = err

        thread = threading.Thread(target=body, name="bench-stream-load", daemon=True)
        thread.start()
        return thread, out

    def drain(self, since: float, limit_s: float) -> float | None:
        """Seconds from ``since`` until the stream has caught up (None: not)."""
        deadline = since + limit_s
        while True:
            sample = self.lag.sample()
            if sample.lag == 0:
                return max(0.0, sample.at - since)
            if time.monotonic() > deadline:
                return None
            self.proc.check()
            self.probe.run_while(None, time.monotonic() + 0.5)

    def step(self, rate: float, seconds: float) -> Step:
        """Publish at ``rate`` for ``seconds``; watch lag, freshness, drain."""
        records = max(1000, round(rate * seconds / 1000) * 1000)
        # Serialized before the step's clocks start: its CPU and lag figures and
        # the publishing rate cover sending only.
        prepared = self.load.prepare(rate, records)
        cpu_before = self.cpu.snapshot()
        thread, out = self.publish_in_thread(rate, prepared)
        lags: list[LagSample] = []
        next_lag = time.monotonic()
        while thread.is_alive():
            if time.monotonic() >= next_lag:
                lags.append(self.lag.sample())
                next_lag += 1.0
                self.proc.check()
            self.probe.run_while(thread, next_lag)
        thread.join()
        if "error" in out:
            raise out["error"]
        published: Published = out["published"]
        cores = CpuMeter.cores(
            cpu_before, self.cpu.snapshot(), published.ended - published.started
        )
        drained = self.drain(
            published.ended, DRAIN_MAX_QUICK_S if self.ctx.quick else DRAIN_MAX_S
        )
        self.probe.run_while(None, time.monotonic() + 3 * 0.1)
        window = (published.started, published.ended)
        probe = self.probe

        def within(values: list[Any]) -> list[float]:
            return [v.seconds for v in values if window[0] <= v.sent <= window[1]]

        unseen = sum(
            1 for t in probe.pending_mongo.values() if window[0] <= t <= window[1]
        )
        ended = time.monotonic()
        return Step(
            rate=rate,
            seconds=seconds,
            published=published,
            lags=lags,
            drained_s=drained,
            batches=[b for b in self.proc.batches if window[0] < b.at <= ended],
            cores=cores,
            mongo=within(probe.mongo),
            redis=within(probe.redis),
            alerts=within(probe.alerts),
            unseen=unseen,
        )


def _rates(ctx: BenchContext) -> tuple[tuple[int, ...], float]:
    """The ladder's rates and the seconds of a step."""
    return (LADDER_QUICK, STEP_QUICK_S) if ctx.quick else (LADDER_FULL, STEP_S)


def _start(
    ctx: BenchContext, load: Load, env: dict[str, str]
) -> tuple[StreamProcess, _Rig]:
    """Start the stream and warm it up (3,000 records); again if it fails starting.

    On a busy machine a Python worker can miss Spark's connect-back timeout while
    the stream starts; that is retried once, a later failure is not.
    """
    for attempt in (1, 2):
        proc = StreamProcess(env, log=ctx.work_dir / "stream" / "ladder.log")
        proc.start(ctx.env)
        rig = _Rig(ctx, load, proc)
        try:
            if attempt == 1:
                # (quick: unpaced; the warm-up is there to start the workers)
                rate = 0 if ctx.quick else 1000
                warm = rig.load.prepare(rate, 3000)
                thread, _out = rig.publish_in_thread(rate, warm)
                thread.join()
            if rig.drain(time.monotonic(), 900) is None:
                proc.fail("the stream did not process the warm-up in 15 min")
        except LearnTrackError as err:
            rig.close()
            proc.stop()
            if attempt == 2 or proc.started_work():  # noqa: PLR2004
                raise
            ctx.report(f"stream: failed while starting, once more: {err}")
            continue
        return proc, rig
    raise AssertionError("unreachable")


def run_ladder(ctx: BenchContext, ladder: Ladder) -> None:
    """Start the stream, warm it up, climb the ladder, then the 5k freshness step."""
    rates, seconds = _rates(ctx)
    settings, env = isolated(ctx, "ladder")
    ladder.detect = settings.detect.enabled
    prepare(settings)
    load = Load(settings, events_per_cycle=20_000 if ctx.quick else 50_000)
    load.build()
    load.upsert_profiles(settings)
    ctx.report("stream: starting the stream and warming it up")
    try:
        proc, rig = _start(ctx, load, env)
        try:
            _climb(ctx, rig, ladder, rates, seconds)
            ladder.alerts_unattributed = rig.probe.unattributed_alerts
        finally:
            rig.close()
            proc.stop()
    finally:
        cleanup(settings)


def _climb(
    ctx: BenchContext,
    rig: _Rig,
    ladder: Ladder,
    rates: tuple[int, ...],
    seconds: float,
) -> None:
    """The ladder's steps, the midpoint (full run), the 5k step if not climbed."""

    def step(rate: float, length: float) -> Step:
        done = rig.step(rate, length)
        _report_step(ctx, done)
        if done.drained_s is not None:
            rig.lag.trim()
        return done

    for rate in rates:
        ladder.steps.append(step(rate, seconds))
        if not ladder.steps[-1].sustained:
            break
    for rate in DOWN_QUICK if ctx.quick else DOWN_FULL:
        if ladder.best() is not None or ladder.steps[-1].drained_s is None:
            break
        ladder.steps.append(step(rate, seconds))
    best = ladder.best()
    above = [s.rate for s in ladder.steps if best is not None and s.rate > best.rate]
    if (
        not ctx.quick
        and best is not None
        and above
        and ladder.steps[-1].drained_s is not None
        and min(above) / best.rate > 1.2  # noqa: PLR2004
    ):
        mid = round((best.rate + min(above)) / 2 / 250) * 250
        ladder.steps.append(step(mid, seconds))
    fresh = [s for s in ladder.steps if s.rate == FRESH_RATE]
    if fresh:
        ladder.fresh = fresh[0]
    elif ladder.steps[-1].drained_s is not None:
        ladder.fresh = step(FRESH_RATE, STEP_QUICK_S if ctx.quick else 30.0)


def _report_step(ctx: BenchContext, step: Step) -> None:
    first, last = step.thirds()
    ctx.report(
        f"stream: {step.rate:,.0f}/s for {step.seconds:.0f} s: published "
        f"{step.published.rate:,.0f}/s, lag {first:,.0f} -> {last:,.0f} "
        f"(max {step.max_lag:,}), drained in "
        f"{'-' if step.drained_s is None else f'{step.drained_s:.1f} s'}, "
        f"{len(step.batches)} batches: {step.verdict}"
    )


# -- scaling --------------------------------------------------------------------------
def run_drain(
    ctx: BenchContext, load: Load, master: str, partitions: int, detect: bool = True
) -> Drain:
    """Pre-publish a backlog, then ``learntrack stream --available-now`` over it."""
    from learntrack.producers import ActivityProducer

    backlog, per_batch = 100_000, 20_000
    cores = master.removeprefix("local[").removesuffix("]")
    tag = f"drain-{cores}c-{partitions}p" + ("" if detect else "-nodetect")
    settings, env = isolated(
        ctx,
        tag,
        LEARNTRACK_SPARK__MASTER=master,
        LEARNTRACK_KAFKA__PARTITIONS=str(partitions),
        LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER=str(per_batch),
        LEARNTRACK_DETECT__ENABLED=str(detect).lower(),
    )
    try:
        prepare(settings)
        load.settings = settings
        load.position, load.counts = 0, {}
        load.upsert_profiles(settings)
        with ActivityProducer(settings) as producer:
            load.publish(producer, 0, backlog, probe=False)
        for attempt in (1, 2):
            log = ctx.work_dir / "stream" / f"{tag}.log"
            proc = StreamProcess(env, ["--available-now"], log=log)
            try:
                proc.start(ctx.env)
                snaps = CpuMeter(ctx.settings, proc.pid).sample_until_exit(proc, 900)
                code = proc.wait_exit(60)
                done = [b.at for b in proc.batches if b.rows]
                used = CpuMeter.between(snaps, done[0], done[-1]) if done else {}
            finally:
                proc.stop()
            if code == 0:
                break
            if attempt == 2 or proc.started_work():  # noqa: PLR2004
                proc.fail("the stream failed")
            ctx.report("stream: the drain failed while starting, once more")
    finally:
        cleanup(settings)
    return Drain(master, partitions, detect, backlog, per_batch, proc.batches, used)


def run_scaling(ctx: BenchContext, drains: list[Drain]) -> None:
    """The drain rate of each :data:`SCALING` setup, ``ctx.runs`` times."""
    load = Load(ctx.settings, events_per_cycle=50_000)
    load.build()
    for _run in range(ctx.runs):
        for master, partitions, detect in SCALING:
            drain = run_drain(ctx, load, master, partitions, detect)
            drains.append(drain)
            ctx.report(f"stream: drain, {drain.label}: {drain.rate:,.0f} rows/s")


# -- the report -----------------------------------------------------------------------
def _ms(x: float) -> str:
    return f"{x * 1000:,.0f}"


def _pcts(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f}"


def ladder_table(ladders: list[Ladder]) -> list[str]:
    """Every run's ladder as one markdown table, its steps in the order climbed."""
    lines = [
        "| run | rate (events/s) | published/s | s | batches | mean batch s | "
        "lag first 1/3 | lag last 1/3 | max lag | drained in | "
        "MongoDB p50 / p99 s | Redis p50 / p99 s | alert p99 s | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run, ladder in enumerate(ladders, 1):
        lines += [f"| {run} | {row}" for row in _ladder_rows(ladder)]
    return lines


def _ladder_rows(ladder: Ladder) -> list[str]:
    """One ladder's steps, then its freshness step if it was not one of them."""
    lines = []
    for s in ladder.steps + (
        [ladder.fresh] if ladder.fresh not in ladder.steps else []
    ):
        if s is None:
            continue
        first, last = s.thirds()
        mean_batch = statistics.fmean([b.seconds for b in s.batches] or [0])
        drained = "-" if s.drained_s is None else f"{s.drained_s:.1f} s"
        alert = f"{percentile(s.alerts, 0.99):.2f}" if s.alerts else "-"
        lines.append(
            f"{s.rate:,.0f} | {s.published.rate:,.0f} | {s.seconds:.0f} | "
            f"{len(s.batches)} | {mean_batch:.2f} | {first:,.0f} | {last:,.0f} | "
            f"{s.max_lag:,} | {drained} | {_pcts(s.mongo)} | {_pcts(s.redis)} | "
            f"{alert} | {s.verdict} |"
        )
    return lines


def _freshness_figures(steps: list[Step], suffix: str) -> list[Figure]:
    """p50/p95/p99 of each path: one sample per run, the percentile of its step."""
    figures = []
    rates = ", ".join(f"{s.published.rate:,.0f}" for s in steps)
    for path, per_step, target in (
        ("MongoDB activities", [s.mongo for s in steps], 2.0),
        ("Redis student hash", [s.redis for s in steps], 2.0),
        ("alert in MongoDB", [s.alerts for s in steps], 3.0),
    ):
        runs = [v for v in per_step if v]  # the runs that saw this path
        if not runs:
            continue
        counts = " / ".join(f"{len(v):,}" for v in runs)
        for q in (0.5, 0.95, 0.99):
            figures.append(
                Figure.of(
                    f"produce -> {path}, p{round(q * 100)}{suffix}",
                    "s",
                    [percentile(v, q) for v in runs],
                    f"each run's percentile of its step: {counts} samples at "
                    f"{rates} events/s for {steps[0].seconds:.0f} s; "
                    "polled every 0.1 s",
                    at_most=target if q == 0.99 else None,  # noqa: PLR2004
                )
            )
    return figures


def _ladder_part(ctx: BenchContext, ladders: list[Ladder], section: Section) -> None:
    _rates_used, seconds = _rates(ctx)
    bests = [ladder.best() for ladder in ladders]
    rates = [b.published.rate if b is not None else 0.0 for b in bests]
    ctx.results[RESULT_KEYS[SUSTAINED]] = statistics.median(rates)
    runs = (
        f"{len(ladders)} ladder runs, each a stream started anew"
        if len(ladders) > 1
        else "1 ladder run"
    )
    lowest = min(s.rate for ladder in ladders for s in ladder.steps)
    section.figures.append(
        Figure.of(
            SUSTAINED,
            "events/s",
            rates,
            f"{runs}, of {seconds:.0f} s steps"
            + (
                f" (quick run: one {seconds:.0f} s step at {FRESH_RATE:,}/s)"
                if ctx.quick
                else ""
            )
            + "; sustained = lag not growing and drained within 10 s; stretch "
            "target 25,000"
            + ("" if all(ladder.detect for ladder in ladders) else "; detection off")
            + (
                ""
                if all(bests)
                else "; 0 = no step sustained in that run, down to the lowest "
                f"tried, {lowest:,.0f} events/s"
            ),
            at_least=15_000,
        )
    )
    raw = ctx.results.get("raw.mongo_insert_rate")
    if raw:
        section.figures.append(
            Figure.of(
                "sustained rate / raw MongoDB insert_many rate",
                "x",
                [r / raw for r in rates],
                f"raw section: {raw:,.0f} docs/s",
                at_least=0.5,
            )
        )
    section.text += [
        "### The ladder",
        "",
        f"Each step publishes generator events at a fixed rate for {seconds:.0f} s "
        "to the running stream. Lag = records on the broker not covered by the "
        "stream's last committed batch (detection runs inside it), read every "
        "second. Sustained = the producer reached 95 % of the rate, the mean lag "
        "of the last third of the step is at most the first third's + max(2 s of "
        "input, 1,000), and the stream had processed everything 10 s after "
        "the producer stopped. Freshness columns: seconds from handing a record "
        "to the producer to seeing it (polled every 0.1 s). "
        f"{runs} on emptied topics and stores; the figures above are the median "
        "of the runs, with min and max.",
        "",
        *ladder_table(ladders),
        "",
    ]
    _fresh_part(ladders, section)


def _fresh_part(ladders: list[Ladder], section: Section) -> None:
    """The freshness figures of the runs that reached the 5k step."""
    fresh = [ladder.fresh for ladder in ladders if ladder.fresh is not None]
    section.figures += _freshness_figures(fresh, "") if fresh else []
    # A run whose 5k step was not sustained: its backlog grew, so the steady
    # state is the highest sustained step's freshness, where there was one.
    steady = [
        best
        for ladder in ladders
        if ladder.fresh is not None
        and not ladder.fresh.sustained
        and (best := ladder.best()) is not None
    ]
    if steady:
        rates = "/".join(sorted({f"{s.rate:,.0f}" for s in steady}))
        section.figures += _freshness_figures(steady, f" at {rates}/s (sustained)")
    missed = [f for f in fresh if not f.sustained]
    if missed:
        why = sorted({r for f in missed for r in f.verdict.split("; ")})
        section.text += [
            f"The stream did not sustain {FRESH_RATE:,} events/s in "
            f"{len(missed)} of {len(fresh)} runs ({'; '.join(why)}): the freshness "
            "figures at that rate include the growing backlog"
            + (
                "; the ones at the sustained rate are the steady state."
                if steady
                else "."
            ),
            "",
        ]
    unattributed = sum(ladder.alerts_unattributed for ladder in ladders)
    if unattributed:
        section.text += [
            f"{unattributed} alerts had a second event the bench "
            "had not marked (not timed).",
            "",
        ]


def _scaling_part(drains: list[Drain], section: Section) -> None:
    by_setup: dict[str, list[Drain]] = {}
    for d in drains:
        by_setup.setdefault(d.label, []).append(d)
    rates = {label: [d.rate for d in runs] for label, runs in by_setup.items()}
    base = statistics.median(rates[drains[0].label]) or 1.0
    first = drains[0]
    for label, values in rates.items():
        section.figures.append(
            Figure.of(
                f"drain rate, {label}",
                "rows/s",
                values,
                f"--available-now over {first.backlog:,} pre-published events in "
                f"batches of {first.per_batch:,}; batches after the first",
            )
        )
    section.text += [
        "### Scaling",
        "",
        "Drain rate of a pre-published backlog by `learntrack stream "
        "--available-now`, rows over the wall-clock time between the first and "
        "the last batch line (the first batch starts the Python workers). This "
        "is the capacity with big batches, not a sustained rate.",
        "",
        "| setup | runs | batches a run | rows/s (median) | vs 2 cores, 6 partitions |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {label} | {len(values)} | {len(by_setup[label][0].batches)} | "
            f"{statistics.median(values):,.0f} | "
            f"{statistics.median(values) / base:.2f} |"
            for label, values in rates.items()
        ],
        "",
    ]


def _profile_part(
    ladders: list[Ladder],
    drains: list[Drain],
    cost: FixedCost | None,
    section: Section,
) -> None:
    ladder = ladders[0] if ladders else Ladder()  # the first run's
    best = ladder.best()
    columns = []
    cpu = []
    run = " (run 1)" if len(ladders) > 1 else ""
    if best is not None:
        name = f"ladder at {best.rate:,.0f}/s{run}"
        columns.append((name, best.steady_batches()))
        cpu.append((name, best.cores))
    elif ladder.fresh is not None:  # nothing sustained: the 5k step, as it went
        name = f"ladder at {ladder.fresh.rate:,.0f}/s (not sustained){run}"
        columns.append((name, ladder.fresh.batches))
        cpu.append((name, ladder.fresh.cores))
    if drains:
        columns.append(("drain", [b for b in drains[0].batches[1:] if b.rows]))
        cpu += [(f"drain, {d.label}", d.cores) for d in drains if d.detect][:1]
        cpu += [(f"drain, {d.label}", d.cores) for d in drains if not d.detect][:1]
    if cost is not None:
        section.figures += fixed_cost_figures(cost)
    section.text += [
        "### Where time goes",
        "",
        "Mean milliseconds per micro-batch of each sink and of each step "
        "outside the sinks (from the batch reports; the steps are Spark jobs the "
        "driver waits for), `other` = the batch minus all of them; share of the "
        "batch; microseconds per row.",
        "",
        *profile_table(columns),
        "",
        "Cores busy per process while measuring (CPU seconds / wall seconds; "
        "`stream` is the `learntrack stream` process tree: Spark's JVM, its Python "
        "workers, the driver's Python; `bench` the producer thread and the "
        "probes; `other` everything else on the machine):",
        "",
        *cores_table(cpu),
        "",
        *changed_text(cost, _largest(columns)),
        "",
    ]


def _largest(columns: list[tuple[str, list[BatchLine]]]) -> str | None:
    """The sink or step with the most seconds per batch in the first column."""
    p = profile(columns[0][1]) if columns else {}
    parts = {k: v for k, v in p.items() if k in (*SINKS, *STEPS)}
    return max(parts, key=lambda k: parts[k]) if parts else None


def build_section(
    ctx: BenchContext,
    ladders: list[Ladder],
    drains: list[Drain],
    cost: FixedCost | None,
    errors: list[str],
) -> Section:
    """Figures and text from what was measured (``ladders``: the completed runs)."""
    section = Section(
        "stream", "Stream: sustained rate, freshness, scaling, where time goes"
    )
    if ladders:
        _ladder_part(ctx, ladders, section)
    if drains:
        _scaling_part(drains, section)
    elif ctx.quick:
        section.text += [
            "### Scaling",
            "",
            "Not in a quick run (each setup starts a stream of its own): `make "
            "bench` or `learntrack bench --only stream` drains a backlog with 1 vs "
            "2 Spark cores, 3 vs 6 partitions, and with detection off.",
            "",
        ]
    _profile_part(ladders, drains, cost, section)
    section.text += [f"**Not measured**: {e}" for e in errors]
    return section


def run_ladders(ctx: BenchContext, ladders: list[Ladder], errors: list[str]) -> None:
    """The ladder ``ctx.runs`` times (quick: once), each with a stream of its own.

    A run that fails is reported in ``errors`` and left out of ``ladders``: a
    ladder cut short says nothing about the highest rate; the other runs go on.
    """
    count = LADDER_RUNS_QUICK if ctx.quick else ctx.runs
    for number in range(1, count + 1):
        ctx.report(f"stream: ladder run {number} of {count}")
        ladder = Ladder()
        try:
            run_ladder(ctx, ladder)
        except Exception as err:  # noqa: BLE001 - report it, run the next one
            ctx.report(traceback.format_exc())
            errors.append(f"ladder run {number}: {err}")
            continue
        ladders.append(ladder)


def run(ctx: BenchContext) -> Section:
    """The ladders (with freshness), then the scaling runs; cleans up after each."""
    ladders: list[Ladder] = []
    drains: list[Drain] = []
    cost: list[FixedCost] = []
    errors: list[str] = []
    aside = set_lake_aside(ctx.settings)
    try:
        for what, part in (
            ("ladder", lambda: run_ladders(ctx, ladders, errors)),
            ("fixed cost", lambda: cost.append(run_fixed_cost(ctx))),
            # A quick run leaves out what starts a stream anew.
            *([] if ctx.quick else [("scaling", lambda: run_scaling(ctx, drains))]),
        ):
            try:
                part()
            except Exception as err:  # noqa: BLE001 - report it, keep the rest
                ctx.report(traceback.format_exc())
                errors.append(f"{what}: {err}")
    finally:
        restore_lake(ctx.settings, aside)
    return build_section(ctx, ladders, drains, cost[0] if cost else None, errors)
