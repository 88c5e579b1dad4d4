"""Parse raw Kafka records against the event model; route the invalid ones.

Runs on executors (inside ``mapInArrow``): every value is validated with the same
pydantic model the SDK and the API use, so "valid" means one thing everywhere. Every
record comes out once (:class:`Parsed`): a valid one as the event's columns (derived
from :class:`learntrack.events.ActivityEvent`), an invalid one with its raw bytes
and the reason, with its source partition and offset. Nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import enum
import operator
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from learntrack.config import Settings
from learntrack.events import ActivityEvent, describe_error, spark_schema
from learntrack.sinks.base import map_value


def parsed_schema() -> Any:
    """Routing columns + the event columns (nullable), derived from the model."""
    from pyspark.sql import types as T  # noqa: N812

    routing = [
        T.StructField("ok", T.BooleanType(), False),
        T.StructField("reason", T.StringType()),
        T.StructField("key", T.BinaryType()),
        T.StructField("raw", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("kafkaTimestamp", T.TimestampType()),
    ]
    event = [
        T.StructField(f.name, f.dataType, True)
        for f in spark_schema(ActivityEvent).fields
    ]
    return T.StructType(routing + event)


def check_record(
    key: bytes | None, value: bytes | None, context: dict[str, Any], max_bytes: int
) -> tuple[ActivityEvent | None, str]:
    """Validate one raw record: ``(event, "")`` or ``(None, reason)``. Pure."""
    if value is None:
        return None, "value: missing (null record)"
    if len(value) > max_bytes:
        return None, f"oversized: {len(value)} bytes > {max_bytes}"
    try:
        event = ActivityEvent.model_validate_json(value, context=context)
    except ValidationError as err:
        return None, describe_error(err)[:1000]
    if key is None:
        return None, "key: missing (must be the studentId)"
    if key != event.studentId.encode():
        return None, "key: does not match studentId"
    return event, ""


def _meta(value: dict[str, Any] | None) -> dict[str, str] | None:
    """Metadata values as text (a JSON literal for non-strings).

    Integers are written with ``str``: the contract allows any size, and orjson
    refuses integers beyond 64 bits.
    """
    if value is None:
        return None
    return {k: _meta_text(v) for k, v in value.items()}


def _meta_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return orjson.dumps(value).decode()


def _converter(name: str, annotation: Any) -> Callable[[Any], Any] | None:
    """How a field's Python value becomes its column value (None: as it is).

    UUIDs become text, enum members their value, ``metadata`` a map of text
    (:func:`_meta`); everything else (text, numbers, datetimes) stays as it is.
    """
    if name == "metadata":
        return _meta
    for kind in typing.get_args(annotation) or (annotation,):
        if kind is uuid.UUID:
            return str
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return operator.attrgetter("value")
    return None


#: The event's fields in model order, read in one call, and the ones converted.
_EVENT_FIELDS = tuple(ActivityEvent.model_fields)
_GET_FIELDS = operator.attrgetter(*_EVENT_FIELDS)
_CONVERT = tuple(
    (i, conv)
    for i, (name, info) in enumerate(ActivityEvent.model_fields.items())
    if (conv := _converter(name, info.annotation)) is not None
)


def _event_columns(event: ActivityEvent) -> tuple[Any, ...]:
    """The event's column values in the order of :data:`_EVENT_FIELDS`.

    Derived from the model's fields: a new field needs no change here.
    """
    values = list(_GET_FIELDS(event))
    for i, conv in _CONVERT:
        if values[i] is not None:
            values[i] = conv(values[i])
    return tuple(values)


#: What a task keeps of a valid record beside the event's fields.
SOURCE_FIELDS = ("partition", "offset", "kafkaTimestamp")
#: What a refused record carries to the dead-letter topic.
INVALID_FIELDS = (
    "key",
    "raw",
    "reason",
    "topic",
    "partition",
    "offset",
    "kafkaTimestamp",
)


@dataclass
class Parsed:
    """A task's records after validation, in arrival ((partition, offset)) order.

    ``events`` holds the valid ones as columns (the event model's fields, then
    :data:`SOURCE_FIELDS`); ``invalid`` the refused ones as rows of
    :data:`INVALID_FIELDS`, raw bytes and reason included. Every record is in one
    of the two; ``ends`` is the last offset read per Kafka partition.
    """

    events: dict[str, list[Any]]
    invalid: list[dict[str, Any]] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Records read (valid and refused)."""
        return len(self.events[SOURCE_FIELDS[0]]) + len(self.invalid)


