"""The one settings tree of LearnTrack.

Every endpoint, port, credential, directory and topic name is defined once here.
Values come, highest priority first, from: keyword arguments, environment variables
(prefix ``LEARNTRACK_``, nesting with ``__``, e.g. ``LEARNTRACK_MONGO__PORT``), a
``.env`` file in the working directory, the credentials file that ``learntrack stack
up`` generates in the data directory (``<data_dir>/credentials.env``), then the
defaults, which point at the local stack on 127.0.0.1.

Build settings with :func:`get_settings` when you need them; nothing here runs at
import time. Settings objects are plain pydantic models: picklable, so Spark can
ship them to executors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from learntrack.errors import ConfigError

ENV_PREFIX = "LEARNTRACK_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_DATA_DIR = Path(".learntrack")
CREDENTIALS_FILE = "credentials.env"
LOCALHOST = "127.0.0.1"

Port = int


GIB = 1024**3


def physical_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_mongo_cache_gb(memory_bytes: int) -> float:
    """A quarter of ``memory_bytes``, between 0.25 and 8 GB, rounded to 0.25 GB.

    mongod's own default (half the memory) would starve the JVM servers and Spark
    beside it. Smaller caches cost the activity log its insert rate as it grows:
    with 5M activities stored (1.5 GB of documents, 0.9 GB of indexes) a 2.25 GB
    cache read 0.7 pages from disk per insert and took 13,700 inserts/s, a 6 GB
    cache 0.04 pages and 26,900/s (``learntrack bench --only queries``, the
    student_latest index is written at random places and must stay cached);
    0.25 GB (the first fixed value) made every insert evict beyond about a
    million events.
    """
    quarter = memory_bytes / GIB / 4
    return min(8.0, max(0.25, round(quarter * 4) / 4))


def _port(default: int, description: str) -> Any:
    """A local server's port (marked, so :func:`server_ports` finds it)."""
    return Field(
        default,
        ge=1,
        le=65535,
        description=description,
        json_schema_extra={"serverPort": True},
    )


class TopicSettings(BaseModel):
    """Kafka topic names."""

    activity: str = Field("learntrack.activity", min_length=1)
    dlq: str = Field("learntrack.activity.dlq", min_length=1)
    alerts: str = Field("learntrack.alerts", min_length=1)


