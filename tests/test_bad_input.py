"""Bad input: every malformed record goes to the DLQ with a reason, none to a store.

- the executor's parser over hostile bytes: one output row per record, never an
  exception (pure, no stream);
- records too large for the broker are refused loudly when they are produced;
- >= 10,000 malformed raw records straight to the topic, among 10,000 valid ones:
  each in the DLQ with its bytes and the expected reason, in no store, and the job
  never stops; every store then equals the generator's truth
  (:func:`tests.helpers.assert_matches_truth`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from learntrack.config import Settings
from learntrack.producers import ActivityProducer, DeliveryError
from learntrack.producers.generator import Dataset, build_truth, delivery_stream
from learntrack.stack.manager import Stack
from learntrack.streaming.job import StreamJob
from learntrack.topics import read_topic
from tests.helpers import assert_matches_truth, dataset, isolated, publish_records

pytestmark = [
    pytest.mark.stack,
    pytest.mark.spark,
    pytest.mark.usefixtures("restore_stack"),
]

log = logging.getLogger(__name__)


def hostile_records(data: Dataset) -> list[tuple[str, bytes | None, bytes | None]]:
    """Malformed records beyond the generator's 12 kinds: (kind, key, value)."""
    ts, eid, sid, cid, action, region, session, device, *_ = data.events[0]
    base = {
        "eventId": eid,
        "studentId": sid,
        "courseId": cid,
        "action": action,
        "timestamp": "2026-11-20T10:00:00Z",
        "region": region,
    }
    good = orjson.dumps(base)
    k = sid.encode()

    def raw(**fields: bytes) -> bytes:
        text = orjson.dumps({f: v for f, v in base.items() if f not in fields})[:-1]
        return (
            text
            + b"".join(b',"%s":%s' % (f.encode(), v) for f, v in fields.items())
            + b"}"
        )

    cypher = "S1'}) MATCH (n) DETACH DELETE n //"
    out: list[tuple[str, bytes | None, bytes | None]] = [
        ("tombstone", k, None),
        ("empty", k, b""),
        ("whitespace", k, b"  \n "),
        ("json_null", k, b"null"),
        ("json_list", k, b"[" + good + b"]"),
        ("json_number", k, b"42"),
        ("json_string", k, orjson.dumps(good.decode())),
        ("utf8_bom", k, b"\xef\xbb\xbf" + good),
        ("deep_nesting", k, b"[" * 20_000 + b"]" * 20_000),
        ("nan_score", k, raw(score=b"NaN")),
        ("infinite_duration", k, raw(durationMs=b"1e999")),
        ("huge_duration", k, raw(durationMs=b"1" + b"0" * 40)),
        ("fractional_duration", k, raw(durationMs=b"1.5")),
        ("action_list", k, raw(action=b'["page_view"]')),
        ("region_operator", k, raw(region=b'{"$ne": null}')),
        ("course_operator", k, raw(courseId=b'{"$gt": ""}')),
        ("course_cypher", k, orjson.dumps({**base, "courseId": cypher})),
        ("session_cypher", k, orjson.dumps({**base, "sessionId": "x` RETURN 1 //"})),
        ("event_id_sql", k, orjson.dumps({**base, "eventId": "'; DROP TABLE t; --"})),
        (
            "student_dotted_operator",
            b"$where",
            orjson.dumps({**base, "studentId": "$where"}),
        ),
        ("student_nul", k, orjson.dumps({**base, "studentId": sid + "\u0000"})),
        ("student_space", k, orjson.dumps({**base, "studentId": sid + " OR 1=1"})),
        ("student_too_long", k, orjson.dumps({**base, "studentId": "S" * 65})),
        ("metadata_operator_key", k, orjson.dumps({**base, "metadata": {"$set": 1}})),
        ("metadata_dotted_key", k, orjson.dumps({**base, "metadata": {"a.b": 1}})),
        ("metadata_nested", k, orjson.dumps({**base, "metadata": {"a": {"$gt": 1}}})),
        (
            "metadata_21_keys",
            k,
            orjson.dumps({**base, "metadata": {f"k{i}": i for i in range(21)}}),
        ),
        ("extra_operator_field", k, orjson.dumps({**base, "$where": "sleep(1000)"})),
        ("duplicate_student_field", k, good[:-1] + b',"studentId":"SOMEONE_ELSE"}'),
        ("schema_version_2", k, orjson.dumps({**base, "schemaVersion": 2})),
        (
            "timestamp_year_1",
            k,
            orjson.dumps({**base, "timestamp": "0001-01-01T00:00:00Z"}),
        ),
        (
            "timestamp_year_9999",
            k,
            orjson.dumps({**base, "timestamp": "9999-12-31T23:59:59Z"}),
        ),
        (
            "timestamp_expanded_year",
            k,
            orjson.dumps({**base, "timestamp": "+275760-09-13T00:00:00Z"}),
        ),
        ("timestamp_epoch_overflow", k, raw(timestamp=b"1" + b"0" * 30)),
        ("timestamp_negative", k, raw(timestamp=b"-62135596800")),
        (
            "timestamp_leap_second",
            k,
            orjson.dumps({**base, "timestamp": "2026-11-20T10:00:60Z"}),
        ),
        (
            "timestamp_naive_space",
            k,
            orjson.dumps({**base, "timestamp": "2026-11-20 10:00:00"}),
        ),
        ("timestamp_text", k, orjson.dumps({**base, "timestamp": "yesterday"})),
        ("surrogate_escape", k, raw(courseId=b'"C\\ud800"')),
        ("invalid_utf8_value", k, good.replace(b'"action"', b'"act\xc3\x28ion"')),
        ("valid_event_null_key", None, good),
        ("valid_event_other_key", b"SOMEONE_ELSE", good),
        ("valid_event_invalid_utf8_key", b"\xff\xfe", good),
        ("binary_noise", k, bytes(range(256)) * 4),
        (
            "over_64kib",
            k,
            orjson.dumps(
                {**base, "metadata": {"blob": "x" * 256, "pad": "y" * 70_000}}
            ),
        ),
        (
            "just_under_1mb",
            k,
            orjson.dumps({**base, "metadata": {"blob": "z" * 1_000_000}})[:999_000],
        ),
    ]
    return out


