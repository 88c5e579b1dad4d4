"""Bench section ``queries``: the query service with >= 5M activities stored.

Runs in the ``learntrack bench`` process (the client side) against the bench
stack's ``mongod``, plus one ``learntrack api`` subprocess (a real uvicorn server
on a free 127.0.0.1 port) for the HTTP figures. Its data lives in a MongoDB
database of its own (``<database>_bench_queries``: the same ``activities`` and
``students`` collections, indexes and document shapes as the stream's sinks and the
profile upsert write), so what other sections left in the bench stack is neither
read nor touched; the database is dropped at the end.

The activity log is **bulk-loaded** straight into MongoDB with ``insert_many``
(unordered, a few threads), not pushed through the broker and the stream: this
section measures reads and writes against a large store, not the stream (the
``stream`` section does), and loading 5M events through the stream would take
most of the bench's hour.
While loading, it measures the insert rate and latest-20 latency at four sizes
("cost as stored data grows"): the empty collection (its first documents inserted
the sink's way) and three stored sizes, in the same harness, so the growth figure
compares like with like.

The synthetic population (:class:`Population`, :func:`draw_events`,
:func:`uuid_strings`) is shared with the ``batch`` section: vectorised numpy, seeded.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bench.core import BenchContext, Figure, Section, percentile
from learntrack.config import Settings
from learntrack.errors import LearnTrackError
from learntrack.events import DEFAULT_REGIONS, Action

ACTIVITIES = "activities"  # the names MongoActivitySink and QueryService use
STUDENTS = "students"
DB_SUFFIX = "_bench_queries"

MS = 1000
HOUR_MS = 3600 * MS
DAY_MS = 24 * HOUR_MS
#: 2026-08-01T00:00Z: the first simulated day of the activity log (90 days long).
LOG_START_MS = 1_785_542_400_000
LOG_DAYS = 90

#: Relative activity by UTC hour (as the load generator's campus clock).
HOURLY_RHYTHM = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 2, 4, 6, 8, 9,
     8, 7, 7, 7, 6, 6, 7, 9, 10, 8, 5, 2],
    dtype=float,
)  # fmt: skip
#: Action mix of a day (the generator's in-session mix plus logins and logouts).
ACTION_SHARES: dict[Action, float] = {
    Action.PAGE_VIEW: 40,
    Action.VIDEO_PLAY: 16,
    Action.VIDEO_COMPLETE: 8,
    Action.QUIZ_ATTEMPT: 12,
    Action.FORUM_POST: 6,
    Action.ASSIGNMENT_SUBMIT: 4,
    Action.LOGIN: 7,
    Action.LOGOUT: 7,
}
ACTIONS: list[str] = [a.value for a in ACTION_SHARES]
REGION_SHARES = np.array([0.35, 0.25, 0.08, 0.20, 0.07, 0.05])
DEVICES = ("web", "android", "ios", "desktop")
DEVICE_SHARES = np.array([0.5, 0.2, 0.15, 0.15])
SPECIALITIES = ("ILSI", "GL", "SI", "RSD", "SDIA", "TI", "Data Science", "Networks")
LEVELS = ("L1", "L2", "L3", "M1", "M2")
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen")
#: Actions that carry a duration, and the one that carries a score.
TIMED = np.array([a in {"page_view", "video_play", "video_complete"} for a in ACTIONS])
QUIZ = ACTIONS.index(Action.QUIZ_ATTEMPT.value)
PARTITIONS = 6


# -- the synthetic population (shared with the batch section) ---------------------
@dataclass(frozen=True)
class Population:
    """Students (heavy-tailed activity, home region, device) and their courses.

    Each student follows 1-3 courses drawn with Zipf-like popularity; an event
    picks one of them. Pure numpy; built in the bench process.
    """

    ids: list[str]
    course_ids: list[str]
    cum_weights: np.ndarray
    courses: np.ndarray  # (students, 3) course index; repeats for 1-2 courses
    region: np.ndarray
    device: np.ndarray

    @property
    def size(self) -> int:
        """Number of students."""
        return len(self.ids)


def population(rng: np.random.Generator, students: int, courses: int) -> Population:
    """A seeded population of ``students`` students over ``courses`` courses."""
    activity = np.minimum(rng.pareto(1.3, students) + 1.0, 200.0)
    cum = np.cumsum(activity)
    popularity = 1.0 / np.arange(1, courses + 1) ** 0.8
    picks = rng.choice(courses, size=(students, 3), p=popularity / popularity.sum())
    n_courses = rng.choice([1, 2, 3], size=students, p=[0.3, 0.4, 0.3])
    # Students with fewer courses repeat their first ones.
    cols = np.minimum(np.arange(3)[None, :], n_courses[:, None] - 1)
    chosen = np.take_along_axis(picks, cols, axis=1)
    return Population(
        ids=[f"S{i:06d}" for i in range(students)],
        course_ids=[f"C{i:03d}" for i in range(1, courses + 1)],
        cum_weights=cum / cum[-1],
        courses=chosen,
        region=rng.choice(len(DEFAULT_REGIONS), size=students, p=REGION_SHARES),
        device=rng.choice(len(DEVICES), size=students, p=DEVICE_SHARES),
    )


@dataclass(frozen=True)
class Events:
    """Columns of ``n`` events (indexes into the population and :data:`ACTIONS`).

    ``duration_ms`` is -1 and ``score`` NaN where the event has none.
    """

    student: np.ndarray
    course: np.ndarray
    action: np.ndarray
    ts_ms: np.ndarray
    duration_ms: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        """Number of events."""
        return len(self.student)


def draw_events(
    rng: np.random.Generator, pop: Population, n: int, start_ms: int, days: int
) -> Events:
    """``n`` events over ``days`` days from ``start_ms`` (UTC midnight), unordered.

    Students by activity weight, a course among theirs, an action by
    :data:`ACTION_SHARES`, an hour by :data:`HOURLY_RHYTHM`.
    """
    student = np.searchsorted(pop.cum_weights, rng.random(n), side="right")
    student = np.minimum(student, pop.size - 1)
    course = pop.courses[student, rng.integers(0, 3, n)]
    shares = np.array(list(ACTION_SHARES.values()))
    action = rng.choice(len(ACTIONS), size=n, p=shares / shares.sum())
    hour = rng.choice(24, size=n, p=HOURLY_RHYTHM / HOURLY_RHYTHM.sum())
    ts_ms = (
        start_ms
        + rng.integers(0, days, n) * DAY_MS
        + hour * HOUR_MS
        + rng.integers(0, HOUR_MS, n)
    )
    duration = np.where(TIMED[action], rng.integers(2_000, 900_000, n), -1)
    score = np.where(action == QUIZ, np.round(rng.random(n), 3), np.nan)
    return Events(student, course, action, ts_ms, duration, score)


def uuid_chars(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random UUID4s as ASCII text: a ``(n, 36)`` uint8 array (vectorised)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    return _uuid_text(raw)


def uuid7_strings(rng: np.random.Generator, ms: np.ndarray) -> list[str]:
    """UUIDv7 strings for epoch milliseconds ``ms`` (as the SDK and generator make)."""
    n = len(ms)
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    stamp = ms.astype(">u8").view(np.uint8).reshape(n, 8)[:, 2:]  # 48 bits
    raw[:, :6] = stamp
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70  # version 7
    text = _uuid_text(raw).tobytes().decode("ascii")
    return [text[i : i + 36] for i in range(0, 36 * n, 36)]


def _uuid_text(raw: np.ndarray) -> np.ndarray:
    """16 bytes a row -> the 36-character text form, RFC 4122 variant set."""
    n = len(raw)
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = digits[raw >> 4]
    hexed[:, 1::2] = digits[raw & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src, width in (
        (0, 0, 8),
        (9, 8, 4),
        (14, 12, 4),
        (19, 16, 4),
        (24, 20, 12),
    ):
        out[:, dst : dst + width] = hexed[:, src : src + width]
    return out


def uuid_strings(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random UUID4 strings (as event ids are)."""
    text = uuid_chars(rng, n).tobytes().decode("ascii")
    return [text[i : i + 36] for i in range(0, 36 * n, 36)]


