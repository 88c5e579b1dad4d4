"""Parse raw Kafka records against the event model; route the invalid ones.

Runs on executors (inside ``mapInArrow``): every value is validated with the same
pydantic model the SDK and the API use, so "valid" means one thing everywhere. The
output has one row per input record: valid rows carry the event's columns (schema
derived from :class:`learntrack.events.ActivityEvent`), invalid rows carry the raw
bytes and the reason, with their source partition and offset. Nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from pydantic import ValidationError

from learntrack.config import Settings
from learntrack.events import ActivityEvent, describe_error, spark_schema


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


def _event_columns(event: ActivityEvent) -> tuple[Any, ...]:
    """The event's values in the order of :data:`_EVENT_FIELDS`."""
    return (
        str(event.eventId),
        event.studentId,
        event.courseId,
        event.action.value,
        event.timestamp,
        event.region,
        event.sessionId,
        event.device.value if event.device else None,
        event.durationMs,
        event.score,
        _meta(event.metadata),
        event.schemaVersion,
    )


def make_parser(settings: Settings) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function for ``settings`` (a picklable closure)."""
    regions = list(settings.events.regions)
    max_future = dt.timedelta(seconds=settings.events.max_future_s)
    max_bytes = settings.events.max_bytes

    def parse(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from learntrack.events import validation_context

        schema = arrow_schema()
        for rb in batches:
            cols: dict[str, list[Any]] = {name: [] for name in schema.names}
            keys = rb.column("key").to_pylist()
            values = rb.column("value").to_pylist()
            stamps = rb.column("timestamp").to_pylist()
            # One context per Arrow batch; only the reference time changes per record.
            ctx = validation_context(regions, max_future)
            for key, value, stamp in zip(keys, values, stamps, strict=True):
                # "Too far in the future" is judged against the broker's timestamp
                # of the record, never the wall clock: a replay must decide the same.
                ctx["now"] = stamp or _NO_STAMP
                try:
                    event, reason = check_record(key, value, ctx, max_bytes)
                    row = _NO_EVENT if event is None else _event_columns(event)
                except Exception as err:  # noqa: BLE001 - one record never stops a batch
                    event, row = None, _NO_EVENT
                    reason = f"event: unreadable: {type(err).__name__}: {err}"[:1000]
                cols["ok"].append(event is not None)
                cols["reason"].append(reason or None)
                cols["key"].append(key)
                cols["raw"].append(None if event is not None else value)
                for name, item in zip(_EVENT_FIELDS, row, strict=True):
                    cols[name].append(item)
            n = rb.num_rows
            cols["topic"] = rb.column("topic").to_pylist()
            cols["partition"] = rb.column("partition").to_pylist()
            cols["offset"] = rb.column("offset").to_pylist()
            cols["kafkaTimestamp"] = rb.column("timestamp").to_pylist()
            assert all(len(c) == n for c in cols.values())  # noqa: S101
            yield pa.RecordBatch.from_pydict(cols, schema=schema)

    return parse


_EVENT_FIELDS = tuple(ActivityEvent.model_fields)
_NO_EVENT: tuple[Any, ...] = (None,) * len(_EVENT_FIELDS)
#: Reference time for a record without a broker timestamp: no future check
#: (still deterministic across replays).
_NO_STAMP = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


@functools.cache
def arrow_schema() -> Any:
    """The Arrow form of :func:`parsed_schema` (derived, never retyped)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(parsed_schema(), timezone="UTC")
