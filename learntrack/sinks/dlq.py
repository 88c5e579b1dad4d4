"""Exactly-once Kafka output of a micro-batch; the dead-letter topic built on it.

Runs on the driver. :class:`TransactionalTopicSink` writes the records of a batch
and a marker ``<batch id>`` on the small ``<topic>.commits`` topic in one Kafka
transaction; on start it reads the committed markers and skips any batch already
there (a replay after a crash). Read its topics with
``isolation.level=read_committed``.

:class:`DeadLetterSink` uses it for every invalid record, verbatim: each is produced
to ``learntrack.activity.dlq`` with its original key and value bytes, and headers
``reason``, ``source.topic``, ``source.partition``, ``source.offset``,
``source.timestamp`` and ``batch``. The alerts topic uses it too
(:mod:`learntrack.sinks.alerts`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from learntrack.config import Settings
from learntrack.errors import FatalSinkError, RetryableSinkError
from learntrack.sinks.base import Runs, StreamSink

Record = tuple[Any, Any, list[tuple[str, str | bytes | None]] | None]
#: The producer's per-record limit before compression (the broker still applies the
#: topic's ``max.message.bytes`` to the compressed batch).
MAX_RECORD_BYTES = 64 * 1024 * 1024


def commits_topic(settings: Settings, topic: str | None = None) -> str:
    """The marker topic of a transactional writer of ``topic`` (default: the DLQ)."""
    return f"{topic or settings.topics.dlq}.commits"


class TransactionalTopicSink(StreamSink):
    """Produces a batch's records to one topic, one Kafka transaction per batch.

    Subclasses name the topic and turn rows into ``(key, value, headers)``.
    """

    name = "topic"
    runs_on = Runs.DRIVER
    #: How long one transactional call (init, commit) waits for the broker.
    wait_s = 60.0

    def __init__(self, settings: Settings, writer_id: str = "") -> None:
        """``writer_id`` names the transactional producer (one per checkpoint).

        By default the stream's checkpoint and the sink's name: one writer per
        query and topic.
        """
        super().__init__(settings)
        self.writer_id = (
            writer_id or f"{settings.checkpoint_dir / 'stream'}:{self.name}"
        )

    def open(self) -> None:
        """Create the marker topic, init transactions, read committed markers."""
        self._ensure_commits_topic()
        self._producer: Any = None
        self._new_producer()
        self._done = self._committed_batches()
        self._stale = False

    def _new_producer(self) -> None:
        """(Re)create the transactional producer.

        ``init_transactions`` fences any earlier producer of this writer and
        completes or aborts its open transaction, so a producer left in an error
        state by a failed batch is replaced, never reused.
        """
        from confluent_kafka import KafkaException, Producer

        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(KafkaException):
                old.abort_transaction(5)
        digest = hashlib.sha1(self.writer_id.encode()).hexdigest()[:12]  # noqa: S324
        producer = Producer(
            {
                **self.settings.kafka.client_config(),
                "transactional.id": f"learntrack-{self.name}-{digest}",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # Records larger than the topic's 1 MB message limit reach the
                # activity topic compressed; they must leave for the DLQ the same way.
                "compression.type": "lz4",
                "message.max.bytes": MAX_RECORD_BYTES,
            }
        )
        producer.init_transactions(self.wait_s / 2)
        self._producer = producer

    def close(self) -> None:
        """Flush and drop the producer."""
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(10)
            self._producer = None

    def topic(self) -> str:
        """The topic this writer produces to."""
        raise NotImplementedError

    def records(self, batch_id: int, rows: Sequence[Any]) -> Iterator[Record]:
        """``(key, value, headers)`` for each row."""
        raise NotImplementedError

    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Produce ``rows`` of ``batch_id`` once; returns how many were written.

        After a failed attempt the producer is replaced and the committed markers
        are read again first: a commit that timed out may still have succeeded,
        and must not be written twice.
        """
        from confluent_kafka import KafkaException

        try:
            if self._stale:
                # The broker may still be away: a failure here is retried like
                # one of the transaction below, with the producer still stale.
                self._new_producer()
                self._done = self._committed_batches()
                self._stale = False
        except KafkaException as err:
            raise _sink_error(self.name, err) from err
        if batch_id in self._done:
            return 0
        topic = self.topic()
        try:
            self._producer.begin_transaction()
            for key, value, headers in self.records(batch_id, rows):
                self._produce(topic, key, value, headers)
            self._produce(
                commits_topic(self.settings, topic),
                self.writer_id.encode(),
                str(batch_id).encode(),
                None,
            )
            self._producer.commit_transaction(self.wait_s)
        except KafkaException as err:
            self._stale = True
            if not err.args[0].fatal():
                with contextlib.suppress(KafkaException):
                    self._producer.abort_transaction(self.wait_s / 2)
            raise _sink_error(self.name, err) from err
        self._done.add(batch_id)
        return len(rows)

    def _produce(self, topic: str, key: Any, value: Any, headers: Any) -> None:
        """Produce, waiting for room in the local queue (big batches of bad input)."""
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _ensure_commits_topic(self) -> None:
        from learntrack.topics import create_topic

        create_topic(self.settings, commits_topic(self.settings, self.topic()), 1)

    def _committed_batches(self) -> set[int]:
        """Batch ids this writer already committed (read_committed, whole topic)."""
        from confluent_kafka import (
            OFFSET_BEGINNING,
            Consumer,
            KafkaError,
            TopicPartition,
        )

        consumer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": f"learntrack-{self.name}-markers-{self.writer_id}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
        done: set[int] = set()
        try:
            consumer.assign(
                [
                    TopicPartition(
                        commits_topic(self.settings, self.topic()), 0, OFFSET_BEGINNING
                    )
                ]
            )
            while True:
                msg = consumer.poll(10)
                if msg is None:
                    # Not having seen the end means the markers may be incomplete.
                    raise RetryableSinkError(f"{self.name} markers: no answer in 10 s")
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        break
                    raise RetryableSinkError(f"{self.name} markers: {err}")
                if msg.key() == self.writer_id.encode():
                    done.add(int(msg.value() or b"-1"))
        finally:
            consumer.close()
        return done

    def reset(self) -> None:
        """Empty the topic and forget the markers (``stream --reset`` starts over)."""
        from learntrack.topics import delete_topics, ensure_topics

        topic = self.topic()
        delete_topics(self.settings, [topic, commits_topic(self.settings, topic)])
        ensure_topics(self.settings)


