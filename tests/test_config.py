"""The settings tree: defaults, env overrides, .env, credentials file, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from learntrack.config import SECRET_MASK, Settings, get_settings, masked_dump
from learntrack.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LEARNTRACK_ variable set, an empty working directory."""
    import os

    for key in list(os.environ):
        if key.startswith("LEARNTRACK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_point_at_the_local_stack(clean_env: Path) -> None:
    s = get_settings()
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert (
        s.mongo.connection_uri() == "mongodb://127.0.0.1:27017/?directConnection=true"
    )
    assert s.redis.connection_url() == "redis://127.0.0.1:6379/0"
    assert s.graph.bolt_uri == "bolt://127.0.0.1:7687"
    assert s.cassandra.contact_points == ["127.0.0.1"]
    assert s.cassandra.protocol_version == 5  # noqa: PLR2004
    assert (s.graph.username, s.graph.database) == ("neo4j", "neo4j")
    assert s.stream.source == "jvm"
    assert s.spark.master == "local[*]"
    assert s.data_dir == (clean_env / ".learntrack").resolve()
    assert s.topics.activity == "learntrack.activity"
    assert s.topics.dlq == "learntrack.activity.dlq"
    assert s.topics.alerts == "learntrack.alerts"


def test_nested_env_overrides(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNTRACK_MONGO__PORT", "27999")
    monkeypatch.setenv("LEARNTRACK_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("LEARNTRACK_CASSANDRA__CONTACT_POINTS", '["c1", "c2"]')
    s = get_settings()
    assert s.mongo.port == 27999
    assert "127.0.0.1:27999" in s.mongo.connection_uri()
    assert s.kafka.bootstrap == "k1:9092,k2:9092"
    assert s.cassandra.contact_points == ["c1", "c2"]


def test_dotenv_file_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("LEARNTRACK_REDIS__PORT=6390\n")
    assert get_settings().redis.port == 6390


def test_credentials_file_is_read_below_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clean_env / "state"
    data.mkdir()
    (data / "credentials.env").write_text(
        "LEARNTRACK_REDIS__PASSWORD=from-file\nLEARNTRACK_MONGO__PASSWORD=p w/@\n"
    )
    monkeypatch.setenv("LEARNTRACK_DATA_DIR", str(data))
    s = get_settings()
    assert s.redis.password is not None
    assert s.redis.password.get_secret_value() == "from-file"
    # Special characters are URL-quoted in connection strings.
    assert "learntrack:p+w%2F%40@" in s.mongo.connection_uri()
    monkeypatch.setenv("LEARNTRACK_REDIS__PASSWORD", "from-env")
    assert get_settings().redis.connection_url() == "redis://:from-env@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LEARNTRACK_MONGO__PORT", "abc"),
        ("LEARNTRACK_REDIS__PORT", "70000"),
        ("LEARNTRACK_KAFKA__PARTITIONS", "0"),
        ("LEARNTRACK_CASSANDRA__KEYSPACE", "bad-name"),
        ("LEARNTRACK_CASSANDRA__CONSISTENCY", "TWO"),
    ],
)
def test_invalid_value_is_one_line_naming_the_env_var(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        get_settings()
    message = str(info.value)
    assert var in message
    assert "\n" not in message


def test_masked_dump_hides_every_secret(clean_env: Path) -> None:
    dumped = masked_dump(
        get_settings(
            redis={"password": "s3cret-redis"},
            graph={"password": "s3cret-graph"},
            mongo={"uri": "mongodb://u:s3cret-uri@h/"},
        )
    )
    text = repr(dumped)
    assert "s3cret" not in text
    assert dumped["redis"]["password"] == SECRET_MASK
    assert dumped["mongo"]["uri"] == SECRET_MASK


def test_half_life_shorter_than_a_day_is_refused(clean_env: Path) -> None:
    with pytest.raises(ConfigError, match="LEARNTRACK_SCORING__HALF_LIFE_S"):
        get_settings(scoring={"half_life_s": 3600})


def test_settings_are_picklable_for_spark_executors(clean_env: Path) -> None:
    s = get_settings(spark={"master": "local[1]"})
    clone = pickle.loads(pickle.dumps(s))
    assert isinstance(clone, Settings)
    assert clone.spark.master == "local[1]"
    assert clone == s


def test_mongo_cache_default_is_sized_from_memory(clean_env: Path) -> None:
    from learntrack.config import GIB, Settings, default_mongo_cache_gb

    assert default_mongo_cache_gb(24 * GIB) == 6.0  # noqa: PLR2004
    assert default_mongo_cache_gb(GIB // 2) == 0.25  # noqa: PLR2004 - the floor
    assert default_mongo_cache_gb(8 * GIB) == 2.0  # noqa: PLR2004
    assert default_mongo_cache_gb(256 * GIB) == 8.0  # noqa: PLR2004 - the cap
    assert Settings(stack={"mongo_cache_gb": 0.5}).stack.mongo_cache() == 0.5  # noqa: PLR2004