def big_records(data: Dataset) -> list[tuple[str, bytes, bytes]]:
    """Records over 1 MB that the broker takes because they arrive compressed."""
    ts, eid, sid, cid, action, region, *_ = data.events[1]
    base = {
        "eventId": eid,
        "studentId": sid,
        "courseId": cid,
        "action": action,
        "timestamp": "2026-11-20T10:00:00Z",
        "region": region,
    }
    return [
        (
            f"over_1mb_{size}",
            sid.encode(),
            orjson.dumps({**base, "metadata": {"blob": "b" * size}}),
        )
        for size in (1_100_000, 3_000_000)
    ]


def test_the_parser_routes_every_record_and_never_raises(settings: Settings) -> None:
    """Pure: the executor's parser over hostile bytes, one output row per record."""
    import pyarrow as pa

    from learntrack.streaming.parse import make_parser

    data = dataset(settings, 50, seed=25, bad_ratio=1.0)
    good = orjson.loads(delivery_stream(data).__next__()[1])  # any valid event
    big_int = orjson.dumps({**good, "metadata": {"n": 1}}).replace(
        b'"n":1', b'"n":123456789012345678901234567890'
    )
    cases: list[tuple[bytes | None, bytes | None]] = [
        (key, value) for _kind, key, value in hostile_records(data)
    ]
    cases += [(m.key, m.value) for m in data.malformed]
    cases.append((good["studentId"].encode(), big_int))
    # The broker stamps records on arrival: just after the valid event's own time
    # (a fixed date would make the dataset's dates, relative to today, "future").
    stamp = dt.datetime.fromisoformat(good["timestamp"].replace("Z", "+00:00"))
    stamp += dt.timedelta(seconds=1)
    batch = pa.RecordBatch.from_pydict(
        {
            "key": [k for k, _v in cases],
            "value": [v for _k, v in cases],
            "topic": ["t"] * len(cases),
            "partition": [0] * len(cases),
            "offset": list(range(len(cases))),
            "timestamp": [stamp] * len(cases),
        },
        schema=pa.schema(
            [
                ("key", pa.binary()),
                ("value", pa.binary()),
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    out = make_parser(settings)(iter([batch]))
    # Every record comes out once: refused ones in order, then the valid one.
    assert out.records == len(cases)
    assert out.ends == {0: len(cases) - 1}
    assert [r["offset"] for r in out.invalid] == list(range(len(cases) - 1))
    # Only the last case is valid: an integer beyond 64 bits in metadata is kept
    # as text (it used to raise inside the parser and fail the whole batch).
    assert out.events["offset"] == [len(cases) - 1]
    assert out.events["metadata"] == [{"n": "123456789012345678901234567890"}]
    for r in out.invalid:
        assert r["reason"]
        assert (r["key"], r["raw"]) == cases[r["offset"]]


def test_oversized_records_are_refused_loudly_at_produce_time(
    settings: Settings, prefix: str
) -> None:
    from learntrack.producers import ProducerError
    from learntrack.topics import create_topic, delete_topics

    topic = f"{prefix}.big"
    create_topic(settings, topic, 1, retention_ms=600_000)
    try:
        noise = os.urandom(1_100_000)  # incompressible: > 1 MB on the wire too
        with ActivityProducer(settings, topic=topic) as producer:
            # librdkafka refuses it before it leaves the process...
            with pytest.raises(ProducerError, match="too large"):
                producer.send_serialized(b"S1", noise)
        # ...and a producer allowed larger messages gets the broker's refusal.
        errors: list[Any] = []
        lenient = ActivityProducer(
            settings,
            topic=topic,
            on_error=errors.append,
            config={"message.max.bytes": 10_000_000, "compression.type": "none"},
        )
        lenient.send_serialized(b"S1", noise)
        with pytest.raises(DeliveryError, match="too large"):
            lenient.flush(30)
        lenient.close()
        assert [e.value for e in errors] == [noise]
        assert read_topic(settings, topic) == []
    finally:
        delete_topics(settings, [topic])


def test_bad_input_goes_to_the_dlq_with_a_reason_and_nowhere_else(
    spark: Any, stack: Stack, prefix: str, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    settings, _env = isolated(
        prefix, tmp_path, LEARNTRACK_STREAM__MAX_OFFSETS_PER_TRIGGER="6000"
    )
    job = StreamJob(settings, available_now=True, report=log.info)
    job.reset()
    data = dataset(settings, 10_000, seed=24, bad_ratio=1.0)
    truth = build_truth(data)
    extra = hostile_records(data)
    big = big_records(data)
    assert len(data.malformed) + len(extra) + len(big) >= 10_000
    records = list(delivery_stream(data))
    # Spread the extra records through the valid ones.
    for i, (_kind, key, value) in enumerate(extra):
        records.insert((i * 397) % len(records), (key, value))  # type: ignore[arg-type]
    publish_records(settings, records)
    # Larger than the topic's 1 MB message limit, but compressed: the broker keeps them.
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "message.max.bytes": 10_000_000,
            "compression.type": "lz4",
        }
    )
    for _kind, key, value in big:
        producer.produce(settings.topics.activity, key=key, value=value)
    assert producer.flush(30) == 0
    for kind, key, value in [*extra, *big]:
        truth["malformed"].append(
            {
                "kind": kind,
                "sha256": hashlib.sha256(value or b"").hexdigest(),
                "key": key.decode("utf-8", "replace") if key is not None else None,
            }
        )
    truth["counts"]["malformed"] = len(truth["malformed"])

    reports = job.run(spark)  # the job must go through all of it without stopping

    assert sum(r.valid for r in reports) == 10_000
    assert sum(r.invalid for r in reports) == truth["counts"]["malformed"]
    assert_matches_truth(settings, truth, spark)
    reasons: dict[str, set[str]] = {}
    for m in read_topic(settings, settings.topics.dlq):
        reason = dict(m.headers() or [])["reason"].decode()
        reasons.setdefault(hashlib.sha256(m.value() or b"").hexdigest(), set()).add(
            reason
        )
    by_kind = {
        m["kind"]: " | ".join(sorted(reasons[m["sha256"]])) for m in truth["malformed"]
    }
    # Records with the same bytes (a tombstone and an empty value; one valid event
    # under a null, a foreign and an undecodable key) share a hash: all reasons.
    assert by_kind["tombstone"] == (
        "event: Invalid JSON: EOF while parsing a value at line 1 column 0 | "
        "value: missing (null record)"
    )
    assert by_kind["valid_event_null_key"] == (
        "key: does not match studentId | key: missing (must be the studentId)"
    )
    assert re.fullmatch(r"oversized: 3\d{6} bytes > 65536", by_kind["over_1mb_3000000"])
    assert by_kind["over_64kib"].startswith("oversized")
    assert by_kind["mongo_operator_id"].startswith("studentId: Input should be")
    assert by_kind["cypher_fragment_id"].startswith("studentId: String should match")
    assert by_kind["course_cypher"].startswith("courseId: String should match")
    assert "timestamp" in by_kind["naive_timestamp"]
    assert "recursion limit" in by_kind["deep_nesting"]
    _assert_no_hostile_ids(settings)


def _assert_no_hostile_ids(settings: Settings) -> None:
    """No store holds an id that is not a plain identifier (no operator, no quote)."""
    from learntrack.clients import graph_driver, mongo_client, redis_client
    from learntrack.events import ID_PATTERN

    plain = re.compile(ID_PATTERN)
    with mongo_client(settings) as client:
        db = client[settings.mongo.database]
        for coll, field in (
            ("activities", "studentId"),
            ("activities", "courseId"),
            ("students", "studentId"),
        ):
            values = db[coll].distinct(field)
            assert values and all(
                isinstance(v, str) and plain.match(v) for v in values
            ), (coll, field)
    with (
        graph_driver(settings) as driver,
        driver.session(database=settings.graph.database) as session,
    ):
        ids = [
            r["id"] for r in session.run("MATCH (s:Student) RETURN s.studentId AS id")
        ]
    assert ids and all(plain.match(i) for i in ids)
    with redis_client(settings) as r:
        keys = [k.decode() for k in r.scan_iter(match="lt:student:*", count=1000)]
    assert keys and all(plain.match(k.removeprefix("lt:student:")) for k in keys)
