"""The local stack on real servers: round-trips, status, auth, errors, restarts."""

from __future__ import annotations

import hashlib
import socket
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError
from pydantic import SecretStr

from learntrack.config import Settings, get_settings
from learntrack.errors import PortInUseError, ServerStartError
from learntrack.stack.credentials import MONGO_KEYFILE, ensure_credentials
from learntrack.stack.manager import Stack
from learntrack.stack.process import port_listening
from learntrack.stack.smoke import CHECKS, roundtrip_all

pytestmark = pytest.mark.stack


def test_every_store_answers_a_write_and_a_read(settings: Settings) -> None:
    results = roundtrip_all(settings)
    assert [r.store for r in results] == list(CHECKS)
    for r in results:
        assert r.read == r.wrote, f"{r.store} returned {r.read!r}"


def test_status_reports_version_pid_memory_and_health(stack: Stack) -> None:
    rows = {r.name: r for r in stack.status()}
    assert set(rows) >= {"kafka", "mongo", "redis", "graph", "cassandra"}
    expected = {
        "kafka": "Apache Kafka 4.1.1",
        "mongo": "MongoDB 6.0.5",
        "redis": "Redis 7.",
        "graph": "Neo4j/5.26.6",
        "cassandra": "Cassandra 5.0.6",
    }
    for name, version in expected.items():
        row = rows[name]
        assert row.healthy, f"{name}: {row.detail}"
        assert version in row.version
        assert row.pid is not None and row.pid > 1
        assert row.rss_bytes is not None and row.rss_bytes > 1_000_000
        assert "127.0.0.1" in row.address


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if len(addr_hex) == 8:
                addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
            else:
                raw = bytes.fromhex(addr_hex)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(socket.AF_INET6, words)
            found.add((addr, int(port_hex, 16)))
    return found


def test_every_server_listens_on_loopback_only(stack: Stack) -> None:
    checked = 0
    for row in stack.status():
        if row.pid is None:
            continue
        addresses = _listening_addresses(row.pid)
        assert addresses, f"{row.name} listens on nothing?"
        for addr, port in addresses:
            assert addr in ("127.0.0.1", "::ffff:127.0.0.1"), (row.name, addr, port)
        checked += 1
    assert checked >= 5