def make_parser(settings: Settings) -> Callable[[Iterator[Any]], Parsed]:
    """The task's parser for ``settings`` (a picklable closure).

    It takes Spark's Arrow batches of Kafka records (``key, value, topic,
    partition, offset, timestamp``) and returns :class:`Parsed`. Valid events go
    straight from the model to Python columns: the sinks take columns, so no Arrow
    table is built for them to be taken apart again.
    """
    regions = list(settings.events.regions)
    max_future = dt.timedelta(seconds=settings.events.max_future_s)
    max_bytes = settings.events.max_bytes

    def parse(batches: Iterator[Any]) -> Parsed:
        from learntrack.events import validation_context

        rows: list[tuple[Any, ...]] = []
        invalid: list[dict[str, Any]] = []
        ends: dict[int, int] = {}
        # One context; only the reference time changes per record.
        ctx = validation_context(regions, max_future)
        for rb in batches:
            columns = [
                rb.column(n).to_pylist()
                for n in ("key", "value", "partition", "offset", "topic")
            ]
            columns.insert(2, _stamps(rb.column("timestamp")))
            for key, value, stamp, partition, offset, topic in zip(
                *columns, strict=True
            ):
                # "Too far in the future" is judged against the broker's timestamp
                # of the record, never the wall clock: a replay must decide the same.
                ctx["now"] = stamp or _NO_STAMP
                if offset > ends.get(partition, -1):
                    ends[partition] = offset
                try:
                    event, reason = check_record(key, value, ctx, max_bytes)
                    if event is not None:
                        rows.append((*_event_columns(event), partition, offset, stamp))
                        continue
                except Exception as err:  # noqa: BLE001 - one record never stops a batch
                    reason = f"event: unreadable: {type(err).__name__}: {err}"[:1000]
                invalid.append(
                    {
                        "key": key,
                        "raw": value,
                        "reason": reason,
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                        "kafkaTimestamp": stamp,
                    }
                )
        return Parsed(_columns(rows), invalid, ends)

    return parse


def _stamps(column: Any) -> list[dt.datetime | None]:
    """Broker timestamps as UTC datetimes.

    Built from the microseconds: pyarrow's ``to_pylist`` of a zoned timestamp
    column costs about 5 µs a value, this under 1 µs.
    """
    import pyarrow as pa

    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    return [
        None if us is None else _EPOCH + dt.timedelta(microseconds=us) for us in micros
    ]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def from_parsed(batches: Iterator[Any]) -> Parsed:
    """:class:`Parsed` from batches the parser's Spark schema already holds.

    For :func:`parsed_schema` rows built elsewhere (the per-event design of the
    benchmarks hands its parsed DataFrame to the same fan-out).
    """
    import pyarrow as pa

    given = list(batches)
    if not given:
        return Parsed(_columns([]))
    table = pa.Table.from_batches(given)
    ok = table.column("ok").to_pylist()
    names = (*_EVENT_FIELDS, *SOURCE_FIELDS)
    valid = table.select(list(names)).to_pylist()
    meta = _EVENT_FIELDS.index("metadata")
    rows = []
    for r, good in zip(valid, ok, strict=True):
        if good:
            values = [r[n] for n in names]
            values[meta] = map_value(values[meta])
            rows.append(tuple(values))
    invalid = [
        {n: r[n] for n in INVALID_FIELDS}
        for r, good in zip(
            table.select(list(INVALID_FIELDS)).to_pylist(), ok, strict=True
        )
        if not good
    ]
    ends: dict[int, int] = {}
    for p, o in zip(
        table.column("partition").to_pylist(),
        table.column("offset").to_pylist(),
        strict=True,
    ):
        ends[p] = max(ends.get(p, -1), o)
    return Parsed(_columns(rows), invalid, ends)


def _columns(rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Rows of (event fields, source fields) -> columns by name."""
    names = (*_EVENT_FIELDS, *SOURCE_FIELDS)
    if not rows:
        return {n: [] for n in names}
    return {
        n: list(values)
        for n, values in zip(names, zip(*rows, strict=True), strict=True)
    }


_NO_EVENT: tuple[Any, ...] = (None,) * len(_EVENT_FIELDS)
#: Reference time for a record without a broker timestamp: no future check
#: (still deterministic across replays).
_NO_STAMP = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
