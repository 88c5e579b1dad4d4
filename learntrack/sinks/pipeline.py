"""The pipeline metrics store: each stream batch kept in Redis, pushed to Grafana Live.

The stream job writes it (:class:`PipelineRecorder`); the API and the dashboards read
it (:func:`read_pipeline`, :data:`LIVE_CHANNEL`), so it lives with the stores.

Runs on the Spark driver (the ``learntrack stream`` process):
:meth:`PipelineRecorder.record` is called once per micro-batch of the fan-out query,
after its sinks, by :meth:`learntrack.streaming.job.StreamJob.process_batch`. It
never raises: a metric must never fail or slow down a batch.

Where the metrics go, and why there:

- **Redis** (the store the query service already reads): the hash ``lt:pipeline``
  holds running totals (batches, events, dead letters, duplicates) and the latest
  batch (id, time, duration, events/s, consumer lag, freshness p99); the list
  ``lt:pipeline:points`` keeps the last ``metrics.history`` batches as JSON, newest
  first. One Lua script applies a batch atomically and only if its id is above
  ``lastBatch``, so a batch that Spark re-runs after a crash is counted once. The
  API serves them as ``/pipeline/metrics`` (the ``/dashboard`` page's live charts)
  and as Prometheus text at ``/metrics``. Redis rather than an HTTP endpoint in
  the stream: the stream and the API are separate processes (containers with
  Docker), the numbers survive a stream restart, and ``learntrack stream --reset``
  deletes them with every other ``lt:`` key.
- **Grafana Live** (only with ``metrics.grafana_url``): each batch is POSTed as one
  line of Influx line protocol to ``/api/live/push/learntrack``; Grafana publishes
  it on the channel ``stream/learntrack/pipeline``, which the dashboard's live
  panels subscribe to. A push that fails or times out (``metrics.push_timeout_s``)
  is reported once, and pushes pause for :data:`RETRY_AFTER_S` seconds, so a
  Grafana that is down costs at most one timeout per pause.

Events per second: the batch's records (valid + dead letters) over the wall-clock
time since the previous batch ended (the batch's own duration for the first batch
of a run), i.e. the rate at which records went through the stream.

Freshness: seconds from each event's broker timestamp (when the producer's record
reached Kafka) to the end of its task's writes (every executor store has it), over
the batch's new events; p50, p99 and max, merged from each task's quantiles.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from learntrack.config import Settings
from learntrack.events import utc_iso
from learntrack.sinks.redis import PIPELINE, PIPELINE_POINTS

#: Grafana Live: stream id of the push endpoint, measurement, and the channel the
#: panels subscribe to (``stream/<stream id>/<measurement>``).
LIVE_STREAM = "learntrack"
LIVE_MEASUREMENT = "pipeline"
LIVE_CHANNEL = f"stream/{LIVE_STREAM}/{LIVE_MEASUREMENT}"
#: The fields of every pushed line (always floats: a Live frame's schema must not
#: change type from one push to the next).
LIVE_FIELDS = (
    "events_per_s",
    "lag",
    "rows",
    "dead_letters",
    "duplicates",
    "batch_seconds",
    "freshness_p99_s",
)
#: Seconds without pushes after a failed push.
RETRY_AFTER_S = 30.0

RECORD = """
local last = tonumber(redis.call('HGET', KEYS[1], 'lastBatch') or '-1')
local batch = tonumber(ARGV[1])
if batch <= last then return 0 end
redis.call('HSET', KEYS[1], 'lastBatch', ARGV[1], 'lastAt', ARGV[2],
           'lastSeconds', ARGV[3], 'eventsPerSecond', ARGV[4], 'lag', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'batches', 1)
redis.call('HINCRBY', KEYS[1], 'events', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'deadLetters', ARGV[7])
redis.call('HINCRBY', KEYS[1], 'duplicates', ARGV[8])
if ARGV[11] == '' then
  redis.call('HDEL', KEYS[1], 'freshnessP99')
