"""The stream under test: an isolated ``learntrack stream`` subprocess and its lag.

Runs in the ``learntrack bench`` process. :func:`isolated` names a stream's own
topics, MongoDB database, Redis db and checkpoint (as env vars for the subprocess
and as settings for the bench), :func:`prepare` empties them,
:class:`StreamProcess` runs ``learntrack stream`` (as users do) and parses its
batch lines as they are printed, and :class:`LagReader` says how far each of the
stream's two queries is behind the broker, from the broker's end offsets and the
offsets of each query's last committed batch in its checkpoint.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import BenchContext, settings_with
from learntrack.config import Settings
from learntrack.errors import LearnTrackError
from learntrack.streaming.kafka_source import checkpoint_offsets

#: Names of everything a bench stream writes (the graph and the lake have no
#: per-stream names: see :func:`prepare`).
TOPIC_PREFIX = "bench.stream"
MONGO_DB = "lt_bench_stream"
REDIS_DB = "7"
#: Broker retention of the bench's activity topics; the bench also deletes what
#: the stream has processed (:meth:`LagReader.trim`), so runs stay small on disk.
RETENTION_MS = 3_600_000

BATCH_LINE = re.compile(
    r"^batch (?P<id>\d+): (?P<rows>[\d,]+) rows \((?P<dlq>[\d,]+) to dlq, "
    r"(?P<dups>[\d,]+) duplicates\) in (?P<s>[\d.]+) s = [\d,]+ rows/s \| "
    r"(?P<sinks>.*?) \| lag (?P<lag>.*)$"
)
SINK_TIME = re.compile(r"([\w.]+)=(\d+)ms")
ALERT_LINE = re.compile(r"^alerts batch (\d+): ([\d,]+) multi-region alerts")


def isolated(
    ctx: BenchContext, tag: str, **extra: str
) -> tuple[Settings, dict[str, str]]:
    """Settings and env overrides of a stream with its own topics, db, checkpoint.

    ``extra``: more ``LEARNTRACK_...`` overrides (master, partitions...).
    """
    env = {
        "LEARNTRACK_TOPICS__ACTIVITY": f"{TOPIC_PREFIX}.{tag}.activity",
        "LEARNTRACK_TOPICS__DLQ": f"{TOPIC_PREFIX}.{tag}.dlq",
        "LEARNTRACK_TOPICS__ALERTS": f"{TOPIC_PREFIX}.{tag}.alerts",
        "LEARNTRACK_MONGO__DATABASE": MONGO_DB,
        "LEARNTRACK_REDIS__DB": REDIS_DB,
        "LEARNTRACK_SPARK__CHECKPOINT_DIR": str(
            ctx.work_dir / "stream" / tag / "checkpoints"
        ),
        **extra,
    }
    return settings_with(**env), env


def prepare(settings: Settings) -> None:
    """Empty everything the stream of ``settings`` writes; a fresh activity topic.

    ``StreamJob.reset()`` deletes the checkpoints, the db's collections, the Redis
    db's ``lt:`` keys, the DLQ and alert topics, and also the graph's nodes and the
    lake, which have no per-stream names: the section runs alone on the bench
    stack and :func:`set_lake_aside` keeps a lake found there.
    """
    from learntrack.streaming.job import StreamJob
    from learntrack.topics import create_topic, delete_topics

    delete_topics(settings, [settings.topics.activity])
    create_topic(
        settings,
        settings.topics.activity,
        settings.kafka.partitions,
        retention_ms=RETENTION_MS,
    )
    StreamJob(settings, report=lambda _m: None).reset()


def cleanup(settings: Settings) -> None:
    """Delete what a bench stream left: its topics, db, Redis db, checkpoints."""
    from learntrack.clients import mongo_client, redis_client
    from learntrack.sinks.dlq import commits_topic
    from learntrack.streaming.job import StreamJob
    from learntrack.topics import delete_topics

    StreamJob(settings, report=lambda _m: None).reset()  # graph nodes, lake...
    t = settings.topics
    topics = [t.activity, t.dlq, t.alerts, commits_topic(settings, t.dlq)]
    topics.append(commits_topic(settings, t.alerts))
    delete_topics(settings, topics)
    with mongo_client(settings) as client:
        client.drop_database(settings.mongo.database)
    client = redis_client(settings)
    try:
        client.flushdb()
    finally:
        client.close()
    shutil.rmtree(settings.checkpoint_dir, ignore_errors=True)


def set_lake_aside(settings: Settings) -> Path | None:
    """Move a lake already on the bench stack out of the way (the stream resets it)."""
    from learntrack.sinks.lake import lake_path

    lake = lake_path(settings)
    if not lake.exists() or not any(lake.iterdir()):
        return None
    aside = lake.with_name("lake.before-stream-bench")
    shutil.rmtree(aside, ignore_errors=True)
    lake.rename(aside)
    return aside


def restore_lake(settings: Settings, aside: Path | None) -> None:
    """Undo :func:`set_lake_aside` (after the stream's own lake is deleted)."""
    from learntrack.sinks.lake import lake_path

    lake = lake_path(settings)
    shutil.rmtree(lake, ignore_errors=True)
    if aside is not None:
        aside.rename(lake)


@dataclass(frozen=True)
class BatchLine:
    """One ``batch N: ...`` line of the stream, and when the bench read it."""

    batch_id: int
    rows: int
    seconds: float
    sinks: dict[str, float]
    lag: int
    at: float  # time.monotonic() in the bench process

    @classmethod
    def parse(cls, line: str, at: float) -> BatchLine | None:
        """The batch line's figures, or None for any other line."""
        m = BATCH_LINE.match(line.strip())
        if m is None:
            return None
        lag = sum(
            int(part.split(":")[1]) for part in m["lag"].split(",") if ":" in part
        )
        return cls(
            batch_id=int(m["id"]),
            rows=int(m["rows"].replace(",", "")),
            seconds=float(m["s"]),
            sinks={k: int(v) / 1000 for k, v in SINK_TIME.findall(m["sinks"])},
            lag=lag,
            at=at,
        )


@dataclass
class StreamProcess:
    """A ``learntrack stream`` subprocess; its output is read by a thread.

    Started with the bench stack's env plus ``env``, in its own session (a Ctrl-C
    of the bench reaches it only through :meth:`stop`). :meth:`stop` sends SIGTERM
    (the stream finishes its batch in flight and exits) and waits.
    """

    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    log: Path | None = None
    batches: list[BatchLine] = field(default_factory=list)
    alerts: list[tuple[int, int, float]] = field(default_factory=list)
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=60)
    )
    started_at: float = 0.0
    _proc: Any = None
    _reader: Any = None

    def start(self, base_env: dict[str, str]) -> None:
        """Spawn ``python -m learntrack.cli stream ARGS``."""
        env = {**os.environ, **base_env, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.write_text("")
        self.started_at = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "learntrack.cli", "stream", *self.args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read, name="bench-stream-output", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        """The subprocess's PID."""
        return int(self._proc.pid)

    def _read(self) -> None:
        assert self._proc.stdout is not None  # noqa: S101 - set by Popen(PIPE)
        log = None if self.log is None else self.log.open("a", buffering=1)
        try:
            for line in self._proc.stdout:
                self._take(line, log)
        finally:
            if log is not None:
                log.close()

    def _take(self, line: str, log: Any) -> None:
        now = time.monotonic()
        if log is not None:
            log.write(line)
        self.tail.append(line.rstrip())
        batch = BatchLine.parse(line, now)
        if batch is not None:
            self.batches.append(batch)
            return
        m = ALERT_LINE.match(line)
        if m is not None:
            self.alerts.append((int(m[1]), int(m[2].replace(",", "")), now))

    def running(self) -> bool:
        """Whether the subprocess is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def check(self) -> None:
        """Raise with the stream's last lines if it exited."""
        if not self.running():
            self.fail("the stream exited")

    def fail(self, why: str) -> None:
        """Raise a :class:`LearnTrackError` with the gist of the stream's output."""
        code = None if self._proc is None else self._proc.poll()
        lines = list(self.tail)
        gist = [
            line.strip()
            for line in lines
            if line.startswith(("learntrack:", "Caused by:")) or "Error:" in line
        ][-4:] or lines[-5:]
        msg = f"{why} (exit code {code}): " + " | ".join(gist)
        if self.log is not None:
            msg += f" (its output: {self.log})"
        raise LearnTrackError(msg)

    def wait_batches(self, count: int, timeout_s: float) -> None:
        """Until ``count`` fan-out batches have finished (or fail)."""
        deadline = time.monotonic() + timeout_s
        while len(self.batches) < count:
            self.check()
            if time.monotonic() > deadline:
                self.fail(f"no {count} batches in {timeout_s:.0f} s")
            time.sleep(0.2)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the subprocess to exit by itself (``--available-now``)."""
        try:
            code = int(self._proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            self.stop()
            self.fail(f"the stream did not finish in {timeout_s:.0f} s")
        self._reader.join(10)
        return code

    def started_work(self) -> bool:
        """Whether a batch with rows finished (an earlier failure is a start-up one)."""
        return any(b.rows for b in self.batches)

    def stop(self, timeout_s: float = 180.0) -> int | None:
        """SIGTERM by PID and wait (SIGKILL after ``timeout_s``); idempotent."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(30)
        if self._reader is not None:
            self._reader.join(10)
        return int(self._proc.returncode)


@dataclass(frozen=True)
class LagSample:
    """Records on the broker not yet processed, by query, at one instant."""

    at: float  # time.monotonic()
    produced: int  # sum of the partitions' end offsets
    stream: int  # the stream's query (detection runs inside its batches)

    @property
    def lag(self) -> int:
        """The query's lag."""
        return self.stream


class LagReader:
    """Reads the broker's end offsets and each query's committed offsets.

    A query's committed offsets are the end offsets of its last batch in
    ``<checkpoint>/commits`` (read from ``<checkpoint>/offsets/<batch>``, where
    the Kafka source keeps ``{"<partition>": <next offset>}``): the records
    before them went through every sink of that query.
    """

    def __init__(self, settings: Settings) -> None:
        """Connect a consumer used only for watermarks (no group, no reads)."""
        from confluent_kafka import Consumer

        self.settings = settings
        self.topic = settings.topics.activity
        self._consumer = Consumer(
            {**settings.kafka.client_config(), "group.id": "learntrack-bench-lag"}
        )
        meta = self._consumer.list_topics(self.topic, timeout=10)
        self.partitions = sorted(meta.topics[self.topic].partitions)
        # One query: detection runs inside the fan-out's batches.
        self.checkpoints = {"stream": settings.checkpoint_dir / "stream"}

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()

    def produced(self) -> dict[int, int]:
        """End offset (high watermark) of every partition."""
        from confluent_kafka import TopicPartition

        ends = {}
        for p in self.partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=5
            )
            ends[p] = int(high)
        return ends

    def committed(self, query: str) -> dict[int, int]:
        """The query's processed end offsets ({} before its first batch)."""
        root = self.checkpoints[query]
        try:
            done = [int(n) for n in os.listdir(root / "commits") if n.isdigit()]
        except FileNotFoundError:
            return {}
        for batch in sorted(done, reverse=True):
            try:
                last = (root / "offsets" / str(batch)).read_text().splitlines()[-1]
                return checkpoint_offsets(last, self.topic)
            except (FileNotFoundError, IndexError, ValueError):
                continue  # being written or purged: take the one before
        return {}

    def trim(self) -> int:
        """Delete the records the stream has processed; how many were deleted.

        Keeps the in-memory broker (and its snapshots) small between steps; never
        deletes a record a query has not committed, so no data is lost.
        """
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient

        done = [self.committed(q) for q in self.checkpoints]
        upto = {p: min(d.get(p, 0) for d in done) for p in self.partitions}
        wanted = [TopicPartition(self.topic, p, o) for p, o in upto.items() if o > 0]
        if not wanted:
            return 0
        admin = AdminClient(self.settings.kafka.client_config())
        for future in admin.delete_records(wanted).values():
            future.result(30)
        return sum(upto.values())

    def sample(self) -> LagSample:
        """One reading of each running query's lag."""
        ends = self.produced()
        lags = {}
        for query in self.checkpoints:
            done = self.committed(query)
            lags[query] = sum(max(0, e - done.get(p, 0)) for p, e in ends.items())
        return LagSample(
            time.monotonic(),
            sum(ends.values()),
            lags["stream"],
        )


