"""Where multi-region alerts go: the alerts topic, MongoDB, Redis and the graph.

Runs on the driver, after each stream batch's tasks raised them (alerts are few). An
alert is immutable and keyed by its deterministic ``alertId``, so every write is an
upsert that a replayed batch repeats harmlessly:

- ``learntrack.alerts`` (JSON, key = studentId): one Kafka transaction per batch with
  a commit marker (:class:`learntrack.sinks.dlq.TransactionalTopicSink`);
- MongoDB ``alerts``: ``_id`` = alertId, inserted once (``$setOnInsert``), so the
  first ``detectedAt`` stays;
- Redis: SETs of alert ids (``lt:alerts:all``, ``lt:alerts:student:<id>``,
  ``lt:alerts:hour:<YYYYMMDDHH>`` by event time), counted with SCARD;
- the graph: ``(:Alert)-[:CONCERNS]->(:Student)`` and ``(:Alert)-[:EVIDENCE]->
  (:Activity)`` for both events, merged by id.

The document shape (also the topic's JSON and the API's): ``{alertId, studentId,
kind, regions: [a, b] (sorted), first: {eventId, timestamp, region}, second:
{...}, gapSeconds, timestamp (= second.timestamp), ingestedAt, detectedAt}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from learntrack.clients import graph_driver, mongo_client, redis_client
from learntrack.config import Settings
from learntrack.events import utc_iso
from learntrack.sinks import graph as graph_store
from learntrack.sinks import mongo as mongo_store
from learntrack.sinks import redis as redis_store
from learntrack.sinks.base import Runs, StreamSink
from learntrack.sinks.dlq import Record, TransactionalTopicSink
from learntrack.sinks.graph import delete_nodes

ALERTS = "alerts"
HOUR_KEY_DAYS = 30


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def alert_doc(row: Any, detected_at: dt.datetime) -> dict[str, Any]:
    """The alert document for a detector output row."""
    r = row.asDict() if hasattr(row, "asDict") else dict(row)
    first = {
        "eventId": r["firstEventId"],
        "timestamp": _from_ms(r["firstMs"]),
        "region": r["firstRegion"],
    }
    second = {
        "eventId": r["secondEventId"],
        "timestamp": _from_ms(r["secondMs"]),
        "region": r["secondRegion"],
    }
    return {
        "alertId": r["alertId"],
        "studentId": r["studentId"],
        "kind": r["kind"],
        "regions": sorted({first["region"], second["region"]}),
        "first": first,
        "second": second,
        "gapSeconds": (r["secondMs"] - r["firstMs"]) / 1000,
        "timestamp": second["timestamp"],
        "ingestedAt": _from_ms(r["ingestedMs"]),
        "detectedAt": detected_at,
    }


def alert_json(doc: dict[str, Any]) -> bytes:
    """The alert as JSON (times as ISO-8601 UTC)."""

    def convert(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return utc_iso(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return orjson.dumps(convert(doc))


class _AlertSink(StreamSink):
    """A driver sink of the batch's alerts (only with detection on)."""

    runs_on = Runs.DRIVER
    takes = "alerts"

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Only when the stream detects."""
        return settings.detect.enabled


class AlertTopicSink(TransactionalTopicSink):
    """Alerts to ``learntrack.alerts``, exactly once per batch."""

    name = "alerts.topic"
    takes = "alerts"

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Only when the stream detects."""
        return settings.detect.enabled

    def topic(self) -> str:
        """The alerts topic."""
        return self.settings.topics.alerts

    def records(self, batch_id: int, rows: Sequence[Any]) -> Iterator[Record]:
        """Each alert as JSON, keyed by student."""
        for doc in rows:
            yield doc["studentId"].encode(), alert_json(doc), None


class MongoAlertSink(_AlertSink):
    """Alerts into MongoDB ``alerts`` (inserted once per alertId)."""

    name = "alerts.mongo"

    def open(self) -> None:
        """Connect and create the indexes the API reads with."""
        from pymongo import ASCENDING, DESCENDING

        self._client = mongo_client(self.settings)
        coll = self._client[self.settings.mongo.database][ALERTS]
        coll.create_index([("timestamp", DESCENDING)])
        coll.create_index([("studentId", ASCENDING), ("timestamp", DESCENDING)])

    def close(self) -> None:
        """Disconnect."""
        self._release("_client")

    def ping(self) -> None:
        """A server round-trip."""
        self._client.admin.command("ping")

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Upsert the alerts; returns how many were new."""
        from pymongo import UpdateOne

        ops = [
            UpdateOne(
                {"_id": d["alertId"]},
                {"$setOnInsert": {**d, "batch": batch_id}},
                upsert=True,
            )
            for d in rows
        ]
        if not ops:
            return 0
        coll = self._client[self.settings.mongo.database][ALERTS]
        try:
            return int(coll.bulk_write(ops, ordered=False).upserted_count)
        except Exception as err:
            raise mongo_store.classify("alerts.mongo", err) from err

    def reset(self) -> None:
        """Drop the alerts collection."""
        self.open()
        try:
            self._client[self.settings.mongo.database].drop_collection(ALERTS)
        finally:
            self.close()


class RedisAlertSink(_AlertSink):
    """Alert ids in Redis sets: all, per student, per event-time hour."""

    name = "alerts.redis"

    def open(self) -> None:
        """Connect."""
        self._client = redis_client(self.settings)

    def close(self) -> None:
        """Disconnect."""
        self._release("_client")

    def ping(self) -> None:
        """A server round-trip."""
        self._client.ping()

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """SADD every alert id (idempotent); returns how many rows were applied."""
        pipe = self._client.pipeline(transaction=True)
        for d in rows:
            hour = hour_key(d["timestamp"])
            pipe.sadd(redis_store.ALL_ALERTS, d["alertId"])
            pipe.sadd(redis_store.student_alerts_key(d["studentId"]), d["alertId"])
            pipe.sadd(hour, d["alertId"])
            expire = d["timestamp"] + dt.timedelta(days=HOUR_KEY_DAYS)
            pipe.expireat(hour, int(expire.timestamp()))
        try:
            pipe.execute()
        except Exception as err:
            raise redis_store.classify("alerts.redis", err) from err
        return len(rows)

    def reset(self) -> None:
        """Delete every alert key."""
        self.open()
        try:
            keys = list(
                self._client.scan_iter(f"{redis_store.ALERTS_PREFIX}*", count=1000)
            )
            for i in range(0, len(keys), 500):
                self._client.delete(*keys[i : i + 500])
        finally:
            self.close()


def hour_key(at: dt.datetime) -> str:
    """The Redis key counting the alerts of ``at``'s hour (UTC)."""
    return redis_store.hour_alerts_key(f"{at.astimezone(dt.UTC):%Y%m%d%H}")