else
  redis.call('HSET', KEYS[1], 'freshnessP99', ARGV[11])
end
redis.call('LPUSH', KEYS[2], ARGV[9])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[10]) - 1)
return 1
"""


class BatchFigures(Protocol):
    """What :meth:`PipelineRecorder.record` reads of a batch (a ``BatchReport``)."""

    batch_id: int
    valid: int
    invalid: int
    duplicates: int
    seconds: float
    sinks: dict[str, float]
    lag: dict[str, int]
    freshness: dict[str, float]


@dataclass(frozen=True)
class BatchPoint:
    """One micro-batch as the charts and Grafana Live see it."""

    batch: int
    at: dt.datetime
    rows: int
    valid: int
    dead_letters: int
    duplicates: int
    seconds: float
    events_per_s: float
    lag: int
    sinks: dict[str, float] = field(default_factory=dict)
    #: Produced (broker time) -> written to every store, over the batch's new
    #: events, in seconds: ``p50``, ``p99``, ``max`` (empty: no new event).
    freshness: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The JSON kept in Redis and served by the API (camelCase)."""
        return {
            "batch": self.batch,
            "at": utc_iso(self.at),
            "rows": self.rows,
            "valid": self.valid,
            "deadLetters": self.dead_letters,
            "duplicates": self.duplicates,
            "seconds": round(self.seconds, 4),
            "eventsPerSecond": round(self.events_per_s, 2),
            "lag": self.lag,
            "sinks": {k: round(v, 4) for k, v in self.sinks.items()},
            "freshnessP50": self.freshness.get("p50"),
            "freshnessP99": self.freshness.get("p99"),
            "freshnessMax": self.freshness.get("max"),
        }

    def live_fields(self) -> dict[str, float]:
        """The values pushed to Grafana Live, by :data:`LIVE_FIELDS` name."""
        return {
            "events_per_s": float(self.events_per_s),
            "lag": float(self.lag),
            "rows": float(self.rows),
            "dead_letters": float(self.dead_letters),
            "duplicates": float(self.duplicates),
            "batch_seconds": float(self.seconds),
            # A batch that stored no new event has no freshness: 0.
            "freshness_p99_s": float(self.freshness.get("p99", 0.0)),
        }


def batch_point(
    report: BatchFigures, at: dt.datetime, since_previous_s: float | None
) -> BatchPoint:
    """The point of a finished batch; ``since_previous_s``: None for the first one."""
    rows = report.valid + report.invalid
    interval = max(report.seconds, since_previous_s or 0.0)
    return BatchPoint(
        batch=report.batch_id,
        at=at,
        rows=rows,
        valid=report.valid,
        dead_letters=report.invalid,
        duplicates=report.duplicates,
        seconds=report.seconds,
        events_per_s=rows / interval if interval > 0 else 0.0,
        lag=sum(report.lag.values()),
        sinks=dict(report.sinks),
        freshness=dict(report.freshness),
    )


def influx_line(point: BatchPoint) -> str:
    """One line of Influx line protocol (nanosecond timestamp) for Grafana Live."""
    values = point.live_fields()
    fields = ",".join(f"{name}={values[name]!r}" for name in LIVE_FIELDS)
    ns = int(point.at.timestamp() * 1_000_000) * 1000
    return f"{LIVE_MEASUREMENT} {fields} {ns}"


