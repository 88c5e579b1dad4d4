"""Multi-region detection in the stream: two regions within a window, exactly once.

Runs inside the fan-out's one Spark job per batch, as the executor sink
:class:`DetectSink`: each task takes its students' new events (the same parse, the
same de-duplication as every other store: each record is read and parsed once),
reads their states from Redis, folds the events in with :class:`Detector`, writes
the states back and emits the alerts, which the alert sinks write on the driver
(:mod:`learntrack.sinks.alerts`).

Why not Spark's state store any more: ``applyInPandasWithState`` needs a second
query (a second read and parse of every record), a shuffle by student and a state
store commit per batch; measured at 1.0-3.2 s a batch against 0.3-0.4 s without
(see ``docs/streaming.md``). Kafka already groups a student's events in one
partition, so one task owns each student, and the state can live in Redis, one
MGET and one pipelined SET per task. What Spark's state store gave, this keeps:

- **Replays**: a state is versioned by batch id (before and after), so a batch re-run
  after a crash starts from the state its first attempt saw and raises the same
  alerts with the same ids; the alert sinks upsert by ``alertId``: exactly once.
- **The event-time watermark**: :class:`EventClock` fixes each batch's watermarks
  (per Kafka partition: the newest event time of the earlier batches in that
  partition, minus the lateness) in Redis before the batch's tasks run, so a
  replay sees the same ones. Per partition, because a student's events and state
  live with one partition: one watermark for all partitions (Spark's) turns the
  events of a partition that is behind in event time late while a capped backlog
  drains, and detection missed an anomaly that way.
- **Bounded state**: each step drops what left the window behind the watermark;
  an empty or idle state expires (a Redis TTL).

Per student the state keeps the recent events (time, region, eventId, ingest time)
and the alerts already raised. For each new event (taken in event-time order) the
closest earlier-or-later stored event from another region within the window makes a
pair; the pair becomes an alert unless an alert for the same two regions was raised
within a window of it (one alert per episode, not one per event). Arrival order
does not matter as long as an event is at most ``lateness`` behind the newest event
time seen (the watermark); later ones are not compared.
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson

from learntrack.config import Settings
from learntrack.sinks import redis as redis_names
from learntrack.sinks.base import Part, Runs, StreamSink

#: Namespace of the deterministic alert ids (uuid5 of student and both event ids).
ALERT_NAMESPACE = uuid.UUID("5b7c0f4e-6a55-4c1e-9b1e-4c8b2f3d9a10")
KINDS = ("impossible_travel", "concurrent_sessions")

ALERT_COLUMNS = (
    ("alertId", "string"),
    ("studentId", "string"),
    ("kind", "string"),
    ("firstEventId", "string"),
    ("firstMs", "long"),
    ("firstRegion", "string"),
    ("secondEventId", "string"),
    ("secondMs", "long"),
    ("secondRegion", "string"),
    ("ingestedMs", "long"),
)

# One remembered event: (event ms, region, eventId, ingest ms)
Seen = tuple[int, str, str, int]


def alert_schema_ddl() -> str:
    """The detector's output schema as a DDL string."""
    return ", ".join(f"{name} {kind}" for name, kind in ALERT_COLUMNS)


def alert_id(student_id: str, first_event: str, second_event: str) -> str:
    """Deterministic id of the alert about a pair of events (order-insensitive)."""
    a, b = sorted((first_event, second_event))
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{student_id}|{a}|{b}"))


def classify(gap_ms: int, concurrent_gap_ms: int) -> str:
    """Kind of an alert from the gap between its two events.

    Two regions a few minutes apart cannot be one person travelling at all: two
    sessions are open at once (``concurrent_sessions``); further apart but still
    inside the window, the travel is impossible (``impossible_travel``).
    """
    return "concurrent_sessions" if gap_ms <= concurrent_gap_ms else "impossible_travel"


