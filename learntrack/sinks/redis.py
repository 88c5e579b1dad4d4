"""Redis sink: engagement scores, leaderboards and recent-activity counters.

Runs on executors, with the per-student aggregates of each task's events. Scores
are stored
*anchored* (see :mod:`learntrack.scoring`), so updates are plain additions:
``ZINCRBY`` on the global and per-course leaderboards (the ranking of anchored
scores is the ranking of decayed scores at any instant).

Exactly once: one Lua script applies a chunk of students atomically, and for each
student first compares the batch with the student's ``lastBatch``: a student already
at this batch (a replay) is skipped, whatever the chunking of the replay.

Keys (prefix ``lt:``): ``lb:global`` and ``lb:course:<courseId>`` (ZSET, anchored
score), ``student:<id>`` (HASH: ``total``, ``a:<action>`` counts, ``lastAt``,
``lastBatch``), ``recent:<id>:<epochDay>`` (HASH of per-minute event-time counts,
expiring two days after that day ends).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import orjson

from learntrack.clients import redis_client
from learntrack.errors import FatalSinkError, RetryableSinkError
from learntrack.sinks.base import Part, Runs, StreamSink

# -- names: every Redis key LearnTrack uses is built here, and only here ------------
PREFIX = "lt:"
GLOBAL_BOARD = f"{PREFIX}lb:global"
ALERTS_PREFIX = f"{PREFIX}alerts:"
ALL_ALERTS = f"{ALERTS_PREFIX}all"
PIPELINE = f"{PREFIX}pipeline"
PIPELINE_POINTS = f"{PREFIX}pipeline:points"
DETECT_PREFIX = f"{PREFIX}detect:"
DETECT_CLOCK = f"{DETECT_PREFIX}clock"


def student_key(student_id: str) -> str:
    """The student's hash: ``total``, ``lastAt``, ``a:<action>`` counts."""
    return f"{PREFIX}student:{student_id}"


def board_key(course_id: str | None = None) -> str:
    """The leaderboard sorted set: a course's, or the global one."""
    return f"{PREFIX}lb:course:{course_id}" if course_id else GLOBAL_BOARD


def recent_key(student_id: str, day: int) -> str:
    """The student's per-minute counts of one epoch day (expires)."""
    return f"{PREFIX}recent:{student_id}:{day}"


def student_alerts_key(student_id: str) -> str:
    """The set of a student's alert ids."""
    return f"{ALERTS_PREFIX}student:{student_id}"


def hour_alerts_key(hour: str) -> str:
    """The set of the alert ids of one UTC hour (``YYYYmmddHH``)."""
    return f"{ALERTS_PREFIX}hour:{hour}"


def detect_state_key(student_id: str) -> str:
    """The detection state of one student (previous/current by batch id)."""
    return f"{DETECT_PREFIX}{student_id}"


def classify(where: str, err: Exception) -> RetryableSinkError | FatalSinkError:
    """Redis's one rule for its driver's errors: connection and timeout pass."""
    if _retryable(err):
        return RetryableSinkError(f"{where}: {err}")
    return FatalSinkError(f"{where}: {err}")


CHUNK = 500
DAY_S = 86_400
KEEP_DAYS_AFTER = 2

APPLY = """
local batch = tonumber(ARGV[1])
local students = cjson.decode(ARGV[2])
local applied = 0
for _, st in ipairs(students) do
  local skey = st[1]
  local last = tonumber(redis.call('HGET', skey, 'lastBatch') or '-1')
  if last < batch then
    redis.call('HSET', skey, 'lastBatch', batch)
    for _, op in ipairs(st[2]) do
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
        redis.call('EXPIREAT', op[2], op[5])
      end
    end
    applied = applied + 1
  end
end
return applied
"""


def unavailable_errors() -> tuple[type[Exception], ...]:
    """The driver's errors that mean Redis is down or too slow (all retryable)."""
    import redis

    return (redis.ConnectionError, redis.TimeoutError)


def _retryable(err: Exception) -> bool:
    return isinstance(err, unavailable_errors())


class RedisScoreSink(StreamSink):
    """Per-student scores, leaderboards and counters, exactly once per batch.

    Rows: ``{studentId, total, actions: {a: n}, anchor, courseAnchors: {c: x},
    minutes: {epochMinute5: n}, hours: {epochHour: n}, lastAt (ISO)}``.
    """

    name = "redis"
    runs_on = Runs.EXECUTOR

    def open(self) -> None:
        """Connect and register the script."""
        self._client = redis_client(self.settings)
        self._apply = self._client.register_script(APPLY)

    def close(self) -> None:
        """Disconnect."""
        self._release("_client")

    def ping(self) -> None:
        """PING."""
        self._client.ping()

    def write_part(self, part: Part) -> list[Any]:
        """The task's students' scores and counters."""
        from learntrack.sinks.fold import redis_rows

        self.write_batch(part.batch_id, redis_rows(part.students))
        return []

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Apply the batch in chunks; each student is fenced by its ``lastBatch``."""
        ordered = sorted(rows, key=lambda r: r["studentId"])
        applied = 0
        for start in range(0, len(ordered), CHUNK):
            students = [
                [student_key(r["studentId"]), _ops(r)]
                for r in ordered[start : start + CHUNK]
            ]
            try:
                applied += int(self._apply(args=[batch_id, orjson.dumps(students)]))
            except Exception as err:
                raise classify("redis", err) from err
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
    student = student_key(sid)
    ops: list[list[Any]] = [
        ["z", GLOBAL_BOARD, sid, repr(float(r["anchor"]))],
        ["h", student, "total", int(r["total"])],
        ["max", student, "lastAt", r["lastAt"]],
    ]
    ops += [["h", student, f"a:{a}", int(n)] for a, n in r["actions"].items()]
    ops += [
        ["z", board_key(c), sid, repr(float(x))] for c, x in r["courseAnchors"].items()
    ]
    for minute, n in r["minutes"].items():
        day = int(minute) * 60 // DAY_S
        expire_at = (day + 1 + KEEP_DAYS_AFTER) * DAY_S
        key = recent_key(sid, day)
        ops.append(["recent", key, str(minute), int(n), expire_at])
    return ops


# -- reads (API, CLI, tests) ----------------------------------------------------------
def recent_counts(client: Any, student_id: str, as_of: dt.datetime) -> dict[str, int]:
    """Events in the hour and the 24 hours up to ``as_of`` (event time, by minute)."""
    minute_now = math.floor(as_of.timestamp() / 60)
    day_now = minute_now * 60 // DAY_S
    last_hour = last_day = 0
    for day in (day_now - 1, day_now):
        for raw_minute, raw_count in client.hgetall(
            recent_key(student_id, day)
        ).items():
            age = minute_now - int(raw_minute)
            if 0 <= age < 60:  # noqa: PLR2004
                last_hour += int(raw_count)
            if 0 <= age < 1440:  # noqa: PLR2004
                last_day += int(raw_count)
    return {"lastHour": last_hour, "lastDay": last_day}