class PipelineRecorder:
    """Records each micro-batch in Redis and pushes it to Grafana Live (driver).

    Clients are opened on first use and kept for the stream's life; :meth:`close`
    releases them. Not picklable and not needed on executors.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure; nothing connects until the first :meth:`record`."""
        self.settings = settings
        self.report = report
        self.clock = clock
        self._redis: Any = None
        self._script: Any = None
        self._http: Any = None
        self._previous_end: float | None = None
        self._paused_until = 0.0
        self._redis_failing = False
        self.pushed = 0

    # -- the hook ------------------------------------------------------------------
    def record(self, report: BatchFigures) -> BatchPoint:
        """Keep and push the metrics of a finished batch; never raises."""
        now = self.clock()
        since = None if self._previous_end is None else now - self._previous_end
        self._previous_end = now
        point = batch_point(report, dt.datetime.now(dt.UTC), since)
        self._store(point)
        self._push(point)
        return point

    def close(self) -> None:
        """Release the Redis and HTTP clients (idempotent)."""
        redis, self._redis = self._redis, None
        http, self._http = self._http, None
        if redis is not None:
            redis.close()
        if http is not None:
            http.close()

    # -- Redis ---------------------------------------------------------------------
    def _store(self, point: BatchPoint) -> None:
        from learntrack.clients import redis_client

        try:
            if self._redis is None:
                self._redis = redis_client(self.settings, timeout_s=2.0)
                self._script = self._redis.register_script(RECORD)
            self._script(
                keys=[PIPELINE, PIPELINE_POINTS],
                args=[
                    point.batch,
                    utc_iso(point.at),
                    repr(point.seconds),
                    repr(point.events_per_s),
                    point.lag,
                    point.rows,
                    point.dead_letters,
                    point.duplicates,
                    orjson.dumps(point.as_json()),
                    self.settings.metrics.history,
                    repr(point.freshness.get("p99", "")) if point.freshness else "",
                ],
            )
        except Exception as err:  # noqa: BLE001 - a metric must never fail a batch
            if not self._redis_failing:
                self.report(f"metrics: not kept in Redis ({type(err).__name__}: {err})")
            self._redis_failing = True
            return
        self._redis_failing = False

    # -- Grafana Live --------------------------------------------------------------
    def _push(self, point: BatchPoint) -> None:
        m = self.settings.metrics
        if m.grafana_url is None or self.clock() < self._paused_until:
            return
        import httpx

        url = f"{m.grafana_url.rstrip('/')}/api/live/push/{LIVE_STREAM}"
        try:
            if self._http is None:
                self._http = httpx.Client(
                    timeout=m.push_timeout_s, headers=self._auth_headers()
                )
            answer = self._http.post(url, content=influx_line(point).encode())
            answer.raise_for_status()
        except Exception as err:  # noqa: BLE001 - best effort, reported once
            self._paused_until = self.clock() + RETRY_AFTER_S
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
            self.report(
                f"metrics: Grafana Live push to {url} failed ({reason}); "
                f"next try in {RETRY_AFTER_S:.0f} s"
            )
            return
        self.pushed += 1

    def _auth_headers(self) -> dict[str, str]:
        import base64

        m = self.settings.metrics
        if m.grafana_token is not None:
            return {"Authorization": f"Bearer {m.grafana_token.get_secret_value()}"}
        if m.grafana_password is not None:
            pair = f"{m.grafana_user}:{m.grafana_password.get_secret_value()}"
            return {
                "Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"
            }
        return {}


# -- reads (API) -------------------------------------------------------------------
def read_pipeline(client: Any, points: int) -> tuple[dict[str, str], list[Any]]:
    """The totals hash and the newest ``points`` points (oldest first).

    Runs in the API process. Returns ``({}, [])`` before the first batch.
    """
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(PIPELINE)
    pipe.lrange(PIPELINE_POINTS, 0, points - 1)
    raw_totals, raw_points = pipe.execute()
    totals = {_text(k): _text(v) for k, v in raw_totals.items()}
    return totals, [orjson.loads(p) for p in reversed(raw_points)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_influx_line(line: str) -> tuple[str, Mapping[str, float], int]:
    """(measurement, fields, timestamp ns) of one line this module writes.

    The inverse of :func:`influx_line` for tests and for checking the dashboard's
    live panels against what is pushed; handles no tags and no escaping.
    """
    measurement, fields, ns = line.split(" ")
    values = {k: float(v) for k, v in (f.split("=", 1) for f in fields.split(","))}
    return measurement, values, int(ns)
