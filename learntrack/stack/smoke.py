"""Write one record to every store and read it back through its driver.

Runs in the CLI process (``learntrack stack check``, ``make demo``) and in tests.
Each check uses a throwaway key derived from a random token, and removes what it
wrote, so running it against a live deployment is harmless.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from learntrack.clients import (
    cassandra_session,
    graph_driver,
    mongo_client,
    redis_client,
)
from learntrack.config import Settings
from learntrack.errors import StackError

SMOKE_TOPIC = "learntrack.smoke"
SMOKE_KEYSPACE = "learntrack_smoke"
SMOKE_INSERT = "INSERT INTO learntrack_smoke.smoke (k, v) VALUES (%s, %s)"
SMOKE_SELECT = "SELECT v FROM learntrack_smoke.smoke WHERE k = %s"
SMOKE_DELETE = "DELETE FROM learntrack_smoke.smoke WHERE k = %s"


@dataclass(frozen=True)
class RoundTrip:
    """What a store was given and what it gave back."""

    store: str
    wrote: str
    read: str
    millis: float

    @property
    def ok(self) -> bool:
        """Whether the read returned exactly what was written."""
        return self.wrote == self.read


def kafka_roundtrip(settings: Settings, token: str) -> str:
    """Produce one message (acks=all) and consume it back by offset."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from learntrack.topics import create_topic

    base = settings.kafka.client_config()
    create_topic(settings, SMOKE_TOPIC, 1, retention_ms=600_000)
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            raise StackError(f"kafka delivery failed: {err}")
        delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer = Producer({**base, "acks": "all", "enable.idempotence": True})
    producer.produce(SMOKE_TOPIC, key=token, value=token, on_delivery=on_delivery)
    if producer.flush(10) != 0 or not delivered:
        raise StackError("kafka: message not delivered within 10 s")
    partition, offset = delivered[0]
    consumer = Consumer(
        {
            **base,
            "group.id": f"learntrack-smoke-{token}",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
        }
    )
    try:
        consumer.assign([TopicPartition(SMOKE_TOPIC, partition, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value()
            return value.decode() if value is not None else ""
    finally:
        consumer.close()
    raise StackError("kafka: produced message not read back within 10 s")


def mongo_roundtrip(settings: Settings, token: str) -> str:
    """insert_one then find_one in the ``smoke`` collection."""
    with mongo_client(settings) as client:
        coll = client[settings.mongo.database]["smoke"]
        coll.insert_one({"_id": token, "value": token})
        doc = coll.find_one({"_id": token})
        coll.delete_one({"_id": token})
    return str(doc["value"]) if doc else ""


def redis_roundtrip(settings: Settings, token: str) -> str:
    """SET with a TTL, then GET."""
    client = redis_client(settings)
    try:
        key = f"learntrack:smoke:{token}"
        client.set(key, token, ex=60)
        value = client.get(key)
        client.delete(key)
    finally:
        client.close()
    return value.decode() if value else ""


def graph_roundtrip(settings: Settings, token: str) -> str:
    """MERGE a node, read it back, delete it."""
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        session.run("MERGE (n:Smoke {token: $t})", t=token).consume()
        record = session.run(
            "MATCH (n:Smoke {token: $t}) RETURN n.token AS t", t=token
        ).single()
        session.run("MATCH (n:Smoke {token: $t}) DELETE n", t=token).consume()
    return str(record["t"]) if record else ""


def cassandra_roundtrip(settings: Settings, token: str) -> str:
    """Create a scratch keyspace/table if missing, INSERT, SELECT."""
    from cassandra import AlreadyExists

    cluster, session = cassandra_session(settings)
    try:
        for ddl in (
            f"CREATE KEYSPACE {SMOKE_KEYSPACE} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}",
            f"CREATE TABLE {SMOKE_KEYSPACE}.smoke (k text PRIMARY KEY, v text)",
        ):
            try:
                session.execute(ddl)
            except AlreadyExists:
                pass
        session.execute(SMOKE_INSERT, (token, token))
        row = session.execute(SMOKE_SELECT, (token,)).one()
        session.execute(SMOKE_DELETE, (token,))
    finally:
        cluster.shutdown()
    return str(row.v) if row else ""


CHECKS: dict[str, Callable[[Settings, str], str]] = {
    "kafka": kafka_roundtrip,
    "mongo": mongo_roundtrip,
    "redis": redis_roundtrip,
    "graph": graph_roundtrip,
    "cassandra": cassandra_roundtrip,
}


def roundtrip_all(settings: Settings) -> list[RoundTrip]:
    """Run every store's round-trip; a failure raises with the store's name."""
    results = []
    for store, check in CHECKS.items():
        token = f"smoke-{secrets.token_hex(6)}"
        started = time.perf_counter()
        try:
            read = check(settings, token)
        except Exception as err:
            msg = f"{store}: write/read failed: {type(err).__name__}: {err}"
            raise StackError(msg) from err
        elapsed = (time.perf_counter() - started) * 1000
        results.append(RoundTrip(store, token, read, elapsed))
    return results