def _id_ms(first: int, n: int) -> np.ndarray:
    """Id times of the ``first``-th to ``first + n``-th document: 1 ms apart."""
    return LOG_START_MS + np.arange(first, first + n, dtype=np.int64)


# -- sizes -----------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """How much the section loads and asks."""

    activities: int
    students: int
    courses: int
    stages: tuple[int, ...]  # sizes at which growth is measured (last = activities;
    # the first = ``measured``: the empty collection's first documents)
    requests: int  # per run, at full size
    stage_requests: int  # per run, at each growth stage
    measured: int  # documents inserted the sink's way at each stage
    slices: int = 5  # insert-rate samples per stage (of measured / slices each)
    fill_chunk: int = 10_000  # documents per insert_many while filling
    sink_chunk: int = 5_000  # documents per insert_many while measuring


def sizes(quick: bool) -> Sizes:
    """Full: 5M activities of 100k students; quick: 100k of 5k, fewer requests."""
    if quick:
        return Sizes(
            100_000, 5_000, 50, (10_000, 25_000, 50_000, 100_000), 200, 150, 10_000
        )
    return Sizes(
        5_000_000,
        100_000,
        50,
        (100_000, 1_000_000, 2_500_000, 5_000_000),
        2000,
        1000,
        100_000,
    )


