"""The Python Kafka source for Spark, on the real broker and a real SparkSession."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from learntrack.config import Settings
from learntrack.streaming.kafka_source import SOURCE_NAME, KafkaDataSource, _cap
from learntrack.topics import create_topic

pytestmark = [pytest.mark.stack, pytest.mark.spark]


def test_cap_prorates_the_budget_by_backlog_and_never_passes_the_end() -> None:
    begin = {"0": 0, "1": 10, "2": 5, "3": 0}
    end = {"0": 100, "1": 60, "2": 5, "3": 3}
    capped = _cap(begin, end, 51)
    assert sum(capped[p] - begin[p] for p in begin) == 51
    assert all(begin[p] <= capped[p] <= end[p] for p in begin)
    # 153 waiting, 51 allowed: each partition moves a third of its backlog.
    assert capped == {"0": 33, "1": 27, "2": 5, "3": 1}
    assert _cap(begin, end, 1000) == end
    # Fewer rows than partitions: every partition with a backlog still moves (the
    # cap is passed by a row) so none falls behind in event time.
    tiny = _cap(begin, end, 2)
    assert tiny == {"0": 1, "1": 11, "2": 5, "3": 1}
    lopsided = _cap({"0": 0, "1": 0}, {"0": 10**12, "1": 3}, 1000)
    assert lopsided == {"0": 999, "1": 1}


def produce(
    settings: Settings, topic: str, n: int, partition: int | None = None
) -> None:
    producer = Producer(settings.kafka.client_config())
    for i in range(n):
        kwargs: dict[str, Any] = {"key": f"k{i % 17}", "value": f"v{i}"}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
    assert producer.flush(30) == 0


def run_available_now(
    spark: Any, settings: Settings, topic: str, checkpoint: Path, max_rows: int | None
) -> list[list[tuple[int, int, bytes]]]:
    spark.dataSource.register(KafkaDataSource)
    reader = (
        spark.readStream.format(SOURCE_NAME)
        .option("subscribe", topic)
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap)
    )
    if max_rows:
        reader = reader.option("maxOffsetsPerTrigger", max_rows)
    batches: list[list[tuple[int, int, bytes]]] = []

    def collect(df: Any, _batch_id: int) -> None:
        batches.append([(r.partition, r.offset, bytes(r.value)) for r in df.collect()])

    query = (
        reader.load()
        .writeStream.foreachBatch(collect)
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(300)
    assert query.exception() is None
    return batches


def test_reads_exactly_every_message_once_in_capped_batches(
    spark: Any, settings: Settings, prefix: str, tmp_path: Path
) -> None:
    topic = f"{prefix}.src"
    create_topic(settings, topic, 4)
    produce(settings, topic, 2000)
    batches = run_available_now(spark, settings, topic, tmp_path / "ck", 600)
    assert len(batches) >= 4  # 2000 rows at <= 600 per trigger
    assert all(len(b) <= 600 for b in batches)
    rows = [r for b in batches for r in b]
    assert len(rows) == 2000
    assert len({(p, o) for p, o, _ in rows}) == 2000
    assert sorted(int(v[1:]) for _, _, v in rows) == list(range(2000))
    # Restarting on the same checkpoint reads nothing again.
    assert (
        sum(map(len, run_available_now(spark, settings, topic, tmp_path / "ck", 600)))
        == 0
    )
    produce(settings, topic, 10)
    again = run_available_now(spark, settings, topic, tmp_path / "ck", 600)
    assert sorted(v for b in again for _, _, v in b) == sorted(
        f"v{i}".encode() for i in range(10)
    )


def test_new_partitions_are_picked_up(
    spark: Any, settings: Settings, prefix: str, tmp_path: Path
) -> None:
    topic = f"{prefix}.grow"
    create_topic(settings, topic, 2)
    produce(settings, topic, 50)
    first = run_available_now(spark, settings, topic, tmp_path / "ck", None)
    assert sum(map(len, first)) == 50
    admin = AdminClient(settings.kafka.client_config())
    for fut in admin.create_partitions([NewPartitions(topic, 4)]).values():
        fut.result(15)
    produce(settings, topic, 30, partition=3)
    produce(settings, topic, 5, partition=0)
    second = [
        r
        for b in run_available_now(spark, settings, topic, tmp_path / "ck", None)
        for r in b
    ]
    assert len(second) == 35
    assert {p for p, _, _ in second} == {0, 3}


def test_missing_topic_is_a_clear_error(
    spark: Any, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match=r"does not exist.*learntrack topics create"):
        run_available_now(spark, settings, "no.such.topic.here", tmp_path / "ck", None)


def test_the_default_source_is_sparks_own_kafka_connector(
    spark: Any, settings: Settings, prefix: str
) -> None:
    from learntrack.spark import spark_conf
    from learntrack.streaming.job import StreamJob
    from learntrack.topics import delete_topics

    assert settings.stream.source == "jvm"
    jars = spark_conf(settings)["spark.jars"].split(",")
    assert any("spark-sql-kafka-0-10_2.13-4.2.0.jar" in j for j in jars)
    topic = f"{prefix}.jvm"
    create_topic(settings, topic, 2)
    producer = Producer(settings.kafka.client_config())
    for i in range(10):
        producer.produce(topic, key=f"S{i % 3}", value=f"v{i}".encode())
    assert producer.flush(30) == 0
    try:
        mine = settings.model_copy(
            update={"topics": settings.topics.model_copy(update={"activity": topic})}
        )
        stream = StreamJob(mine, report=lambda _l: None).source(spark)
        assert stream.isStreaming
        assert "kafka" in stream._jdf.queryExecution().toString().lower()  # noqa: SLF001
        # The same options read the topic as a batch: the connector really runs.
        batch = spark.read.format("kafka")
        for key, value in settings.kafka.spark_options().items():
            batch = batch.option(key, value)
        rows = batch.option("subscribe", topic).load().collect()
        assert sorted(r.value for r in rows) == sorted(
            f"v{i}".encode() for i in range(10)
        )
    finally:
        delete_topics(settings, [topic])


def test_spark_options_carry_sasl_as_a_jaas_line() -> None:
    from learntrack.config import KafkaSettings

    plain = KafkaSettings(
        bootstrap_servers="b:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        username="lt",
        password='p"w',
    ).spark_options()
    assert plain["kafka.bootstrap.servers"] == "b:9092"
    assert plain["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert plain["kafka.sasl.mechanism"] == "PLAIN"
    assert plain["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="lt" password="p\\"w";'
    )
    scram = KafkaSettings(
        sasl_mechanism="SCRAM-SHA-512",
        username="lt",
        password="x",
    ).spark_options()
    assert "ScramLoginModule" in scram["kafka.sasl.jaas.config"]
    assert "kafka.sasl.jaas.config" not in KafkaSettings().spark_options()


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("_TRANSPORT", True),
        ("_DESTROY_BROKER", True),  # the broker stopped under a watermark request
        ("_ALL_BROKERS_DOWN", True),
        ("UNKNOWN_TOPIC_OR_PART", False),
        ("TOPIC_AUTHORIZATION_FAILED", False),
    ],
)
def test_broker_errors_that_pass_are_waited_out_and_others_raise(
    code: str, transient: bool
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    from learntrack.streaming.kafka_source import _transient

    error = KafkaException(KafkaError(getattr(KafkaError, code)))
    assert _transient(error) is transient
    assert _transient(ValueError("not a client error")) is False