class Detector:
    """The per-student detection step (pure; unit-testable without Spark)."""

    def __init__(self, window_ms: int, concurrent_gap_ms: int) -> None:
        """``window_ms``: two regions closer than this alert."""
        self.window_ms = window_ms
        self.concurrent_gap_ms = concurrent_gap_ms

    def step(
        self,
        student_id: str,
        state: dict[str, list[Any]],
        events: list[Seen],
        watermark_ms: int,
    ) -> list[tuple[Any, ...]]:
        """Fold ``events`` into ``state`` (mutated); return the new alert rows."""
        w = self.window_ms
        seen: list[Seen] = [tuple(e) for e in state["events"]]
        raised: list[list[Any]] = state["alerts"]
        known = {e[2] for e in seen}
        by_region: dict[str, list[Seen]] = defaultdict(list)
        for e in sorted(seen):
            by_region[e[1]].append(e)
        out: list[tuple[Any, ...]] = []
        for event in sorted(events, key=lambda e: (e[0], e[2])):
            ts, region, eid, _ingest = event
            if eid in known:
                continue  # the same event published twice
            best = _closest_elsewhere(by_region, region, ts, w)
            if best is not None:
                first, second = sorted((best, event), key=lambda e: (e[0], e[2]))
                pair = sorted((first[1], second[1]))
                at = second[0]
                episode = any(
                    a[1] == pair[0] and a[2] == pair[1] and abs(a[0] - at) <= w
                    for a in raised
                )
                if not episode:
                    raised.append([at, pair[0], pair[1]])
                    out.append(
                        (
                            alert_id(student_id, first[2], second[2]),
                            student_id,
                            classify(second[0] - first[0], self.concurrent_gap_ms),
                            first[2],
                            first[0],
                            first[1],
                            second[2],
                            second[0],
                            second[1],
                            max(first[3], second[3]),
                        )
                    )
            seen.append(event)
            bisect.insort(by_region[region], event)
            known.add(eid)
        horizon = watermark_ms - w
        state["events"] = [list(e) for e in seen if e[0] >= horizon]
        state["alerts"] = [a for a in raised if a[0] >= horizon]
        return out

    def expires_at(self, state: dict[str, list[Any]], watermark_ms: int) -> int:
        """Event-time timeout: when every remembered item has left the window."""
        latest = max(
            [e[0] for e in state["events"]] + [a[0] for a in state["alerts"]],
            default=watermark_ms,
        )
        return max(latest + self.window_ms, watermark_ms) + 1


def _closest_elsewhere(
    by_region: dict[str, list[Seen]], region: str, ts: int, window_ms: int
) -> Seen | None:
    """The stored event of another region nearest to ``ts`` within the window.

    Each region's events are sorted by time, so this is a binary search per region
    (not a scan of the student's events). Ties: the smaller eventId.
    """
    best: tuple[int, str] | None = None
    found: Seen | None = None
    for other, events in by_region.items():
        if other == region or not events:
            continue
        i = bisect.bisect_left(events, (ts,))
        candidates = []
        if i < len(events):
            candidates.append(events[i])  # first at or after ts (smallest eventId)
        if i > 0:
            before = events[i - 1][0]
            candidates.append(events[bisect.bisect_left(events, (before,))])
        for cand in candidates:
            key = (abs(ts - cand[0]), cand[2])
            if key[0] <= window_ms and (best is None or key < best):
                best, found = key, cand
    return found


#: Redis keys: a student's detection state, and the stream's event-time clock.


class DetectSink(StreamSink):
    """Detection inside the batch's tasks; state per student in Redis.

    For each student of the task: read the state, fold the new events in with
    :class:`Detector`, write the state back, emit the alerts (for the alert sinks,
    on the driver). The state is versioned by batch id: ``{"b": batch, "prev":
    state before the batch, "cur": state after it}``. A task re-run for the same
    batch (a retried task, a batch replayed after a crash) starts from ``prev``, so
    it raises the same alerts with the same ids, and the alert sinks upsert by id:
    exactly once. A student's events are all in one task (Kafka keys by student),
    so no two tasks touch one state.
    """

    name = "detect"
    runs_on = Runs.EXECUTOR
    emits = "alerts"

    @classmethod
    def decode(cls, emitted: list[Any]) -> list[Any]:
        """Alert rows -> alert documents (detected now, on the driver)."""
        from learntrack.sinks.alerts import alert_doc

        now = dt.datetime.now(dt.UTC)
        return [alert_doc(a, now) for a in emitted]

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Only with detection on."""
        return settings.detect.enabled

    def open(self) -> None:
        """Connect to Redis."""
        from learntrack.clients import redis_client

        d = self.settings.detect
        self._client = redis_client(self.settings)
        self._detector = Detector(
            int(d.window_s * 1000), int(d.concurrent_gap_s * 1000)
        )
        self._lateness_ms = int(d.lateness_s * 1000)
        # A state outlives its last event's window by far (an idle stream does not
        # move the watermark), then expires.
        self._ttl_s = int(2 * (d.window_s + d.lateness_s)) + 86_400

    def close(self) -> None:
        """Disconnect."""
        self._release("_client")

    def ping(self) -> None:
        """PING."""
        self._client.ping()

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Events as rows (watermark 0); how many alerts they raise."""
        names = ("studentId", "timestamp", "region", "eventId", "kafkaTimestamp")
        events = {n: [r[n] for r in rows] for n in names}
        events["partition"] = [r.get("partition", 0) for r in rows]
        return len(self.write_part(Part(batch_id, 0, events)))

    def write_part(self, part: Part) -> list[Any]:
        """Fold the task's events into each student's state; return new alert rows."""
        by_student = comparable_events(part.events, part.watermarks, self._lateness_ms)
        if not by_student:
            return []
        students = sorted(by_student)
        keys = [redis_names.detect_state_key(s) for s in students]
        try:
            stored = self._client.mget(keys)
        except Exception as err:
            raise redis_names.classify("detect", err) from err
        batch = part.batch_id
        alerts: list[Any] = []
        writes: dict[str, bytes] = {}
        for sid, key, raw in zip(students, keys, stored, strict=True):
            watermark = part.watermarks.get(by_student[sid][0][4], 0)
            versions = orjson.loads(raw) if raw else None
            base: dict[str, list[Any]]
            if versions is None:
                base = {"events": [], "alerts": []}
            elif versions["b"] == batch:
                base = versions["prev"]  # this batch again: start where it started
            elif versions["b"] < batch:
                base = versions["cur"]
            else:  # a newer batch already folded this student: nothing is new
                continue
            current = orjson.loads(orjson.dumps(base))
            seen = [e[:4] for e in by_student[sid]]
            rows = self._detector.step(sid, current, seen, watermark)
            alerts += [dict(zip(ALERT_NAMES, r, strict=True)) for r in rows]
            writes[key] = orjson.dumps({"b": batch, "prev": base, "cur": current})
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in writes.items():
                pipe.set(key, value, ex=self._ttl_s)
            pipe.execute()
        except Exception as err:
            raise redis_names.classify("detect", err) from err
        return alerts

    def reset(self) -> None:
        """Delete every detection state and the clock."""
        from learntrack.clients import redis_client

        client = redis_client(self.settings)
        try:
            keys = list(
                client.scan_iter(match=f"{redis_names.DETECT_PREFIX}*", count=1000)
            )
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
        finally:
            client.close()