#: Threads inserting while filling, and while measuring (as local[2]'s two tasks).
FILL_THREADS = 3
SINK_THREADS = 2


def mongod_costs(status: dict[str, Any]) -> dict[str, float]:
    """The cumulative costs of mongod from a ``serverStatus`` answer.

    CPU is the process's user + system time (``extra_info``, Linux); the rest is
    WiredTiger's cache counters.
    """
    extra = status.get("extra_info", {})
    cache = status["wiredTiger"]["cache"]
    return {
        "cpu_us": float(extra.get("user_time_us", 0) + extra.get("system_time_us", 0)),
        "pages_read": float(cache["pages read into cache"]),
        "kb_read": cache["bytes read into cache"] / 1024,
        "kb_written": cache["bytes written from cache"] / 1024,
    }


@dataclass
class Inserted:
    """One stage's inserts the sink's way: each slice's docs/s, mongod per document."""

    rates: list[float]
    per_doc: dict[str, float]  # mongod_costs key -> amount per inserted document
    overall: float  # docs/s over all slices


# -- loading ---------------------------------------------------------------------
@dataclass
class Loader:
    """Generates activity documents chunk by chunk and inserts them (bench process).

    Documents have exactly the fields :class:`learntrack.sinks.mongo.
    MongoActivitySink` writes (``_id = eventId``, ``firstBatch``, ``source``,
    optional ``sessionId``/``device``/``durationMs``/``score``). Two ways in:
    :meth:`fill` (more threads, larger chunks, every index in place) and
    :meth:`insert_measured` (the sink's way). Event ids are
    UUIDv7 in arrival order, as the SDK and the generator make them, and event
    times follow the same order (90 days over the whole log). It keeps the
    per-student totals the student summary needs.
    """

    db: Any
    pop: Population
    seed: int
    ms_per_doc: int  # event time between two consecutive documents
    loaded: int = 0
    totals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    by_action: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_at: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        """Size the per-student counters."""
        n = self.pop.size
        self.totals = np.zeros(n, dtype=np.int64)
        self.by_action = np.zeros((n, len(ACTIONS)), dtype=np.int64)
        self.last_at = np.zeros(n, dtype=np.int64)

    def _docs(self, first: int, ids: list[str]) -> tuple[list[dict[str, Any]], Events]:
        """Documents of the events ``first .. first+len(ids)`` (seeded by ``first``)."""
        from bson.datetime_ms import DatetimeMS

        n = len(ids)
        rng = np.random.default_rng([self.seed, first])
        ev = draw_events(rng, self.pop, n, LOG_START_MS, LOG_DAYS)
        # Event times in arrival order, as a live stream writes them (its ids are
        # too): each index then takes its inserts where a stream's would land.
        order = np.arange(first, first + n, dtype=np.int64)
        ev = replace(ev, ts_ms=LOG_START_MS + order * self.ms_per_doc)
        pop = self.pop
        sids, cids = pop.ids, pop.course_ids
        regions = [DEFAULT_REGIONS[r] for r in pop.region.tolist()]
        devices = [DEVICES[d] for d in pop.device.tolist()]
        batch = first // 10_000  # the stream batch that "wrote" it
        docs: list[dict[str, Any]] = []
        rows = zip(
            ids,
            ev.student.tolist(),
            ev.course.tolist(),
            ev.action.tolist(),
            ev.ts_ms.tolist(),
            ev.duration_ms.tolist(),
            ev.score.tolist(),
            strict=True,
        )
        for offset, (eid, s, c, a, ts, dur, score) in enumerate(rows, first):
            sid = sids[s]
            doc: dict[str, Any] = {
                "firstBatch": batch,
                "_id": eid,
                "eventId": eid,
                "studentId": sid,
                "courseId": cids[c],
                "action": ACTIONS[a],
                "timestamp": DatetimeMS(ts),
                "region": regions[s],
                "source": {"partition": s % PARTITIONS, "offset": offset},
                "sessionId": f"{sid}-{ts // (2 * HOUR_MS):x}",
                "device": devices[s],
            }
            if dur >= 0:
                doc["durationMs"] = dur
            if not math.isnan(score):
                doc["score"] = score
            docs.append(doc)
        return docs, ev

    def _insert(self, first: int, ids: list[str]) -> Events:
        docs, ev = self._docs(first, ids)
        self.db[ACTIVITIES].insert_many(docs, ordered=False)
        return ev

    def _count(self, ev: Events) -> None:
        np.add.at(self.totals, ev.student, 1)
        np.add.at(self.by_action, (ev.student, ev.action), 1)
        np.maximum.at(self.last_at, ev.student, ev.ts_ms)

    def fill(self, target: int, chunk: int) -> float:
        """Load up to ``target`` stored the way the stream grows the log; docs/s.

        Every index stays in place and the ids are UUIDv7 in arrival order, so the
        indexes end up as a running stream leaves them: grown by inserts (leaf
        pages part-full, the ones the inserts touch in the cache). Dropping the
        secondary indexes and rebuilding them after a fill (this bench's earlier
        way, faster) leaves packed, freshly written B-trees instead: the first
        inserts at random students then split full leaf pages and read them back
        from disk, a cost a running stream does not pay (measured: see the
        section's text).
        """
        n = target - self.loaded
        if n <= 0:
            return 0.0
        rng = np.random.default_rng([self.seed, self.loaded, 1])
        ordered = uuid7_strings(rng, _id_ms(self.loaded, n))  # time order: sorted
        started = time.perf_counter()

        def one(lo: int) -> Events:
            return self._insert(self.loaded + lo, ordered[lo : lo + chunk])

        with ThreadPoolExecutor(max_workers=FILL_THREADS) as pool:
            for ev in pool.map(one, range(0, n, chunk)):
                self._count(ev)  # on this thread: no races
        rate = n / (time.perf_counter() - started)
        self.loaded = target
        return rate

    def insert_measured(self, count: int, slices: int, chunk: int) -> Inserted:
        """Insert ``count`` more the sink's way; each slice's docs/s, mongod's costs.

        UUIDv7 ids later than every stored one (as the SDK and the generator make
        them), every index in place, unordered ``insert_many`` of ``chunk``
        documents from :data:`SINK_THREADS` threads (local[2]'s two tasks).

        A checkpoint is forced first (``fsync``): the fill just before leaves
        dirty pages, and writing them out during the measured slices would charge
        the fill's cost to the sink's inserts (a running stream has no such
        backlog). Every stage, the empty one included, starts from a clean
        checkpoint.
        """
        admin = self.db.client.admin
        admin.command("fsync")
        before = mongod_costs(admin.command("serverStatus"))
        rates = []
        bounds = np.linspace(0, count, slices + 1).astype(int).tolist()
        started_all = time.perf_counter()
        with ThreadPoolExecutor(max_workers=SINK_THREADS) as pool:
            for lo, hi in zip(bounds, bounds[1:], strict=False):
                starts = list(range(self.loaded + lo, self.loaded + hi, chunk))
                end = self.loaded + hi
                rng = np.random.default_rng([self.seed, self.loaded + lo, 2])
                ids = [
                    uuid7_strings(rng, _id_ms(a, min(chunk, end - a))) for a in starts
                ]
                started = time.perf_counter()
                for ev in pool.map(self._insert, starts, ids):
                    self._count(ev)
                rates.append((hi - lo) / (time.perf_counter() - started))
        wall = time.perf_counter() - started_all
        after = mongod_costs(admin.command("serverStatus"))
        self.loaded += count
        costs = {k: (after[k] - before[k]) / count for k in before}
        return Inserted(rates, costs, count / wall)

    def profiles(self) -> int:
        """Insert every student's profile with the stream's activity summary.

        The shape the profile upsert (name, email, speciality, level, progress,
        lastUpdated) and :class:`learntrack.sinks.mongo.MongoStudentSink`
        (``activity``, ``streamBatch``) leave together.
        """
        from bson.datetime_ms import DatetimeMS

        rng = np.random.default_rng([self.seed, 1 << 31])
        pop = self.pop
        first = rng.integers(0, len(FIRST), pop.size).tolist()
        last = rng.integers(0, len(LAST), pop.size).tolist()
        spec = rng.integers(0, len(SPECIALITIES), pop.size).tolist()
        level = rng.integers(0, len(LEVELS), pop.size).tolist()
        progress = np.round(rng.uniform(0, 100, pop.size), 1).tolist()
        docs = []
        for i, sid in enumerate(pop.ids):
            name = f"{FIRST[first[i]]} {LAST[last[i]]}"
            doc: dict[str, Any] = {
                "studentId": sid,
                "name": name,
                "email": f"{name.replace(' ', '.').lower()}.{sid.lower()}@example.org",
                "speciality": SPECIALITIES[spec[i]],
                "studentLevel": LEVELS[level[i]],
                "progress": progress[i],
                "lastUpdated": DatetimeMS(LOG_START_MS),
            }
            if self.totals[i]:
                doc["streamBatch"] = self.loaded // 10_000
                doc["activity"] = {
                    "total": int(self.totals[i]),
                    "lastAt": DatetimeMS(int(self.last_at[i])),
                    "last": {
                        "at": DatetimeMS(int(self.last_at[i])),
                        "region": DEFAULT_REGIONS[int(pop.region[i])],
                        "course": pop.course_ids[int(pop.courses[i, 0])],
                    },
                    "byAction": {
                        a: int(n)
                        for a, n in zip(ACTIONS, self.by_action[i], strict=True)
                        if n
                    },
                }
            docs.append(doc)
        for i in range(0, len(docs), 10_000):
            self.db[STUDENTS].insert_many(docs[i : i + 10_000], ordered=False)
        return len(docs)


