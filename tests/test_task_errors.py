"""Errors from inside Spark reach the driver by type, never by their text."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from learntrack.errors import RetryableSinkError
from learntrack.streaming import fanout
from learntrack.streaming.job import _missing_source


def test_a_task_reporting_its_sink_unavailable_makes_the_batch_retryable() -> None:
    ok = fanout._result(
        {"ends": {}, "invalid": 0, "valid": 0, "duplicates": 0, "read": 0.0,
         "parse": 0.0, "sinks": {}, "freshness": [], "newestMs": {}, "stored": 0},
        {},
        [],
    )  # fmt: skip
    failed = fanout._failure("mongo.activities", "connection refused")
    gathered = fanout.gather(pa.Table.from_batches([ok, failed]))

    assert gathered.retryable == [("mongo.activities", "connection refused")]
    with pytest.raises(fanout.TaskSinkError) as raised:
        gathered.raise_retryable()
    assert isinstance(raised.value, RetryableSinkError)
    assert str(raised.value) == "mongo.activities: connection refused (in a task)"


def test_a_batch_whose_tasks_all_wrote_is_not_retried() -> None:
    ok = fanout._result(
        {"ends": {"0": 3}, "invalid": 0, "valid": 3, "duplicates": 0, "read": 0.0,
         "parse": 0.0, "sinks": {"redis": 0.1}, "freshness": [0.2], "newestMs": {},
         "stored": 3},
        {},
        [],
    )  # fmt: skip
    gathered = fanout.gather(pa.Table.from_batches([ok]))
    gathered.raise_retryable()  # raises nothing
    assert (gathered.tasks, gathered.valid, gathered.retryable) == (1, 3, [])


def test_a_task_turns_only_retryable_sink_errors_into_a_report() -> None:
    """TaskRetryable carries the topology name and the sink's own message."""
    err = fanout.TaskRetryable("graph", "graph: ServiceUnavailable")
    assert (err.sink, err.message) == ("graph", "graph: ServiceUnavailable")
    assert not isinstance(err, RetryableSinkError)  # a signal, never retried as is


@pytest.mark.spark
def test_a_missing_spark_data_source_is_known_by_its_condition(spark: Any) -> None:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - Spark's own type
        spark.readStream.format("learntrack-no-such-source").load()
    assert _missing_source(raised.value)
    assert not _missing_source(ValueError("kafka is not available"))
