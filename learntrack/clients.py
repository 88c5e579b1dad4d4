"""Driver clients built from the settings tree: one place per store.

Runs wherever a store is spoken to: the CLI, the Spark driver, executors (sinks open
their clients inside the task, from picklable settings), the API process. Nothing
here connects at import time.
"""

from __future__ import annotations

from typing import Any

from learntrack.config import Settings


def mongo_client(settings: Settings, timeout_ms: int = 5000) -> Any:
    """A ``pymongo.MongoClient`` for the configured deployment."""
    from pymongo import MongoClient

    return MongoClient(
        settings.mongo.connection_uri(),
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        tz_aware=True,
    )


def redis_client(settings: Settings, timeout_s: float = 5.0) -> Any:
    """A ``redis.Redis`` client for the configured server."""
    import redis

    return redis.Redis.from_url(
        settings.redis.connection_url(),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


def graph_driver(settings: Settings, timeout_s: float = 5.0) -> Any:
    """A ``neo4j`` driver for the Bolt server; sessions must name the database."""
    from neo4j import GraphDatabase

    g = settings.graph
    auth = (g.username, g.password.get_secret_value()) if g.password else None
    return GraphDatabase.driver(
        g.bolt_uri,
        auth=auth,
        connection_timeout=timeout_s,
        # Neo4j warns on every query that names a property no node has yet (the
        # first batches of a new graph): "unrecognized", not a problem, and one log
        # line per query.
        notifications_disabled_classifications=["UNRECOGNIZED"],
    )


def cassandra_session(
    settings: Settings, keyspace: str | None = None, timeout: float = 10.0
) -> tuple[Any, Any]:
    """A connected ``(Cluster, Session)`` pair; call ``cluster.shutdown()`` after.

    Protocol version (v5 for Cassandra 5.0), consistency and the password
    (PasswordAuthenticator) come from the settings.
    """
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    c = settings.cassandra
    profile = ExecutionProfile(
        load_balancing_policy=RoundRobinPolicy(),
        consistency_level=getattr(ConsistencyLevel, c.consistency),
        request_timeout=timeout,
    )
    auth = None
    if c.username and c.password:
        auth = PlainTextAuthProvider(c.username, c.password.get_secret_value())
    cluster = Cluster(
        contact_points=c.contact_points,
        port=c.port,
        protocol_version=c.protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        # LearnTrack never reads driver-side metadata: skip fetching it on connect.
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise
    return cluster, session