def _sink_error(name: str, err: Any) -> FatalSinkError | RetryableSinkError:
    """A ``KafkaException`` as the sink contract's error: fatal only if Kafka says so.

    A fatal error means fenced by a newer writer, or broken: this producer cannot
    go on. Anything else (the broker away, a timeout) may pass on a retry.
    """
    error = err.args[0]
    return (FatalSinkError if error.fatal() else RetryableSinkError)(f"{name}: {error}")


class DeadLetterSink(TransactionalTopicSink):
    """Produces invalid records to the DLQ, one Kafka transaction per batch."""

    name = "dlq"
    takes = "invalid"

    def topic(self) -> str:
        """The dead-letter topic."""
        return self.settings.topics.dlq

    def records(self, batch_id: int, rows: Sequence[Any]) -> Iterator[Record]:
        """Each invalid record verbatim, with its reason and source in headers."""
        for r in rows:
            headers: list[tuple[str, str | bytes | None]] = [
                ("reason", str(r["reason"]).encode()),
                ("source.topic", str(r["topic"]).encode()),
                ("source.partition", str(r["partition"]).encode()),
                ("source.offset", str(r["offset"]).encode()),
                ("source.timestamp", str(r["kafkaTimestamp"]).encode()),
                ("batch", str(batch_id).encode()),
            ]
            yield r["key"], r["raw"], headers