ALERT_NAMES = tuple(name for name, _ in ALERT_COLUMNS)


def comparable_events(
    events: dict[str, list[Any]], watermarks: dict[int, int], lateness_ms: int
) -> dict[str, list[tuple[int, str, str, int, int]]]:
    """Each student's events that detection compares: :data:`Seen` + partition.

    Left out: records without a broker time, events dated ahead of their broker
    time by more than the lateness (the watermark follows the newest event time,
    so one such event would make every other one "late" and blind detection for
    hours; they still reach every other store), and events behind their partition's
    watermark (late: they are not compared, as Spark's own watermark drops them).
    """
    out: dict[str, list[tuple[int, str, str, int, int]]] = defaultdict(list)
    for sid, ts, region, eid, ingest, partition in zip(
        events["studentId"], events["timestamp"], events["region"],
        events["eventId"], events["kafkaTimestamp"], events["partition"], strict=True,
    ):  # fmt: skip
        if ingest is None:
            continue
        ms, ingest_ms = _ms(ts), _ms(ingest)
        if ms > ingest_ms + lateness_ms or ms < watermarks.get(partition, 0):
            continue
        out[sid].append((ms, region, eid, ingest_ms, partition))
    return out


def newest_event_ms(events: dict[str, list[Any]], lateness_ms: int) -> dict[int, int]:
    """Per partition, the newest event time detection could compare: moves the clock."""
    newest: dict[int, int] = {}
    for ts, ingest, partition in zip(
        events["timestamp"], events["kafkaTimestamp"], events["partition"], strict=True
    ):
        if ingest is not None:
            ms = _ms(ts)
            if ms <= _ms(ingest) + lateness_ms and ms > newest.get(partition, -1):
                newest[partition] = ms
    return newest


def _ms(value: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (naive = UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


class EventClock:
    """The stream's event-time watermarks, per Kafka partition, fixed per batch.

    Kept in Redis (the hash ``lt:detect:clock``: ``batch``, ``wm:<partition>``,
    ``newest:<partition>``). The watermark of partition ``p`` in batch ``b`` is the
    newest comparable event time of ``p`` in the batches before ``b`` minus the
    lateness, never moving back. They are stored with the batch id before the
    batch's tasks run, so a batch replayed after a crash gets the very watermarks
    its first attempt had; after the batch, each partition's newest event time
    moves forward (a maximum: repeating it is harmless).
    """

    def __init__(self, settings: Settings) -> None:
        """Nothing connects until :meth:`watermarks`."""
        self.settings = settings
        self.lateness_ms = int(settings.detect.lateness_s * 1000)

    def watermarks(self, client: Any, batch_id: int) -> dict[int, int]:
        """The watermarks of ``batch_id`` by partition (epoch ms; absent = 0)."""
        raw = client.hgetall(redis_names.DETECT_CLOCK)
        state = {_text(k): int(v) for k, v in raw.items()}
        fixed = {int(k[3:]): v for k, v in state.items() if k.startswith("wm:")}
        if state.get("batch") == batch_id:
            return fixed
        for key, newest in state.items():
            if key.startswith("newest:"):
                p = int(key[7:])
                fixed[p] = max(fixed.get(p, 0), newest - self.lateness_ms, 0)
        mapping: dict[str, int] = {f"wm:{p}": w for p, w in fixed.items()}
        client.hset(redis_names.DETECT_CLOCK, mapping={**mapping, "batch": batch_id})
        return fixed

    def advance(self, client: Any, newest: dict[int, int]) -> None:
        """After a batch: each partition's newest comparable event time (a maximum)."""
        if not newest:
            return
        keys = [f"newest:{p}" for p in newest]
        current = client.hmget(redis_names.DETECT_CLOCK, keys)
        higher = {
            key: ms
            for key, ms, now in zip(keys, newest.values(), current, strict=True)
            if now is None or int(now) < ms
        }
        if higher:
            client.hset(redis_names.DETECT_CLOCK, mapping=higher)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
