"""Redis sink: engagement scores, leaderboards and recent-activity counters.

Runs on the driver with the batch's per-student aggregates. Scores are stored
*anchored* (see :mod:`learntrack.scoring`), so updates are plain additions:
``ZINCRBY`` on the global and per-course leaderboards (the ranking of anchored
scores is the ranking of decayed scores at any instant). Each chunk of updates is
applied by one Lua script that first sets a fence key ``(batch, chunk)`` with NX:
a replayed batch finds the fence and changes nothing (atomic, exactly once).

Keys (prefix ``lt:``): ``lb:global`` and ``lb:course:<courseId>`` (ZSET, anchored
score), ``student:<id>`` (HASH: total, ``a:<action>`` counts, ``lastAt``),
``recent:<id>`` (HASH of 5-minute ``m:<epochMinute>`` and hourly ``h:<epochHour>``
event-time buckets, expiring after 2 days), ``fence:<batch>:<chunk>``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import orjson

from learntrack.clients import redis_client
from learntrack.errors import FatalSinkError, RetryableSinkError
from learntrack.scoring import score_at
from learntrack.sinks.base import Sink

PREFIX = "lt:"
CHUNK = 500
RECENT_TTL_S = 2 * 86_400
FENCE_TTL_S = 14 * 86_400

APPLY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then
  return -1
end
local ops = cjson.decode(ARGV[2])
local ttl = tonumber(ARGV[3])
for _, op in ipairs(ops) do
  local kind = op[1]
  if kind == 'z' then
    redis.call('ZINCRBY', op[2], op[4], op[3])
  elseif kind == 'h' then
    redis.call('HINCRBY', op[2], op[3], op[4])
  elseif kind == 'max' then
    local cur = redis.call('HGET', op[2], op[3])
    if (not cur) or cur < op[4] then redis.call('HSET', op[2], op[3], op[4]) end
  elseif kind == 'recent' then
    redis.call('HINCRBY', op[2], op[3], op[4])
    redis.call('EXPIRE', op[2], ttl)
  end
end
return #ops
"""


def _retryable(err: Exception) -> bool:
    import redis

    return isinstance(err, redis.ConnectionError | redis.TimeoutError)


class RedisScoreSink(Sink):
    """Per-student scores, leaderboards and counters, exactly once per batch.

    Rows: ``{studentId, total, actions: {a: n}, anchor, courseAnchors: {c: x},
    minutes: {epochMinute5: n}, hours: {epochHour: n}, lastAt (ISO)}``.
    """

    name = "redis"

    def open(self) -> None:
        """Connect and register the script."""
        self._client = redis_client(self.settings)
        self._apply = self._client.register_script(APPLY)

    def close(self) -> None:
        """Disconnect."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
            self._client = None

    def ping(self) -> None:
        """PING."""
        self._client.ping()

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Apply the batch in chunks of students, each fenced by (batch, chunk)."""
        ordered = sorted(rows, key=lambda r: r["studentId"])
        applied = 0
        for chunk_no, start in enumerate(range(0, len(ordered), CHUNK)):
            ops: list[list[Any]] = []
            for r in ordered[start : start + CHUNK]:
                ops.extend(_ops(r))
            fence = f"{PREFIX}fence:{batch_id}:{chunk_no}"
            try:
                result = self._apply(
                    keys=[fence], args=[FENCE_TTL_S, orjson.dumps(ops), RECENT_TTL_S]
                )
            except Exception as err:
                if _retryable(err):
                    raise RetryableSinkError(f"redis: {err}") from err
                raise FatalSinkError(f"redis: {err}") from err
            if int(result) >= 0:
                applied += len(ordered[start : start + CHUNK])
        return applied

    def reset(self) -> None:
        """Delete every ``lt:`` key."""
        self.open()
        try:
            batch = []
            for key in self._client.scan_iter(match=f"{PREFIX}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:  # noqa: PLR2004
                    self._client.delete(*batch)
                    batch = []
            if batch:
                self._client.delete(*batch)
        finally:
            self.close()


def _ops(r: Any) -> list[list[Any]]:
    sid = r["studentId"]
    student = f"{PREFIX}student:{sid}"
    recent = f"{PREFIX}recent:{sid}"
    ops: list[list[Any]] = [
        ["z", f"{PREFIX}lb:global", sid, repr(float(r["anchor"]))],
        ["h", student, "total", int(r["total"])],
        ["max", student, "lastAt", r["lastAt"]],
    ]
    ops += [["h", student, f"a:{a}", int(n)] for a, n in r["actions"].items()]
    ops += [
        ["z", f"{PREFIX}lb:course:{c}", sid, repr(float(x))]
        for c, x in r["courseAnchors"].items()
    ]
    ops += [["recent", recent, f"m:{m}", int(n)] for m, n in r["minutes"].items()]
    ops += [["recent", recent, f"h:{h}", int(n)] for h, n in r["hours"].items()]
    return ops


# -- reads (API, CLI, tests) ----------------------------------------------------------
def student_score(
    client: Any, student_id: str, half_life_s: float, as_of: dt.datetime
) -> float | None:
    """The decayed engagement score of a student at ``as_of`` (None if unknown)."""
    anchor = client.zscore(f"{PREFIX}lb:global", student_id)
    if anchor is None:
        return None
    return score_at(float(anchor), as_of, half_life_s)


def recent_counts(client: Any, student_id: str, as_of: dt.datetime) -> dict[str, int]:
    """Events in the last hour and the last day before ``as_of`` (by event time)."""
    fields = client.hgetall(f"{PREFIX}recent:{student_id}")
    minute_now = math.floor(as_of.timestamp() / 60)
    hour_now = math.floor(as_of.timestamp() / 3600)
    last_hour = last_day = 0
    for raw_field, raw_count in fields.items():
        field = raw_field.decode()
        kind, value = field.split(":", 1)
        count = int(raw_count)
        if kind == "m" and minute_now - 60 < int(value) <= minute_now:
            last_hour += count
        elif kind == "h" and hour_now - 24 < int(value) <= hour_now:
            last_day += count
    return {"lastHour": last_hour, "lastDay": last_day}
