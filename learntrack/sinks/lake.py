"""The lake: every valid event as Parquet, partitioned by event date, exactly once.

Runs on executors (each task writes its own files) and commits on the driver.
Layout: ``<lake>/date=YYYY-MM-DD/batch=<id>/part-<kafka partition>.parquet``. A task
writes ``<lake>/_staging/<id>/date=.../part-<partition>.parquet`` (a name fixed by
the batch and the partition, written under a temporary name and renamed, so a
retried task rewrites its file, never adds one; readers skip ``_staging``: leading
underscore). When every task is done the driver moves each date folder into place,
replacing any earlier attempt of the same batch. The driver empties the batch's
staging folder before its tasks run, so files of an aborted attempt never land.
The nightly batch job reads it with ``spark.read.parquet(<lake>)``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from learntrack.config import Settings
from learntrack.errors import FatalSinkError
from learntrack.events import ActivityEvent
from learntrack.sinks.base import Part, Runs, StreamSink

#: The lake's columns: the event model's fields, in its order, but ``metadata``
#: (free-form, per app: it stays in the activity log, out of the analytics files).
LAKE_COLUMNS = tuple(n for n in ActivityEvent.model_fields if n != "metadata")


def lake_path(settings: Settings) -> Path:
    """Root folder of the lake."""
    return settings.data_dir / "lake"


def lake_schema() -> Any:
    """The Arrow schema of a lake file (derived from the event model)."""
    import pyarrow as pa

    from learntrack.events import arrow_schema

    event = arrow_schema()
    return pa.schema([event.field(name) for name in LAKE_COLUMNS])


class LakeSink(StreamSink):
    """Each task's new events as Parquet files; the driver moves them into place."""

    name = "lake"
    runs_on = Runs.EXECUTOR

    def open(self) -> None:
        """Create the lake folder."""
        self.root = lake_path(self.settings)
        self.root.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Nothing to release."""

    def staging(self, batch_id: int) -> Path:
        """Where the tasks of ``batch_id`` write."""
        return lake_path(self.settings) / "_staging" / str(batch_id)

    def prepare(self, batch_id: int) -> None:
        """Driver, before the tasks: no file of an earlier attempt may remain."""
        shutil.rmtree(self.staging(batch_id), ignore_errors=True)

    def write_part(self, part: Part) -> list[Any]:
        """One file per event date for the task's partition; returns the dates."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not len(part):
            return []
        schema = lake_schema()
        by_date: dict[str, list[int]] = {}
        for i, ts in enumerate(part.events["timestamp"]):
            by_date.setdefault(ts.strftime("%Y-%m-%d"), []).append(i)
        staging = self.staging(part.batch_id)
        try:
            for date, rows in sorted(by_date.items()):
                table = pa.Table.from_pydict(
                    {n: [part.events[n][i] for i in rows] for n in LAKE_COLUMNS},
                    schema=schema,
                )
                folder = staging / f"date={date}"
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / f"part-{part.partition:05d}.parquet"
                temporary = folder / f".{final.name}.{os.getpid()}.tmp"
                pq.write_table(table, temporary)
                temporary.replace(final)
        except OSError as err:
            raise FatalSinkError(f"lake: {err}") from err
        return sorted(by_date)

    def write_batch(self, batch_id: int, rows: Any) -> int:
        """A whole batch at once (rows, or a Spark DataFrame): write, then commit."""
        if hasattr(rows, "toArrow"):
            events = rows.select(*LAKE_COLUMNS).toArrow().to_pydict()
        else:
            events = {n: [r.get(n) for r in rows] for n in LAKE_COLUMNS}
        self.prepare(batch_id)
        dates = self.write_part(Part(batch_id, 0, events))
        self.commit(batch_id, dates)
        return len(dates)

    def commit(self, batch_id: int, emitted: list[Any]) -> None:
        """Move each staged date folder into place (driver, after every task)."""
        root = lake_path(self.settings)
        staging = self.staging(batch_id)
        try:
            for date_dir in sorted(staging.glob("date=*")):
                target = root / date_dir.name / f"batch={batch_id}"
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                date_dir.rename(target)
        except OSError as err:
            raise FatalSinkError(f"lake: {err}") from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def reset(self) -> None:
        """Delete the lake."""
        shutil.rmtree(lake_path(self.settings), ignore_errors=True)