def alerts_per_hour(client: Any, hours: Sequence[dt.datetime]) -> dict[str, int]:
    """Alert counts for the hours starting at ``hours`` (ISO hour -> count)."""
    pipe = client.pipeline(transaction=False)
    for h in hours:
        pipe.scard(hour_key(h))
    return {utc_iso(h): int(n) for h, n in zip(hours, pipe.execute(), strict=True)}


UPSERT_ALERTS = """
UNWIND $alerts AS al
MERGE (s:Student {studentId: al.studentId})
MERGE (x:Alert {alertId: al.alertId})
ON CREATE SET x.kind = al.kind, x.regions = al.regions, x.timestamp = al.timestamp,
              x.gapSeconds = al.gapSeconds, x.detectedAt = al.detectedAt
MERGE (x)-[:CONCERNS]->(s)
WITH x, s, al
UNWIND al.evidence AS ev
MERGE (a:Activity {eventId: ev.eventId})
ON CREATE SET a.timestamp = ev.timestamp, a.region = ev.region
MERGE (s)-[:PERFORMED]->(a)
MERGE (x)-[:EVIDENCE]->(a)
WITH a, ev
MERGE (r:Region {code: ev.region})
MERGE (a)-[:IN_REGION]->(r)
RETURN count(DISTINCT a) AS linked
"""


class GraphAlertSink(_AlertSink):
    """Alerts in the graph, linked to the student and both evidence activities."""

    name = "alerts.graph"

    def open(self) -> None:
        """Connect; make sure Alert ids are unique."""
        self._driver = graph_driver(self.settings)
        self._session_run(
            "CREATE CONSTRAINT alert_id IF NOT EXISTS "
            "FOR (x:Alert) REQUIRE x.alertId IS UNIQUE"
        )

    def close(self) -> None:
        """Disconnect."""
        self._release("_driver")

    def ping(self) -> None:
        """A Cypher round-trip."""
        self._session_run("RETURN 1")

    def _session_run(self, query: str, **params: Any) -> None:
        """Run ``query``; errors classified by the graph store's one rule."""
        try:
            with self._driver.session(database=self.settings.graph.database) as s:
                s.run(query, **params).consume()
        except Exception as err:
            raise graph_store.classify("alerts.graph", err) from err

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Merge the alerts and their evidence (idempotent)."""
        alerts = [
            {
                "alertId": d["alertId"],
                "studentId": d["studentId"],
                "kind": d["kind"],
                "regions": d["regions"],
                "timestamp": utc_iso(d["timestamp"]),
                "gapSeconds": d["gapSeconds"],
                "detectedAt": utc_iso(d["detectedAt"]),
                "evidence": [
                    {
                        "eventId": d[k]["eventId"],
                        "timestamp": utc_iso(d[k]["timestamp"]),
                        "region": d[k]["region"],
                    }
                    for k in ("first", "second")
                ],
            }
            for d in rows
        ]
        for i in range(0, len(alerts), 200):
            self._session_run(UPSERT_ALERTS, alerts=alerts[i : i + 200])
        return len(alerts)

    def reset(self) -> None:
        """Delete every Alert node."""
        self.open()
        try:
            with self._driver.session(database=self.settings.graph.database) as s:
                delete_nodes(s, "Alert")
        finally:
            self.close()


def alert_sinks(settings: Any, writer_id: str = "") -> dict[str, StreamSink]:
    """Every alert sink by name, in write order (the topic, the announcement, last)."""
    return {
        "mongo": MongoAlertSink(settings),
        "redis": RedisAlertSink(settings),
        "graph": GraphAlertSink(settings),
        "topic": AlertTopicSink(settings, writer_id=writer_id),
    }


def graph_alert_ids(session: Any) -> list[str]:
    """The ids of the graph's Alert nodes that CONCERN a Student (verify, tests)."""
    record = session.run(
        "MATCH (x:Alert)-[:CONCERNS]->(:Student) RETURN collect(x.alertId) AS ids"
    ).single()
    return list(record["ids"]) if record else []