# -- measuring -------------------------------------------------------------------
def latencies_ms(call: Callable[[str], object], ids: list[str]) -> list[float]:
    """Milliseconds of ``call(id)`` for each id, one after the other."""
    out = []
    for sid in ids:
        started = time.perf_counter()
        call(sid)
        out.append((time.perf_counter() - started) * 1000)
    return out


@dataclass
class Dist:
    """Per-run p50s and p99s of one operation."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)

    def add(self, values: list[float]) -> None:
        """Record one run's latencies."""
        self.p50.append(percentile(values, 0.5))
        self.p99.append(percentile(values, 0.99))

    def figures(
        self, name: str, note: str, *, p99_at_most: float | None = None
    ) -> list[Figure]:
        """The p50 and p99 figures (samples: one per run)."""
        return [
            Figure.of(f"{name} p50", "ms", self.p50, note),
            Figure.of(f"{name} p99", "ms", self.p99, note, at_most=p99_at_most),
        ]


def sample_ids(
    pop: Population, rng: np.random.Generator, n: int, among: np.ndarray | None = None
) -> list[str]:
    """``n`` random student ids, uniform over ``among`` (indexes; default all)."""
    pool = np.arange(pop.size) if among is None else among
    return [pop.ids[i] for i in rng.choice(pool, n).tolist()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The query service under plain ``uvicorn.run`` (for :func:`api_server`).
PLAIN_UVICORN = (
    "import uvicorn\n"
    "from learntrack.api.app import create_app\n"
    "from learntrack.config import get_settings\n"
    "uvicorn.run(create_app(get_settings()), host='127.0.0.1', port={port}, "
    "log_level='warning', access_log=False)\n"
)


@contextmanager
def api_server(
    env: dict[str, str], *, plain: bool = False, timeout_s: float = 90.0
) -> Iterator[str]:
    """Run the query service on a free port in a subprocess; yield its base URL.

    ``learntrack api`` as users run it, or with ``plain`` the same app under
    ``uvicorn.run(host=..., port=...)`` (uvicorn opens the socket itself). The
    subprocess gets the bench's environment plus ``env``; it is stopped with SIGINT
    (as a user's Ctrl-C) and waited for.
    """
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "learntrack.cli", "api", "--port", str(port)]
    if plain:
        command = [sys.executable, "-c", PLAIN_UVICORN.format(port=port)]
    server = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                _out, err = server.communicate()
                msg = f"learntrack api exited with {server.returncode}: {err[-500:]}"
                raise LearnTrackError(msg)
            try:
                if httpx.get(f"{base}/health", timeout=10).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                msg = f"learntrack api did not answer on {base} in {timeout_s:.0f} s"
                raise LearnTrackError(msg)
            time.sleep(0.2)
        yield base
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()


