"""Session fixtures: one real local stack and one SparkSession per test run.

The test stack has its own data directory (``.learntrack-test/``) and its own ports
(the defaults + ``LEARNTRACK_TEST_PORT_OFFSET``, default 10000), so a developer's
``make up`` stack and its data are never touched. A server that cannot start fails
the run: nothing is skipped.
Set ``LEARNTRACK_TEST_KEEP_STACK=1`` to leave the test stack running afterwards, and
``LEARNTRACK_TEST_DATA_DIR`` to give a second test run its own data directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from learntrack.config import Settings, server_ports
from learntrack.stack.manager import Stack

ROOT = Path(__file__).resolve().parents[1]

#: Ports of the test stack: the defaults shifted by LEARNTRACK_TEST_PORT_OFFSET
#: (default 10000), so two checkouts can test side by side.
OFFSET = int(os.environ.get("LEARNTRACK_TEST_PORT_OFFSET", "10000"))
TEST_ENV = {
    "LEARNTRACK_DATA_DIR": os.environ.get(
        "LEARNTRACK_TEST_DATA_DIR", str(ROOT / ".learntrack-test")
    ),
    **{f"LEARNTRACK_{k}": str(v + OFFSET) for k, v in server_ports().items()},
    "LEARNTRACK_SPARK__MASTER": "local[2]",
    # The tests run in tests/: the Maven-resolved jars stay in the checkout's .jars/.
    "LEARNTRACK_STACK__JARS_DIR": os.environ.get(
        "LEARNTRACK_STACK__JARS_DIR", str(ROOT / ".jars")
    ),
    "LEARNTRACK_SPARK__WORKER_CORES": "1",
    "LEARNTRACK_SPARK__WORKER_MEMORY": "1g",
}


def pytest_configure(config: pytest.Config) -> None:
    """Point every settings object built in this run at the test stack."""
    for key, value in TEST_ENV.items():
        os.environ[key] = value
    # A developer's .env must not redirect the tests to another deployment.
    os.chdir(ROOT / "tests")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The running test stack (started once; stopped at the end if we started it)."""
    from learntrack.stack.manager import Stack

    test_stack = Stack()
    was_running = test_stack.all_running()
    test_stack.up(report=lambda _m: None)
    yield test_stack
    if not was_running and not os.environ.get("LEARNTRACK_TEST_KEEP_STACK"):
        test_stack.down(report=lambda _m: None)


@pytest.fixture(scope="session")
def settings(stack: object) -> Settings:
    """Settings of the running test stack, credentials included."""
    from learntrack.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One real SparkSession (local[2]) shared by the whole run."""
    from learntrack.config import get_settings
    from learntrack.spark import build_spark

    session = build_spark(get_settings())
    yield session
    session.stop()


@pytest.fixture
def prefix() -> str:
    """A unique name prefix for this test's topics, collections and keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def restore_stack(stack: Stack, prefix: str) -> Iterator[None]:
    """Afterwards: every server up again, this test's topics and database gone.

    For tests that stop servers or publish to ``prefix`` topics: what a test
    published must not outlive it (the broker keeps every topic on disk until its
    retention passes).
    """
    yield
    if not stack.all_running():
        stack.up(report=lambda _m: None)
    from confluent_kafka.admin import AdminClient

    from learntrack.clients import mongo_client
    from learntrack.topics import delete_topics

    settings = stack.settings
    admin = AdminClient(settings.kafka.client_config())
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    delete_topics(settings, topics)
    with mongo_client(settings) as client:
        client.drop_database(prefix)