def _proc_table() -> dict[int, tuple[int, int]]:
    """Every process: its parent PID and its user + system clock ticks."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _machine_ticks() -> int:
    """Busy clock ticks of all cores since boot (``cpu`` line of /proc/stat)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[:8])
    return user + nice + system + irq + softirq + steal


class CpuMeter:
    """CPU seconds by role: the stream, each server, the bench, everything else.

    The stream is the ``learntrack stream`` process (the driver's Python) and its
    descendants, split into the Spark JVM and the Python workers; each server is
    its process tree, found by the stack's PID files; the bench is this process
    (producer thread and probes); "other" is the machine's busy time minus all of
    those (other users' work).
    """

    SERVERS = ("kafka", "mongo", "redis", "graph", "cassandra")

    def __init__(self, settings: Settings, stream_pid: int) -> None:
        """Find the servers' PIDs."""
        from learntrack.stack.manager import Stack

        stack = Stack(settings)
        self.roots: dict[str, int] = {"stream": stream_pid}
        for name in self.SERVERS:
            record = stack.running(stack.server(name))
            if record is not None:
                self.roots[name] = record.pid
        self.tick = float(os.sysconf("SC_CLK_TCK"))

    def snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each role (and ``machine`` in total)."""
        table = _proc_table()
        children: dict[int, list[int]] = collections.defaultdict(list)
        for pid, (ppid, _t) in table.items():
            children[ppid].append(pid)
        out: dict[str, float] = collections.defaultdict(float)
        for role, root in self.roots.items():
            todo = [root]
            while todo:
                pid = todo.pop()
                todo += children.get(pid, [])
                if pid in table:
                    out[self._role(role, root, pid)] += table[pid][1] / self.tick
        me = table.get(os.getpid(), (0, 0))[1]
        out["bench"] = me / self.tick
        out["machine"] = _machine_ticks() / self.tick
        return dict(out)

    @staticmethod
    def _role(role: str, root: int, pid: int) -> str:
        """The stream's processes by kind: Spark's JVM, Python workers, driver."""
        if role != "stream":
            return role
        if pid == root:
            return "stream: driver (Python)"
        try:
            exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            return "stream: Python workers"
        if exe.endswith(b"java"):
            return "stream: Spark JVM"
        return "stream: Python workers"

    def sample_until_exit(
        self, proc: StreamProcess, timeout_s: float
    ) -> list[tuple[float, dict[str, float]]]:
        """Snapshots every 0.5 s while ``proc`` runs (its CPU vanishes at exit)."""
        snaps = []
        deadline = time.monotonic() + timeout_s
        while proc.running() and time.monotonic() < deadline:
            snaps.append((time.monotonic(), self.snapshot()))
            time.sleep(0.5)
        return snaps

    @staticmethod
    def between(
        snaps: list[tuple[float, dict[str, float]]], start: float, end: float
    ) -> dict[str, float]:
        """Cores busy per role from the snapshots closest inside [start, end]."""
        inside = [s for s in snaps if start <= s[0] <= end] or snaps[-2:]
        if len(inside) < 2:  # noqa: PLR2004
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return CpuMeter.cores(first, last, max(t1 - t0, 1e-9))

    @staticmethod
    def cores(
        before: dict[str, float], after: dict[str, float], seconds: float
    ) -> dict[str, float]:
        """Average cores busy per role between two snapshots (plus ``other``)."""
        used = {k: max(0.0, after[k] - before.get(k, 0.0)) / seconds for k in after}
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        return used