class KafkaSettings(BaseModel):
    """The event log: a Kafka cluster, or the local Apache Kafka broker (KRaft)."""

    host: str = LOCALHOST
    port: Port = _port(9092, "Port of the local broker.")
    controller_port: Port = _port(9093, "KRaft controller port of the local broker.")
    bootstrap_servers: str | None = Field(
        None, description="Comma-separated host:port list; default host:port."
    )
    partitions: int = Field(6, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=60_000,
        description="Retention of the topics LearnTrack creates (always bounded, "
        "so a local disk never fills up).",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = (
        "PLAINTEXT"
    )
    sasl_mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients connect to."""
        return self.bootstrap_servers or f"{self.host}:{self.port}"

    def client_config(self) -> dict[str, Any]:
        """Base librdkafka configuration shared by producers, consumers and admins."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.username:
            conf["sasl.username"] = self.username
        if self.password:
            conf["sasl.password"] = self.password.get_secret_value()
        return conf

    def spark_options(self) -> dict[str, str]:
        """The same connection as options of Spark's Kafka connector (``kafka.*``).

        The Java client takes the SASL credentials as a JAAS line, not as
        username/password properties.
        """
        opts = {
            "kafka.bootstrap.servers": self.bootstrap,
            "kafka.security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["kafka.sasl.mechanism"] = self.sasl_mechanism
        if self.username and self.password:
            module = (
                "org.apache.kafka.common.security.scram.ScramLoginModule"
                if (self.sasl_mechanism or "").upper().startswith("SCRAM")
                else "org.apache.kafka.common.security.plain.PlainLoginModule"
            )
            secret = self.password.get_secret_value().replace('"', '\\"')
            opts["kafka.sasl.jaas.config"] = (
                f'{module} required username="{self.username}" password="{secret}";'
            )
        return opts


class MongoSettings(BaseModel):
    """MongoDB: raw activity log, student profiles, alerts."""

    host: str = LOCALHOST
    port: Port = _port(27017, "Port of the local mongod.")
    uri: SecretStr | None = Field(
        None, description="Full connection string; overrides host/port/credentials."
    )
    database: str = Field("learntrack", min_length=1)
    replica_set: str = "rs0"
    username: str = "learntrack"
    password: SecretStr | None = None
    auth_source: str = "admin"

    def connection_uri(self) -> str:
        """The URI a client connects with (credentials included when set)."""
        if self.uri is not None:
            return self.uri.get_secret_value()
        auth = ""
        query = "directConnection=true"
        if self.password is not None:
            user = quote_plus(self.username)
            pwd = quote_plus(self.password.get_secret_value())
            auth = f"{user}:{pwd}@"
            query += f"&authSource={self.auth_source}"
        return f"mongodb://{auth}{self.host}:{self.port}/?{query}"


class RedisSettings(BaseModel):
    """Redis: engagement scores, leaderboards, counters."""

    host: str = LOCALHOST
    port: Port = _port(6379, "Port of the local redis-server.")
    db: int = Field(0, ge=0, le=15)
    username: str | None = None
    password: SecretStr | None = None
    url: SecretStr | None = Field(None, description="Full redis:// URL; overrides.")

    def connection_url(self) -> str:
        """The URL a client connects with (password included when set)."""
        if self.url is not None:
            return self.url.get_secret_value()
        auth = ""
        if self.password is not None:
            user = quote_plus(self.username or "")
            auth = f"{user}:{quote_plus(self.password.get_secret_value())}@"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


class GraphSettings(BaseModel):
    """The region graph: Neo4j 5, spoken to over Bolt + Cypher."""

    host: str = LOCALHOST
    bolt_port: Port = _port(7687, "Bolt port of the graph server.")
    uri: str | None = Field(None, description="Bolt URI; default bolt://host:port.")
    database: str = Field(
        "neo4j",
        min_length=1,
        description="Database sessions use (Neo4j Community has one: 'neo4j').",
    )
    username: str = "neo4j"
    password: SecretStr | None = None

    @property
    def bolt_uri(self) -> str:
        """The Bolt URI the driver connects to."""
        return self.uri or f"bolt://{self.host}:{self.bolt_port}"


class CassandraSettings(BaseModel):
    """Cassandra: daily course engagement."""

    contact_points: list[str] = Field(default_factory=lambda: [LOCALHOST])
    port: Port = _port(9042, "CQL native transport port.")
    storage_port: Port = _port(7000, "Internode (gossip) port of the local Cassandra.")
    keyspace: str = Field("learntrack", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
    protocol_version: int = Field(
        5, ge=4, le=5, description="Native protocol: 5 for Cassandra 5.0, 4 for 4.x."
    )
    consistency: Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"] = (
        "LOCAL_ONE"
    )
    username: str | None = Field(
        "learntrack",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$",
        description="Role to log in as (the local stack creates it).",
    )
    password: SecretStr | None = None


class SparkSettings(BaseModel):
    """Where Spark jobs run and how the session is tuned."""

    master: str = Field("local[*]", description="local[N] or spark://host:port.")
    app_name: str = "learntrack"
    shuffle_partitions: int = Field(4, ge=1)
    ui_enabled: bool = False
    driver_memory: str = "1g"
    executor_memory: str = "1g"
    master_port: Port = _port(7077, "Port of the local standalone master.")
    master_webui_port: Port = _port(8080, "Web UI port of the local master.")
    worker_webui_port: Port = _port(8081, "Web UI port of the local worker.")
    worker_cores: int = Field(2, ge=1)
    worker_memory: str = "2g"
    checkpoint_dir: Path | None = Field(
        None, description="Streaming checkpoints; default <data_dir>/checkpoints."
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "More Spark configuration, applied last (e.g. "
            '{"spark.sql.streaming.noDataMicroBatches.enabled": "false"}).'
        ),
    )

    @property
    def cluster_master_url(self) -> str:
        """The master URL of the local standalone cluster."""
        return f"spark://{LOCALHOST}:{self.master_port}"


class EventSettings(BaseModel):
    """What counts as a valid activity event."""

    regions: list[str] = Field(
        default_factory=lambda: ["EU", "US", "AF", "ASIA", "SA", "OC"], min_length=1
    )
    max_future_s: float = Field(
        86_400.0, ge=0, description="Tolerance for event times ahead of our clock."
    )
    max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Larger raw records go to the dead-letter topic.",
    )


class ProducerSettings(BaseModel):
    """The producer SDK's delivery behaviour."""

    linger_ms: int = Field(20, ge=0, le=10_000)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    delivery_timeout_ms: int = Field(
        30_000, ge=1_000, description="After this a message is reported as failed."
    )
    queue_max_messages: int = Field(200_000, ge=1_000)
    queue_full_timeout_s: float = Field(
        5.0, ge=0, description="How long send() waits for room before raising."
    )


