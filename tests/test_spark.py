"""Spark for real: the shared local session, and the standalone cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from learntrack.config import get_settings
from learntrack.spark import run_check, spark_conf
from learntrack.stack.manager import Stack

pytestmark = pytest.mark.spark


def test_spark_conf_follows_the_settings() -> None:
    settings = get_settings(spark={"master": "local[3]", "shuffle_partitions": 7})
    conf = spark_conf(settings)
    assert conf["spark.master"] == "local[3]"
    assert conf["spark.sql.shuffle.partitions"] == "7"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.pyspark.python"] == sys.executable
    assert spark_conf(settings, "spark://h:7077")["spark.master"] == "spark://h:7077"
    extra = get_settings(
        spark={"conf": {"spark.scheduler.mode": "FAIR", "spark.master": "local[1]"}}
    )
    assert spark_conf(extra)["spark.scheduler.mode"] == "FAIR"
    assert spark_conf(extra)["spark.master"] == "local[1]"  # applied last...
    assert spark_conf(extra, "local[2]")["spark.master"] == "local[2]"  # but this


def test_local_job_runs_in_the_driver_jvm(spark: Any) -> None:
    result = run_check(spark)
    assert result["master"].startswith("local[")
    assert result["sum_of_range"] == result["expected"] == 4_999_950_000
    assert result["task_jvm_pids"] == [result["driver_jvm_pid"]]
    assert result["tasks_in_separate_jvms"] is False


@pytest.mark.slow
def test_job_on_the_standalone_cluster_runs_in_separate_executor_jvms(
    stack: Stack,
) -> None:
    stack.up(spark_cluster=True, report=lambda _m: None)
    status = {r.name: r for r in stack.status(include_spark=True)}
    assert status["spark-master"].healthy and status["spark-worker"].healthy
    # A separate driver process: one SparkContext per process, and the test run
    # already holds the shared local one.
    proc = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "spark-check", "--cluster"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    settings = get_settings()
    assert result["master"] == settings.spark.cluster_master_url
    assert result["sum_of_range"] == result["expected"]
    assert result["tasks_in_separate_jvms"] is True
    assert -1 not in result["task_jvm_pids"]
    assert result["driver_jvm_pid"] not in result["task_jvm_pids"]
