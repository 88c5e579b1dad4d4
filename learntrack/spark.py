"""The one place that builds a SparkSession from the settings.

Runs in the driver process (the CLI's ``stream`` and ``batch`` commands, tests).
Applies what ``docs/stack.md`` measured: loopback binding, the venv's Python for
workers, no UI in tests, few shuffle partitions, worker reuse kept on, and Spark's
own Kafka connector (``spark-sql-kafka``, resolved by mvn) on the classpath.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from learntrack.config import LOCALHOST, Settings
from learntrack.stack import jars


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)  # noqa: T201 - progress of a one-time fetch


def spark_conf(settings: Settings, master: str | None = None) -> dict[str, str]:
    """The Spark configuration LearnTrack runs with (pure; easy to inspect)."""
    s = settings.spark
    conf = {
        "spark.master": s.master,
        "spark.app.name": s.app_name,
        "spark.ui.enabled": str(s.ui_enabled).lower(),
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.driver.memory": s.driver_memory,
        "spark.executor.memory": s.executor_memory,
        "spark.driver.host": LOCALHOST,
        "spark.driver.bindAddress": LOCALHOST,
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.python.worker.reuse": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.log.level": "WARN",
        "spark.ui.showConsoleProgress": "false",
        **s.conf,
    }
    if master:
        conf["spark.master"] = master
    if settings.stream.source == "jvm" and jars.resolved(settings, "spark-kafka"):
        # Spark ships these to every executor; an explicit spark.jars setting wins.
        connector = ",".join(str(j) for j in jars.jars(settings, "spark-kafka"))
        conf.setdefault("spark.jars", connector)
    return conf


def build_spark(settings: Settings, master: str | None = None) -> Any:
    """Create (or return the running) SparkSession for ``settings``.

    ``master`` overrides ``settings.spark.master`` (e.g. the local standalone
    cluster's ``spark://127.0.0.1:7077``).
    """
    os.environ.setdefault("SPARK_LOCAL_IP", LOCALHOST)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.stream.source == "jvm" and "spark.jars" not in settings.spark.conf:
        # Spark's Kafka connector, resolved by mvn the first time only.
        jars.fetch(settings, ["spark-kafka"], report=_stderr)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in spark_conf(settings, master).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _task_jvm_pid(_: object) -> list[int]:
    """Executor side: the PID of the JVM that launched this Python worker.

    Python workers are forked from a daemon that the executor JVM started, so we
    walk up the process tree to the first ``java`` process.
    """
    pid = os.getpid()
    for _depth in range(6):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
        except OSError:
            break
        if comm == "java":
            return [pid]
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return [-1]


def run_check(spark: Any) -> dict[str, Any]:
    """Run a small real job; report the result and which JVMs ran its tasks.

    Runs on the driver; the tasks run in executors. On ``local[N]`` the tasks run
    inside the driver JVM; on a standalone cluster, in separate executor JVMs.
    """
    sc = spark.sparkContext
    n = 100_000
    total = spark.range(n).selectExpr("sum(id) AS s").collect()[0]["s"]
    jvm_pids = sorted(set(sc.parallelize(range(8), 4).flatMap(_task_jvm_pid).collect()))
    driver_pid = int(sc._jvm.ProcessHandle.current().pid())  # noqa: SLF001
    return {
        "master": sc.master,
        "sum_of_range": int(total),
        "expected": n * (n - 1) // 2,
        "driver_jvm_pid": driver_pid,
        "task_jvm_pids": jvm_pids,
        "tasks_in_separate_jvms": driver_pid not in jvm_pids,
    }
