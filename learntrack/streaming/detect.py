"""Multi-region detection in the stream: two regions within a window, exactly once.

Runs inside ``learntrack stream`` as a second streaming query next to the fan-out.
The plan: the Kafka source -> the same parser as the fan-out (executors) -> valid
events -> ``withWatermark(timestamp, lateness)`` -> ``groupBy(studentId)
.applyInPandasWithState(...)`` (executors; state in Spark's state store, RocksDB)
-> ``foreachBatch`` writing the alerts (driver).

Why Spark's state store: it is versioned with the query's offset log, so a batch
re-run after a crash starts from exactly the state the first attempt saw and emits
the same alerts with the same ids; the sinks upsert by ``alertId``, so effects are
exactly once. Event-time timeouts expire a student's state once the watermark has
passed ``window + lateness`` beyond the student's last event: state is bounded.

Per student the state keeps the recent events (time, region, eventId, ingest time)
and the alerts already raised. For each new event (taken in event-time order) the
closest earlier-or-later stored event from another region within the window makes a
pair; the pair becomes an alert unless an alert for the same two regions was raised
within a window of it (one alert per episode, not one per event). Arrival order
does not matter as long as an event is at most ``lateness`` behind the newest event
time seen (the watermark); later ones are dropped by Spark and not compared.
"""

from __future__ import annotations

import bisect
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from learntrack.config import Settings

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
STATE_DDL = "state string"

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


def make_stateful_fn(
    settings: Settings,
) -> Callable[[tuple[Any, ...], Iterator[Any], Any], Iterator[Any]]:
    """The ``applyInPandasWithState`` function for ``settings`` (picklable)."""
    window_ms = int(settings.detect.window_s * 1000)
    concurrent_ms = int(settings.detect.concurrent_gap_s * 1000)

    def detect(
        key: tuple[Any, ...], frames: Iterator[Any], state: Any
    ) -> Iterator[Any]:
        import pandas as pd

        detector = Detector(window_ms, concurrent_ms)
        student_id = str(key[0])
        columns = [name for name, _ in ALERT_COLUMNS]
        current: dict[str, list[Any]] = (
            orjson.loads(state.get[0]) if state.exists else {"events": [], "alerts": []}
        )
        watermark = int(state.getCurrentWatermarkMs())
        events: list[Seen] = []
        if not state.hasTimedOut:
            for frame in frames:
                ms = _epoch_ms(frame["timestamp"])
                ingest = _epoch_ms(frame["kafkaTimestamp"])
                events.extend(
                    zip(
                        ms,
                        frame["region"].tolist(),
                        frame["eventId"].tolist(),
                        ingest,
                        strict=True,
                    )
                )
        rows = detector.step(student_id, current, events, watermark)
        if current["events"] or current["alerts"]:
            state.update((orjson.dumps(current).decode(),))
            state.setTimeoutTimestamp(detector.expires_at(current, watermark))
        else:
            state.remove()
        if rows:
            yield pd.DataFrame.from_records(rows, columns=columns)

    return detect


def _epoch_ms(series: Any) -> list[int]:
    """Epoch milliseconds of a pandas datetime column (naive = UTC)."""
    import pandas as pd

    stamps = pd.to_datetime(series, utc=True).dt.as_unit("ms")
    return [int(v) for v in stamps.astype("int64").tolist()]


def alerts_stream(settings: Settings, valid: Any) -> Any:
    """The streaming DataFrame of alerts from a streaming DataFrame of valid events."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    lateness = int(settings.detect.lateness_s)
    # The watermark follows the newest event time, so an event dated ahead of its
    # broker time by more than the lateness would make every other event "late"
    # (blinding detection for hours): such events, and records without a broker
    # time, are not compared (they still reach every other store).
    return (
        valid.select("studentId", "eventId", "timestamp", "region", "kafkaTimestamp")
        .where(
            "kafkaTimestamp IS NOT NULL AND "
            f"timestamp <= kafkaTimestamp + INTERVAL {lateness} SECONDS"
        )
        .withWatermark("timestamp", f"{lateness} seconds")
        .groupBy("studentId")
        .applyInPandasWithState(
            make_stateful_fn(settings),
            alert_schema_ddl(),
            STATE_DDL,
            "append",
            GroupStateTimeout.EventTimeTimeout,
        )
    )