def _key(settings: Settings, which: str) -> str:
    secret = getattr(settings.api, f"{which}_key")
    if secret is None:
        var = f"LEARNTRACK_API__{which.upper()}_KEY"
        msg = f"the bench stack has no API {which} key ({var})"
        raise LearnTrackError(msg)
    value: str = secret.get_secret_value()
    return value


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# -- the section -------------------------------------------------------------------
def run(ctx: BenchContext) -> Section:
    """Load the activity log in stages, measure growth, then the four operations."""
    from bench.core import settings_with
    from learntrack.clients import mongo_client
    from learntrack.sinks.mongo import ensure_indexes

    size = sizes(ctx.quick)
    database = f"{ctx.settings.mongo.database}{DB_SUFFIX}"
    db_env = {"LEARNTRACK_MONGO__DATABASE": database}
    settings = settings_with(**db_env)
    keys = (_key(settings, "read"), _key(settings, "write"))
    rng = np.random.default_rng(7)
    pop = population(rng, size.students, size.courses)
    section = Section(
        "queries",
        f"Queries with {size.activities:,} activities stored "
        f"({size.students:,} students)",
    )
    client = mongo_client(settings, timeout_ms=30_000)
    client.drop_database(database)
    try:
        ensure_indexes(settings)  # the indexes the stream's sink relies on
        span_ms = LOG_DAYS * DAY_MS
        loader = Loader(client[database], pop, 11, span_ms // size.activities)
        growth, table, ratio = _grow(ctx, settings, size, loader, rng)
        ctx.report(f"[queries] {loader.profiles():,} student profiles")
        stats = loader.db.command("collStats", ACTIVITIES)
        profile_stats = loader.db.command("collStats", STUDENTS)
        cache = client.admin.command("serverStatus")["wiredTiger"]["cache"]
        cache_gb = cache["maximum bytes configured"] / 1024**3
        ops = _operations(ctx, settings, size, loader, rng, db_env=db_env, keys=keys)
    finally:
        client.drop_database(database)
        client.close()

    n = f"{size.requests:,} random students per run, one after the other"
    plain = "same app under plain uvicorn.run(port=...), not learntrack api"
    section.figures = [
        *ops["latest direct"].figures(
            "latest-20 direct (QueryService)",
            f"{n}; the code behind GET /students/{{id}}/activities",
            p99_at_most=5,
        ),
        *ops["latest http"].figures(
            "latest-20 over HTTP (learntrack api)",
            f"{n}; read key, keep-alive client, `learntrack api` subprocess",
        ),
        *ops["update direct"].figures(
            "profile update direct (QueryService)",
            f"{n}; progress + email, sets lastUpdated (PATCH semantics)",
        ),
        *ops["update http"].figures(
            "profile update over HTTP (learntrack api)",
            f"{n}; PATCH with the write key, progress + email",
        ),
        *ops["latest plain"].figures("latest-20 over HTTP (plain uvicorn)", plain),
        *ops["update plain"].figures("profile update over HTTP (plain uvicorn)", plain),
    ]
    section.figures.append(ratio)
    for stage, insert, dist in growth:
        section.figures += [
            insert,
            *dist.figures(
                f"latest-20 direct at {stage:,} stored",
                f"{size.stage_requests:,} random students per run",
            ),
        ]
    index_mib = ", ".join(f"{k} {_mib(v)}" for k, v in stats["indexSizes"].items())
    section.text = [
        f"The activity log was bulk-loaded straight into MongoDB ({size.activities:,} "
        f"documents of {size.students:,} students with Pareto-distributed activity, "
        f"{size.courses} courses, {LOG_DAYS} days), not streamed (the stream "
        "section measures the stream). Same collection, "
        "indexes and document shape as the stream's activity sink, in a database of "
        "the section's own, dropped at the end. Student documents carry the profile "
        "and the stream's activity summary. Requests are sent one after the other "
        "from the bench process; the HTTP server is a subprocess on the same cores.",
        "",
        *table,
        "",
        f"Storage at {stats['count']:,} activities (collStats): data "
        f"{_mib(stats['size'])} (average document {stats.get('avgObjSize', 0):,} B), "
        f"on disk {_mib(stats['storageSize'])}, indexes "
        f"{_mib(stats['totalIndexSize'])} ({index_mib}); "
        f"{profile_stats['count']:,} student documents, "
        f"{_mib(profile_stats['size'])}. mongod runs with a "
        f"{cache_gb:.2f} GB WiredTiger cache (serverStatus).",
        "",
        "`learntrack api` vs plain uvicorn: the plain-uvicorn rows serve the same "
        "app with `uvicorn.run(port=...)`, a check on `learntrack api`'s own server "
        "setup (the socket it creates and hands to uvicorn; TCP_NODELAY on every "
        "connection, without which each small response waited ~40 ms for the "
        "client's delayed ACK before it was fixed).",
        "",
        "Reproduce: `learntrack bench --only queries` (`--quick`: "
        f"{sizes(True).activities:,} activities).",
    ]
    return section


def _grow(
    ctx: BenchContext,
    settings: Settings,
    size: Sizes,
    loader: Loader,
    rng: np.random.Generator,
) -> tuple[list[tuple[int, Figure, Dist]], list[str], Figure]:
    """Fill to each stage; measure the sink's insert rate and latest-20 there.

    The first stage is the empty collection: nothing is filled, its first
    ``size.measured`` documents are inserted the sink's way. Also returns the
    last stage's insert rate over the empty one's, slice by slice (slice i at
    the largest size over slice i into the empty collection).
    """
    from learntrack.api.service import QueryService

    growth: list[tuple[int, Figure, Dist]] = []
    table = [
        "Cost as stored data grows. At each size, the collection is first filled "
        f"(unordered `insert_many` of {size.fill_chunk:,} from {FILL_THREADS} "
        "threads, UUIDv7 ids and event times in arrival order, every index in "
        "place: the log grows as the stream grows it; not the figure), then a "
        "checkpoint is forced and "
        f"the next {size.measured:,} documents are inserted the sink's way (later "
        f"UUIDv7 ids, unordered `insert_many` of {size.sink_chunk:,} from "
        f"{SINK_THREADS} threads): that is the insert rate. The mongod columns are "
        "its costs per inserted document during those inserts (`serverStatus`: the "
        "process's CPU time, WiredTiger's pages read into its cache and bytes "
        "written from it). latest-20 is direct through "
        f"`QueryService`, {size.stage_requests:,} random students per run, median "
        f"of {ctx.runs} runs.",
        "",
        "| activities stored | insert rate (sink's way) | latest-20 p50 | "
        "latest-20 p99 | fill rate | mongod CPU µs / doc | pages read / 1k docs | "
        "KB written / doc |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    slice_rates: list[list[float]] = []
    with QueryService(settings) as service:
        for stage in size.stages:
            empty = stage == size.measured
            if not empty:
                ctx.report(f"[queries] filling to {stage - size.measured:,} activities")
            fill_rate = loader.fill(stage - size.measured, size.fill_chunk)
            ctx.report(f"[queries] inserting to {stage:,} the sink's way")
            inserted = loader.insert_measured(
                size.measured, size.slices, size.sink_chunk
            )
            slice_rates.append(inserted.rates)
            insert = Figure.of(
                "insert rate into the empty collection"
                if empty
                else f"insert rate at {stage:,} stored",
                "docs/s",
                inserted.rates,
                f"the sink's way: {size.slices} slices of "
                f"{size.measured // size.slices:,} documents, all indexes in place",
            )
            dist = Dist()
            active = np.flatnonzero(loader.totals)  # no profiles yet: no 404s
            latencies_ms(
                service.latest_activities, sample_ids(loader.pop, rng, 200, active)
            )
            for _ in range(ctx.runs):
                ids = sample_ids(loader.pop, rng, size.stage_requests, active)
                dist.add(latencies_ms(service.latest_activities, ids))
            growth.append((stage, insert, dist))
            label = f"empty -> {stage:,}" if empty else f"{stage:,}"
            fill = f"{fill_rate:,.0f} docs/s" if fill_rate else "-"
            cost = inserted.per_doc
            table.append(
                f"| {label} | {insert.median:,.0f} docs/s | "
                f"{np.median(dist.p50):.2f} ms | {np.median(dist.p99):.2f} ms | "
                f"{fill} | {cost['cpu_us']:.0f} | {cost['pages_read'] * 1000:,.0f} | "
                f"{cost['kb_written']:.2f} |"
            )
    first, last = slice_rates[0], slice_rates[-1]
    ratio = Figure.of(
        f"insert rate at {size.stages[-1]:,} stored / into the empty collection",
        "x",
        [b / a for a, b in zip(first, last, strict=True)],
        f"same harness, slice by slice ({size.slices} slices of "
        f"{size.measured // size.slices:,} documents each); the raw section's "
        "single-writer rate is a different harness",
        at_least=0.5,
    )
    return growth, table, ratio


def _operations(
    ctx: BenchContext,
    settings: Settings,
    size: Sizes,
    loader: Loader,
    rng: np.random.Generator,
    *,
    db_env: dict[str, str],
    keys: tuple[str, str],
) -> dict[str, Dist]:
    """latest-20 and profile update, direct and over HTTP (two servers), at size."""
    import httpx

    from learntrack.api.models import StudentPatch
    from learntrack.api.service import QueryService

    pop = loader.pop
    active = np.flatnonzero(loader.totals)
    counter = iter(range(10**9))
    reader, writer = {"X-API-Key": keys[0]}, {"X-API-Key": keys[1]}
    dists = {
        k: Dist()
        for k in (
            "latest direct",
            "latest http",
            "latest plain",
            "update direct",
            "update http",
            "update plain",
        )
    }

    def patch_body() -> dict[str, Any]:
        n = next(counter)
        return {"progress": n % 1001 / 10, "email": f"bench.{n}@example.org"}

    def over(http: httpx.Client) -> tuple[Callable[[str], object], ...]:
        def get(sid: str) -> object:
            r = http.get(
                f"/students/{sid}/activities", params={"limit": 20}, headers=reader
            )
            return r.raise_for_status()

        def patch(sid: str) -> object:
            r = http.patch(f"/students/{sid}", json=patch_body(), headers=writer)
            return r.raise_for_status()

        return get, patch

    with (
        QueryService(settings) as service,
        api_server(db_env) as base,
        api_server(db_env, plain=True) as plain_base,
        httpx.Client(base_url=base, timeout=30) as http,
        httpx.Client(base_url=plain_base, timeout=30) as plain,
    ):
        get, patch = over(http)
        get_plain, patch_plain = over(plain)

        def update(sid: str) -> object:
            return service.update_student(sid, StudentPatch(**patch_body()))

        # latest-20 of students with activity; updates of anyone (all have profiles)
        ops: list[tuple[str, Callable[[str], object], np.ndarray | None]] = [
            ("latest direct", service.latest_activities, active),
            ("latest http", get, active),
            ("latest plain", get_plain, active),
            ("update direct", update, None),
            ("update http", patch, None),
            ("update plain", patch_plain, None),
        ]
        for _, call, among in ops:  # warm-up: connections, code paths
            latencies_ms(call, sample_ids(pop, rng, 100, among))
        for run_no in range(ctx.runs):
            ctx.report(f"[queries] requests, run {run_no + 1}/{ctx.runs}")
            for key, call, among in ops:
                ids = sample_ids(pop, rng, size.requests, among)
                dists[key].add(latencies_ms(call, ids))
    return dists