class ScoringSettings(BaseModel):
    """Engagement score: weight per action, exponential decay by event time.

    ``other`` weighs every event of the generic action (an xAPI verb LearnTrack
    has no action for, e.g. ``interacted`` or ``downloaded``); an action missing
    from ``weights`` weighs 0.
    """

    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "page_view": 1.0,
            "quiz_attempt": 5.0,
            "video_play": 2.0,
            "video_complete": 3.0,
            "assignment_submit": 8.0,
            "forum_post": 3.0,
            "login": 0.5,
            "logout": 0.0,
            "other": 1.0,
        }
    )
    half_life_s: float = Field(
        7 * 86_400.0,
        ge=86_400.0,
        description="Decay half-life (>= 1 day: scores are anchored at 2026-01-01 and "
        "2 ** (age / half-life) must stay finite; 7 days lasts ~19 years).",
    )


class StreamSettings(BaseModel):
    """The streaming job."""

    source: Literal["jvm", "python"] = Field(
        "jvm",
        description="jvm: Spark's own Kafka connector (spark-sql-kafka, the default); "
        "python: LearnTrack's Python data source, the fallback for a Spark that "
        "cannot be given the connector's jars.",
    )
    trigger: str = "500ms"
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_offsets_per_trigger: int | None = Field(200_000, ge=1)
    fail_on_data_loss: bool = True
    fetch_max_wait_ms: int = Field(
        20,
        ge=0,
        description="The JVM Kafka source's fetch.max.wait.ms. A consumer reused "
        "by the next batch waits for its previous fetch at the log's end to come "
        "back before it can seek; Kafka's default (500 ms) cost up to 0.5 s per "
        "partition per batch.",
    )
    tasks: int = Field(
        0,
        ge=0,
        description="Tasks per micro-batch: the Kafka partitions' ranges are "
        "coalesced into this many (whole partitions each, no shuffle); 0 = Spark's "
        "default parallelism (its cores). Each task has a fixed cost, so more "
        "tasks than cores only slow a batch down.",
    )
    retry_max_s: float = Field(
        600.0, ge=0, description="How long a batch retries a store that is down."
    )


class DetectSettings(BaseModel):
    """Multi-region ("impossible travel") detection in the stream."""

    enabled: bool = Field(True, description="Detect inside the stream's batches.")
    window_s: float = Field(
        1800.0, gt=0, description="Two regions within this many seconds: an alert."
    )
    lateness_s: float = Field(
        3600.0,
        ge=0,
        description=(
            "Events up to this far behind the newest event time are still compared "
            "(alerts never wait for it; it only sizes the state)."
        ),
    )
    concurrent_gap_s: float = Field(
        300.0,
        ge=0,
        description="Sessions in two regions this close: concurrent_sessions.",
    )


