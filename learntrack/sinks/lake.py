"""The lake: every valid event as Parquet, partitioned by event date, exactly once.

Runs on the driver, which asks Spark to write the batch (executors write the
files). Layout: ``<lake>/date=YYYY-MM-DD/batch=<id>/part-*.parquet``. A batch is
first written to ``<lake>/_staging/<id>`` (ignored by readers: leading underscore),
then each date folder is moved into place, replacing any earlier attempt of the same
batch: a replayed batch rewrites the same files, never adds a second copy. The
nightly batch job reads it with ``spark.read.parquet(<lake>)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from learntrack.config import Settings
from learntrack.errors import FatalSinkError
from learntrack.sinks.base import Sink

LAKE_COLUMNS = (
    "eventId",
    "studentId",
    "courseId",
    "action",
    "timestamp",
    "region",
    "sessionId",
    "device",
    "durationMs",
    "score",
    "schemaVersion",
)


def lake_path(settings: Settings) -> Path:
    """Root folder of the lake."""
    return settings.data_dir / "lake"


class LakeSink(Sink):
    """Appends a batch's valid events (a Spark DataFrame) to the Parquet lake."""

    name = "lake"

    def open(self) -> None:
        """Create the lake folder."""
        self.root = lake_path(self.settings)
        self.root.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Nothing to release."""

    def write_batch(self, batch_id: int, rows: Any) -> int:
        """Write ``rows`` (a DataFrame of valid events) for ``batch_id``; idempotent."""
        from pyspark.sql import functions as F  # noqa: N812

        df = rows.select(*LAKE_COLUMNS).withColumn(
            "date", F.date_format(F.col("timestamp"), "yyyy-MM-dd")
        )
        staging = self.root / "_staging" / str(batch_id)
        try:
            df.write.mode("overwrite").partitionBy("date").parquet(str(staging))
            moved = 0
            for date_dir in sorted(staging.glob("date=*")):
                target = self.root / date_dir.name / f"batch={batch_id}"
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                date_dir.rename(target)
                moved += 1
        except OSError as err:
            raise FatalSinkError(f"lake: {err}") from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return moved

    def reset(self) -> None:
        """Delete the lake."""
        shutil.rmtree(lake_path(self.settings), ignore_errors=True)
