"""Load for the stream bench: paced generator events, and probes of their freshness.

Runs in the ``learntrack bench`` process. :class:`Load` generates one data set
with the load generator and publishes time-shifted copies of it ("cycles"),
serialized before each step, at a given rate from a thread (:meth:`Load.publish`).
Each cycle moves event time one generator span (an hour) forward and gives every
event a new id, so the stream sees an endless, ever-later activity log with the
generator's realistic mix (sessions, heavy-tailed students, 0.5 % malformed
records, injected multi-region anomalies) without generating millions of events.

While it publishes, it marks some records with the time they were handed to the
producer: about 100 sampled events a second, and every event of the students the
generator made anomalous. :class:`Probe` polls the stores for them
(:meth:`Probe.poll`, every 0.1 s from the bench's main thread):

- MongoDB: the sampled event's document in ``activities`` (``_id`` = eventId);
- Redis: the student's hash ``lt:student:<id>``, whose ``total`` counts the
  student's events; one student's events are on one partition, in order, so the
  student's n-th event is visible once ``total >= n`` (the bench counts every
  event it publishes per student, and is the topic's only producer);
- alerts: new documents of MongoDB ``alerts``, from a change stream; an alert's
  latency runs from the publishing of its ``second`` event (the later of the
  pair: the one that made it an alert) to the poll that first saw it.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from learntrack.config import Settings
from learntrack.producers.generator import (
    HOUR,
    Dataset,
    Event,
    Generator,
    GeneratorConfig,
    delivery_stream,
    send_paced,
)
from learntrack.sinks.redis import student_key

#: Sampled events per second (freshness of MongoDB and Redis).
SAMPLES_PER_S = 100
POLL_S = 0.1


@dataclass(frozen=True)
class Mark:
    """A published record the probe waits for."""

    event_id: str
    student: str
    nth: int  # the student's n-th event published
    sampled: bool  # a freshness sample (else: an anomalous student's event)


@dataclass(frozen=True)
class Published:
    """What one :meth:`Load.publish` call did."""

    records: int
    started: float  # time.monotonic()
    ended: float  # last record handed to the producer (before the final flush)

    @property
    def rate(self) -> float:
        """Records per second handed to the producer."""
        return self.records / max(self.ended - self.started, 1e-9)


@dataclass
class Load:
    """Time-shifted cycles of one generated data set, published paced."""

    settings: Settings
    events_per_cycle: int
    students: int = 5000
    seed: int = 7
    base: Dataset | None = None
    position: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    marks_sent: collections.deque[tuple[Mark, float]] = field(
        default_factory=collections.deque
    )
    anomalous: set[str] = field(default_factory=set)

    def build(self) -> Dataset:
        """Generate the base data set (an hour of event time, starting 40 h ago)."""
        start = dt.datetime.now(dt.UTC).replace(
            minute=0, second=0, microsecond=0
        ) - dt.timedelta(hours=40)
        self.base = Generator(
            GeneratorConfig(
                students=self.students,
                courses=20,
                events=self.events_per_cycle,
                start=start,
                span=dt.timedelta(hours=1),
                seed=self.seed,
                bad_ratio=0.005,
                anomaly_ratio=0.02,
                travel_ratio=0.0,  # a traveller's cycles would alert at each seam
                weights=dict(self.settings.scoring.weights),
                half_life_s=self.settings.scoring.half_life_s,
            )
        ).build()
        self.anomalous = {a["studentId"] for a in self.base.anomalies}
        return self.base

    def upsert_profiles(self, settings: Settings) -> None:
        """The base data set's student profiles into the stream's ``students``."""
        from learntrack.producers.generator import upsert_profiles

        assert self.base is not None  # noqa: S101 - build() first
        upsert_profiles(settings, self.base.profiles)

    def _chunk(self, count: int, every: int) -> tuple[Dataset, dict[int, Mark]]:
        """The next ``count`` records (shifted copies) and the marks among them."""
        base = self.base
        assert base is not None  # noqa: S101 - build() first
        size = len(base.order)
        events: list[Event] = []
        malformed = []
        order: list[int] = []
        marks: dict[int, Mark] = {}
        for k in range(count):
            cycle, at = divmod(self.position + k, size)
            index = base.order[at]
            if index < 0:
                malformed.append(base.malformed[-index - 1])
                order.append(-len(malformed))
                continue
            ts, eid, sid, *rest = base.events[index]
            eid = f"{cycle:08x}{eid[8:]}"
            n = self.counts[sid] = self.counts.get(sid, 0) + 1
            order.append(len(events))
            events.append((ts + cycle * HOUR, eid, sid, *rest))  # type: ignore[arg-type]
            sampled = every > 0 and (self.position + k) % every == 0
            if sampled or sid in self.anomalous:
                marks[k] = Mark(eid, sid, n, sampled)
        self.position += count
        data = Dataset(base.config, [], events, malformed, order, [], [])
        return data, marks

    def publish(
        self, producer: Any, rate: float, records: int, *, probe: bool = True
    ) -> Published:
        """Serialize ``records`` records (:meth:`prepare`), then :meth:`send` them."""
        return self.send(producer, rate, self.prepare(rate, records, probe=probe))

    def prepare(self, rate: float, records: int, *, probe: bool = True) -> Prepared:
        """The next ``records`` records, serialized, in chunks of about a second.

        Done before a step starts, so the paced loop only hands bytes to the
        producer: the load costs the stream's cores as little as it can (a course
        app's producers run on other machines), and the step's CPU figures and lag
        samples do not include the serialization.
        """
        chunk = 10_000 if rate <= 0 else 1000 * max(1, round(rate / 1000))
        every = max(1, round(rate / SAMPLES_PER_S)) if probe and rate > 0 else 0
        chunks = []
        for done in range(0, records, chunk):
            data, marks = self._chunk(min(chunk, records - done), every)
            chunks.append((list(delivery_stream(data)), marks))
        return Prepared(records, chunks)

    def send(self, producer: Any, rate: float, prepared: Prepared) -> Published:
        """Send prepared records at ``rate``/s (0: unpaced), then flush.

        Runs in the calling thread (the bench runs it in a thread of its own).
        Each chunk goes through :func:`send_paced`, paced from its own start.
        """
        started = time.monotonic()
        for pairs, marks in prepared.chunks:
            sender = _MarkingSender(producer.send_serialized, marks, self.marks_sent)
            send_paced(pairs, sender if marks else producer.send_serialized, rate=rate)
        ended = time.monotonic()
        producer.flush(120)
        return Published(prepared.records, started, ended)


@dataclass(frozen=True)
class Prepared:
    """Records serialized ahead of a step: chunks of (key, value) pairs and marks."""

    records: int
    chunks: list[tuple[list[tuple[bytes | None, bytes]], dict[int, Mark]]]


class _MarkingSender:
    """Sends records; notes when the marked ones (by position) were handed over."""

    def __init__(
        self,
        send: Any,
        marks: dict[int, Mark],
        out: collections.deque[tuple[Mark, float]],
    ) -> None:
        self.send = send
        self.marks = marks
        self.out = out
        self.position = 0

    def __call__(self, key: bytes | None, value: bytes) -> None:
        self.send(key, value)
        mark = self.marks.get(self.position)
        if mark is not None:
            self.out.append((mark, time.monotonic()))
        self.position += 1


@dataclass(frozen=True)
class Latency:
    """One measured latency: when the record was published, and how long after."""

    sent: float
    seconds: float


class Probe:
    """Polls MongoDB and Redis for the load's marked records (bench main thread)."""

    def __init__(self, settings: Settings, load: Load) -> None:
        """Connect to the stream's MongoDB database and Redis db."""
        from learntrack.clients import mongo_client, redis_client

        self.load = load
        self._mongo = mongo_client(settings)
        self._db = self._mongo[settings.mongo.database]
        self._redis = redis_client(settings)
        self.pending_mongo: dict[str, float] = {}
        self.pending_redis: list[tuple[Mark, float]] = []
        self.watched: dict[str, float] = {}  # eventId -> sent, anomalous students
        self.seen_alerts: set[str] = set()
        # New alerts arrive on a change stream (MongoDB runs as a replica set): a
        # query per poll would scan ``alerts`` (no index on detectedAt) and bring
        # back every recent alert again, costing mongod and the bench cores the
        # stream needs.
        self._alerts = self._db["alerts"].watch(
            [{"$match": {"operationType": "insert"}}], max_await_time_ms=10
        )
        self.mongo: list[Latency] = []
        self.redis: list[Latency] = []
        self.alerts: list[Latency] = []
        self.unattributed_alerts = 0

    def close(self) -> None:
        """Disconnect."""
        self._alerts.close()
        self._mongo.close()
        self._redis.close()

    def _take_marks(self) -> None:
        queue = self.load.marks_sent
        while queue:
            mark, sent = queue.popleft()
            if mark.sampled:
                self.pending_mongo[mark.event_id] = sent
                self.pending_redis.append((mark, sent))
            if mark.student in self.load.anomalous:
                self.watched[mark.event_id] = sent

    def poll(self) -> None:
        """One round: which pending records became visible since the last one."""
        self._take_marks()
        if self.pending_redis:
            students = sorted({m.student for m, _ in self.pending_redis})
            pipe = self._redis.pipeline(transaction=False)
            for sid in students:
                pipe.hget(student_key(sid), "total")
            totals = dict(zip(students, pipe.execute(), strict=True))
            now = time.monotonic()
            still = []
            for mark, sent in self.pending_redis:
                if int(totals[mark.student] or 0) >= mark.nth:
                    self.redis.append(Latency(sent, now - sent))
                else:
                    still.append((mark, sent))
            self.pending_redis = still
        if self.pending_mongo:
            found = [
                d["_id"]
                for d in self._db["activities"].find(
                    {"_id": {"$in": list(self.pending_mongo)}}, {"_id": 1}
                )
            ]
            now = time.monotonic()
            for eid in found:
                sent = self.pending_mongo.pop(eid)
                self.mongo.append(Latency(sent, now - sent))
        self._poll_alerts()

    def _poll_alerts(self) -> None:
        new = []
        while (change := self._alerts.try_next()) is not None:
            doc = change["fullDocument"]
            if doc["_id"] not in self.seen_alerts:
                new.append(doc)
        if not self._alerts.alive:  # invalidated (alerts dropped): say so, loudly
            msg = "the alerts change stream ended: was the alerts collection dropped?"
            raise RuntimeError(msg)
        now = time.monotonic()
        for doc in new:
            self.seen_alerts.add(doc["_id"])
            second = self.watched.get(doc["second"]["eventId"])
            if second is None:
                self.unattributed_alerts += 1
            else:
                self.alerts.append(Latency(second, now - second))

    def pending(self) -> int:
        """Sampled records not yet seen in both stores."""
        return len(self.pending_mongo) + len(self.pending_redis)

    def run_while(self, busy: threading.Thread | None, until: float) -> None:
        """Poll every :data:`POLL_S` until ``busy`` ends or ``until`` (monotonic)."""
        while (busy is None or busy.is_alive()) and time.monotonic() < until:
            started = time.monotonic()
            self.poll()
            time.sleep(max(0.0, POLL_S - (time.monotonic() - started)))