class ApiSettings(BaseModel):
    """The query service (``learntrack api``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    read_key: SecretStr | None = Field(
        None, description="API key for reads (X-API-Key); generated by stack up."
    )
    write_key: SecretStr | None = Field(
        None, description="API key for reads and writes; generated by stack up."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_events_per_request: int = Field(10_000, ge=1)


class XapiSettings(BaseModel):
    """The Learning Record Store under ``/xAPI/`` (part of ``learntrack api``)."""

    default_region: str = Field(
        "EU", description="Region of statements without a region extension."
    )
    max_query_limit: int = Field(
        500, ge=1, description="Statements per page of GET /xAPI/statements."
    )


class MetricsSettings(BaseModel):
    """Per-batch pipeline metrics: kept in Redis, pushed to Grafana Live if set.

    The stream's driver records every micro-batch (rows, rate, lag, sink times) in
    Redis, where the query service reads them (``/pipeline/metrics``, ``/metrics``
    for Prometheus). With ``grafana_url`` set, each batch is also pushed to Grafana
    Live's HTTP push endpoint, authenticated by ``grafana_token`` (a service account
    token) or else ``grafana_user``/``grafana_password``. Pushing is best effort.
    """

    grafana_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Grafana to push live batch metrics to; unset: no push.",
    )
    grafana_token: SecretStr | None = Field(
        None, description="Grafana service account token (Bearer), preferred."
    )
    grafana_user: str = "admin"
    grafana_password: SecretStr | None = Field(
        None, description="Basic auth password when no token is set."
    )
    push_timeout_s: float = Field(
        1.0, gt=0, le=30, description="A push waiting longer than this is dropped."
    )
    history: int = Field(
        720, ge=10, le=100_000, description="Batches kept in Redis for the charts."
    )


class StackSettings(BaseModel):
    """The local servers started by ``learntrack stack`` (no Docker)."""

    start_timeout_s: float = Field(120.0, gt=0)
    stop_timeout_s: float = Field(60.0, gt=0)
    mongo_cache_gb: float | None = Field(
        None,
        gt=0,
        description="mongod's WiredTiger cache; default a tenth of the machine's "
        "memory, between 0.25 and 4 GB (the activity log's indexes should fit).",
    )
    kafka_heap: str = "512m"
    graph_heap: str = "512m"
    graph_pagecache: str = "128m"
    cassandra_heap: str = "512m"
    jars_dir: Path = Field(
        Path(".jars"),
        validate_default=True,
        description="Where `learntrack stack fetch` (mvn) copies the JVM servers' "
        "jars and Spark's Kafka connector (git-ignored; shared by every data dir).",
    )

    def mongo_cache(self) -> float:
        """The WiredTiger cache in GB: the setting, else sized from memory."""
        if self.mongo_cache_gb is not None:
            return self.mongo_cache_gb
        return default_mongo_cache_gb(physical_memory())

    @field_validator("jars_dir")
    @classmethod
    def _absolute_jars_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class Settings(BaseSettings):
    """The whole settings tree. Build it with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Where the local stack keeps all its state (git-ignored).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    cassandra: CassandraSettings = Field(default_factory=CassandraSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    xapi: XapiSettings = Field(default_factory=XapiSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Servers run with their own working directory: paths must not be relative.
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add the generated credentials file below the environment and ``.env``."""
        credentials = DotEnvSettingsSource(
            settings_cls, env_file=credentials_path(_resolve_data_dir())
        )
        return (init_settings, env_settings, dotenv_settings, credentials)

    def event_context(self) -> dict[str, Any]:
        """The validation context of :class:`learntrack.events.ActivityEvent`."""
        import datetime as dt

        from learntrack.events import validation_context

        return validation_context(
            self.events.regions, dt.timedelta(seconds=self.events.max_future_s)
        )

    @property
    def checkpoint_dir(self) -> Path:
        """Root of the streaming checkpoints."""
        return self.spark.checkpoint_dir or self.data_dir / "checkpoints"


def _resolve_data_dir() -> Path:
    """Find the data directory before the settings are built (env, then .env)."""
    key = f"{ENV_PREFIX}DATA_DIR"
    value = os.environ.get(key)
    if value is None and Path(".env").is_file():
        value = dotenv_values(".env").get(key)
    return Path(value) if value else DEFAULT_DATA_DIR


def credentials_path(data_dir: Path) -> Path:
    """Where ``stack up`` writes the generated credentials for ``data_dir``."""
    return data_dir / CREDENTIALS_FILE


def env_var_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable behind a settings field location."""
    parts = [str(p).upper() for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


def get_settings(**overrides: Any) -> Settings:
    """Build the effective settings, or raise :class:`ConfigError` in one line.

    Runs wherever settings are needed (CLI, driver, tests); the result is picklable
    and is what Spark ships to executors.
    """
    try:
        return Settings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        name = env_var_name(first["loc"])
        raw = first.get("input")
        shown = f" (got {raw!r})" if isinstance(raw, str | int | float) else ""
        message = f"invalid setting {name}: {first['msg']}{shown}"
        more = len(err.errors()) - 1
        if more:
            message += f" (and {more} more)"
        raise ConfigError(message) from err


SECRET_MASK = "********"  # noqa: S105 - the mask, not a password


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with every secret masked."""

    def mask(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return SECRET_MASK
        if isinstance(value, BaseModel):
            return {k: mask(getattr(value, k)) for k in type(value).model_fields}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    dumped: dict[str, Any] = mask(settings)
    return dumped


def server_ports() -> dict[str, int]:
    """Every local server's port setting and its default, keyed as in the environment.

    ``{"KAFKA__PORT": 9092, "MONGO__PORT": 27017, ...}``: the table a stack on shifted
    ports (the test stack, the bench stack) adds its offset to.
    """
    out: dict[str, int] = {}
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, sub in model.model_fields.items():
            extra = sub.json_schema_extra
            if isinstance(extra, dict) and extra.get("serverPort"):
                out[f"{section.upper()}__{name.upper()}"] = int(sub.default)
    return out