def test_unauthenticated_clients_are_refused(settings: Settings) -> None:
    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{settings.mongo.port}/?directConnection=true",
        serverSelectionTimeoutMS=3000,
    )
    with pytest.raises(
        pymongo.errors.OperationFailure, match="requires authentication"
    ):
        mongo[settings.mongo.database]["x"].insert_one({"a": 1})
    mongo.close()

    anonymous = redis.Redis(port=settings.redis.port, socket_timeout=3)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.set("x", 1)
    wrong = redis.Redis(port=settings.redis.port, password="wrong-password")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()

    with (
        GraphDatabase.driver(
            settings.graph.bolt_uri, auth=(settings.graph.username, "wrong-password")
        ) as driver,
        pytest.raises(AuthError),
    ):
        driver.verify_connectivity()
    with (
        GraphDatabase.driver(
            settings.graph.bolt_uri, auth=("neo4j", "neo4j")
        ) as driver,
        pytest.raises(AuthError),
    ):
        driver.verify_connectivity()  # the default password was never accepted

    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    from learntrack.clients import cassandra_session

    for username, password in [
        (settings.cassandra.username, "wrong-password"),
        ("cassandra", "cassandra"),  # the built-in superuser is locked
    ]:
        as_user = settings.model_copy(
            update={
                "cassandra": settings.cassandra.model_copy(
                    update={"username": username, "password": SecretStr(password)}
                )
            }
        )
        with pytest.raises(NoHostAvailable) as refused:
            cassandra_session(as_user, timeout=5)
        errors = list(refused.value.errors.values())
        assert errors and all(isinstance(e, AuthenticationFailed) for e in errors)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_port_in_use_is_an_error_naming_port_and_setting(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        settings = get_settings(data_dir=tmp_path, kafka={"port": port})
        with pytest.raises(PortInUseError) as info:
            Stack(settings).up(only=["kafka"], report=lambda _m: None)
    message = str(info.value)
    assert f"port {port}" in message
    assert "LEARNTRACK_KAFKA__PORT" in message


def test_kafka_storage_formats_with_a_cluster_id_that_starts_with_a_dash(
    tmp_path: Path,
) -> None:
    """base64url ids start with "-" once in 64: the format took it for an option."""
    from learntrack.stack.servers import KafkaBroker

    settings = get_settings(data_dir=tmp_path)
    broker = KafkaBroker(settings)
    broker.dir.mkdir(parents=True)
    (broker.dir / "cluster.id").write_text("-xjVwrPMQJC_lA2UBgIrFg\n")
    broker.prepare()
    meta = (broker.dir / "data" / "meta.properties").read_text()
    assert "cluster.id=-xjVwrPMQJC_lA2UBgIrFg" in meta


def test_server_that_fails_to_start_shows_its_log_tail(tmp_path: Path) -> None:
    ensure_credentials(tmp_path)
    (tmp_path / MONGO_KEYFILE).write_text("x\n")  # mongod refuses a 1-byte key
    settings = get_settings(data_dir=tmp_path, mongo={"port": _free_port()})
    stack = Stack(settings)
    with pytest.raises(ServerStartError) as info:
        stack.up(only=["mongo"], report=lambda _m: None)
    message = str(info.value)
    assert "mongo exited during start" in message
    assert "mongo.log" in message
    assert "security key" in message.lower() or "keyfile" in message.lower()
    assert stack.down(report=lambda _m: None) == []  # nothing left running


def _gone(pid: int) -> bool:
    """No such process, or only a zombie left for its parent to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    return state == "Z" and len(threads) <= 1


def _write_markers(settings: Settings, token: str) -> None:
    from confluent_kafka import Producer

    from learntrack.clients import (
        cassandra_session,
        graph_driver,
        mongo_client,
        redis_client,
    )
    from learntrack.stack.smoke import SMOKE_INSERT, SMOKE_TOPIC, cassandra_roundtrip

    cassandra_roundtrip(settings, "warm-up")  # creates the keyspace/table
    producer = Producer({**settings.kafka.client_config(), "acks": "all"})
    producer.produce(SMOKE_TOPIC, key=token, value=token)
    assert producer.flush(10) == 0
    with mongo_client(settings) as client:
        client[settings.mongo.database]["persist"].insert_one({"_id": token})
    rclient = redis_client(settings)
    rclient.set(f"persist:{token}", token)
    rclient.close()
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        session.run("CREATE (:Persist {token: $t})", t=token).consume()
    cluster, session = cassandra_session(settings)
    session.execute(SMOKE_INSERT, (token, token))
    cluster.shutdown()


def _read_markers(settings: Settings, token: str) -> dict[str, bool]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from learntrack.clients import (
        cassandra_session,
        graph_driver,
        mongo_client,
        redis_client,
    )
    from learntrack.stack.smoke import SMOKE_SELECT, SMOKE_TOPIC

    found: dict[str, bool] = {}
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"persist-{token}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    # From the first offset retention kept (offset 0 may be gone: 10-minute topic).
    consumer.assign([TopicPartition(SMOKE_TOPIC, 0, OFFSET_BEGINNING)])
    found["kafka"] = False
    while True:
        msg = consumer.poll(10)
        if msg is None:
            break
        if msg.error():
            break  # end of partition
        if msg.value() == token.encode():
            found["kafka"] = True
    consumer.close()
    with mongo_client(settings) as client:
        found["mongo"] = (
            client[settings.mongo.database]["persist"].find_one({"_id": token})
            is not None
        )
    rclient = redis_client(settings)
    found["redis"] = rclient.get(f"persist:{token}") == token.encode()
    rclient.close()
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        found["graph"] = (
            session.run("MATCH (p:Persist {token: $t}) RETURN p", t=token).single()
            is not None
        )
    cluster, session = cassandra_session(settings)
    row = session.execute(SMOKE_SELECT, (token,)).one()
    found["cassandra"] = row is not None and row.v == token
    cluster.shutdown()
    return found


@pytest.mark.slow
def test_down_stops_everything_and_up_finds_the_data_again(
    stack: Stack, settings: Settings
) -> None:
    token = f"persist-{uuid.uuid4().hex[:8]}"
    _write_markers(settings, token)
    before = {r.name: r for r in stack.status() if r.pid is not None}
    ports = [p for s in stack._servers_running() for p in s.ports()]  # noqa: SLF001
    try:
        stopped = stack.down(report=lambda _m: None)
        assert set(stopped) == set(before)
        for row in before.values():
            assert row.pid is not None and _gone(row.pid), f"{row.name} still running"
        for port in ports:
            assert not port_listening(port), f"port {port} still open after down"
    finally:
        stack.up(report=lambda _m: None)  # the rest of the run needs the stack
    assert _read_markers(get_settings(), token) == {
        "kafka": True,
        "mongo": True,
        "redis": True,
        "graph": True,
        "cassandra": True,
    }


def test_jvm_parts_are_fetched_again_only_when_missing_or_changed(
    tmp_path: Path,
) -> None:
    from learntrack.errors import StackError
    from learntrack.stack import jars

    settings = get_settings(stack={"jars_dir": tmp_path})
    assert not jars.resolved(settings, "kafka")
    with pytest.raises(StackError, match="learntrack stack fetch"):
        jars.classpath(settings, "kafka")
    part = jars.part_dir(settings, "kafka")
    part.mkdir()
    (part / "a.jar").write_bytes(b"")
    (part / "b.jar").write_bytes(b"")
    (part / jars.STAMP).write_text("the hash of another pom\n")
    assert not jars.resolved(settings, "kafka")  # the pom changed: fetch again
    digest = hashlib.sha256(jars.pom("kafka").read_bytes()).hexdigest()
    (part / jars.STAMP).write_text(digest + "\n")
    assert jars.resolved(settings, "kafka")
    assert jars.classpath(settings, "kafka") == f"{part / 'a.jar'}:{part / 'b.jar'}"
    assert jars.fetch(settings, ["kafka"], report=lambda _m: None) == {}  # no mvn run
    with pytest.raises(StackError, match="unknown JVM part 'kafak'"):
        jars.pom("kafak")
