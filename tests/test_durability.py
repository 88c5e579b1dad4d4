"""Durability of the local servers: what a server acknowledged survives ``kill -9``.

Each test writes N records that the server acknowledges (Kafka ``acks=all``,
MongoDB ``w: majority``, Cassandra's acknowledged writes, Neo4j's committed
transactions), kills the server's own process with SIGKILL (no chance to flush),
starts it again through the stack, and reads back: every acknowledged record is
there, exactly once. The servers are the test stack's own; each test restores it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from learntrack.config import Settings
from learntrack.stack.manager import Stack
from learntrack.stack.process import PidRecord

pytestmark = [pytest.mark.stack, pytest.mark.slow]

N = 20_000


def kill_9_and_restart(stack: Stack, name: str) -> None:
    """SIGKILL the server's own process, wait for it to go, start it again."""
    server = stack.server(name)
    record = Stack.running(server)
    assert record is not None, f"{name} is not running"
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while record.alive():
        assert time.monotonic() < deadline, f"{name} survived SIGKILL"
        time.sleep(0.05)
    with_pid = PidRecord.load(server.pid_path)
    assert with_pid == record  # the stack still points at the dead process
    stack.up(only=[name], report=lambda _m: None)
    restarted = Stack.running(server)
    assert restarted is not None
    assert restarted.pid != record.pid


@pytest.fixture
def restore(stack: Stack) -> Iterator[None]:
    """Afterwards every server runs again, whatever the test did."""
    yield
    if not stack.all_running():
        stack.up(report=lambda _m: None)


def test_kafka_keeps_every_acknowledged_record_after_kill_9(
    stack: Stack, settings: Settings, prefix: str, restore: None
) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"{prefix}.durable"
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    acked: list[bytes] = []
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(str(err))

    producer = Producer(
        {
            **settings.kafka.client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    for i in range(N):
        producer.produce(
            topic, key=str(i % 97), value=f"r{i}".encode(), on_delivery=delivered
        )
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not failed, failed[:3]
    assert len(acked) == N

    kill_9_and_restart(stack, "kafka")

    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"{prefix}-check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen: list[bytes] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    while len(at_end) < 3 and time.monotonic() < deadline:  # noqa: PLR2004
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                at_end.add(int(msg.partition() or 0))
                continue
            pytest.fail(str(error))
        seen.append(bytes(msg.value() or b""))
    consumer.close()
    admin.delete_topics([topic])
    assert len(at_end) == 3, "did not reach the end of every partition"  # noqa: PLR2004
    assert len(seen) == N  # exactly once: nothing lost, nothing twice
    assert set(seen) == set(acked)


def test_mongodb_keeps_every_majority_write_after_kill_9(
    stack: Stack, settings: Settings, prefix: str, restore: None
) -> None:
    from pymongo import WriteConcern

    from learntrack.clients import mongo_client

    ids = [uuid.uuid4().hex for _ in range(N)]
    with mongo_client(settings) as client:
        coll = client[prefix].get_collection(
            "durable", write_concern=WriteConcern(w="majority")
        )
        acknowledged = 0
        for start in range(0, N, 1000):
            result = coll.insert_many([{"_id": i} for i in ids[start : start + 1000]])
            acknowledged += len(result.inserted_ids)
        assert acknowledged == N

    kill_9_and_restart(stack, "mongo")

    with mongo_client(settings, timeout_ms=30_000) as client:
        coll = client[prefix]["durable"]
        found = [d["_id"] for d in coll.find({}, {"_id": 1})]
        client.drop_database(prefix)
    assert len(found) == N
    assert set(found) == set(ids)


def test_cassandra_keeps_every_acknowledged_row_after_kill_9(
    stack: Stack, settings: Settings, prefix: str, restore: None
) -> None:
    from cassandra.concurrent import execute_concurrent_with_args

    from learntrack.clients import cassandra_session

    keyspace = f"{prefix}_durable"
    cluster, session = cassandra_session(settings)
    try:
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(
            f"CREATE TABLE {keyspace}.rows (part int, id int, v text, "
            "PRIMARY KEY (part, id))"
        )
        insert = session.prepare(
            f"INSERT INTO {keyspace}.rows (part, id, v) VALUES (?, ?, ?)"  # noqa: S608
        )
        results = execute_concurrent_with_args(
            session, insert, [(i % 50, i, f"v{i}") for i in range(N)], concurrency=64
        )
        assert all(ok for ok, _r in results)  # every row acknowledged
    finally:
        cluster.shutdown()

    kill_9_and_restart(stack, "cassandra")

    cluster, session = cassandra_session(settings, timeout=30)
    try:
        found = [
            row.id
            for part in range(50)
            for row in session.execute(
                f"SELECT id FROM {keyspace}.rows WHERE part = %s",  # noqa: S608
                (part,),
            )
        ]
        session.execute(f"DROP KEYSPACE {keyspace}")
    finally:
        cluster.shutdown()
    assert len(found) == N
    assert set(found) == set(range(N))


def test_neo4j_keeps_every_committed_node_after_kill_9(
    stack: Stack, settings: Settings, prefix: str, restore: None
) -> None:
    from learntrack.clients import graph_driver

    label = f"Durable_{prefix}"
    with graph_driver(settings) as driver:
        for start in range(0, N, 2000):
            driver.execute_query(
                f"UNWIND range($a, $b) AS i CREATE (:{label} {{i: i}})",
                a=start,
                b=start + 1999,
                database_=settings.graph.database,
            )

    kill_9_and_restart(stack, "graph")

    with graph_driver(settings, timeout_s=30) as driver:
        records, _summary, _keys = driver.execute_query(
            f"MATCH (n:{label}) RETURN count(n) AS n, count(DISTINCT n.i) AS d",
            database_=settings.graph.database,
        )
        driver.execute_query(
            f"MATCH (n:{label}) DETACH DELETE n",
            database_=settings.graph.database,
        )
    assert (records[0]["n"], records[0]["d"]) == (N, N)
