"""The producer SDK that course apps embed to publish activity events.

Runs in the course app's process. ``send`` validates the event synchronously against
the one event model (a bad event raises :class:`EventValidationError` naming the
field) and returns without waiting for the broker; delivery happens in the
background with batching, compression and the idempotent producer (``acks=all``).
Every delivery failure is surfaced: counted, kept in :attr:`ActivityProducer.failures`,
passed to ``on_error``, and raised by :meth:`ActivityProducer.flush`. Safe to share
between threads.

Example::

    from learntrack.producers import ActivityProducer

    with ActivityProducer() as producer:          # settings from LEARNTRACK_* / .env
        producer.send({
            "studentId": "S42", "courseId": "BD101", "action": "quiz_attempt",
            "timestamp": "2026-11-22T10:15:00+01:00", "region": "EU", "score": 0.8,
        })
    # leaving the block flushes: raises DeliveryError if anything was not delivered
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from pydantic import ValidationError

from learntrack.config import Settings, get_settings
from learntrack.errors import LearnTrackError
from learntrack.events import ActivityEvent, describe_error

log = logging.getLogger(__name__)


class ProducerError(LearnTrackError):
    """Base class of the SDK's errors."""


class EventValidationError(ProducerError, ValueError):
    """The event does not satisfy the contract; the message names the field(s)."""


class QueueFullError(ProducerError):
    """The local send queue stayed full for the configured wait: slow down or flush."""


class DeliveryError(ProducerError):
    """One or more messages were not delivered (broker down, timeout, rejected)."""

    def __init__(self, failures: list[DeliveryFailure], total: int) -> None:
        """Summarise ``total`` failures, the first of which are in ``failures``."""
        first = failures[0].reason if failures else "unknown"
        super().__init__(f"{total} message(s) not delivered; first: {first}")
        self.failures = failures
        self.total = total


class FlushTimeoutError(ProducerError):
    """Messages were still queued when ``flush`` timed out."""


@dataclass(frozen=True)
class DeliveryFailure:
    """A message the broker did not acknowledge.

    ``value`` is the exact payload (with its eventId): to retry, re-send it with
    :meth:`ActivityProducer.send_serialized` (or re-send the model ``send``
    returned). Never rebuild the event: a new eventId would count it twice if the
    first attempt did land after all.
    """

    key: str | None
    reason: str
    retriable: bool
    value: bytes | None = None


ErrorCallback = Callable[[DeliveryFailure], None]


def producer_config(settings: Settings) -> dict[str, Any]:
    """The client settings of every LearnTrack producer: idempotent, ``acks=all``.

    Used by :class:`ActivityProducer` (in the producing process) and by the raw
    broker benchmark, so both measure the same client.
    """
    p = settings.producer
    return {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": p.linger_ms,
        "compression.type": p.compression,
        "delivery.timeout.ms": p.delivery_timeout_ms,
        "queue.buffering.max.messages": p.queue_max_messages,
        "batch.num.messages": 10_000,
        # Same key -> same partition as Java clients (Kafka's default murmur2).
        "partitioner": "murmur2_random",
    }


class ActivityProducer:
    """Publishes activity events to ``learntrack.activity``, keyed by studentId.

    Create one per process and share it between threads; close it (or use it as a
    context manager) on shutdown.
    """

    MAX_KEPT_FAILURES = 1000

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topic: str | None = None,
        on_error: ErrorCallback | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Connect lazily to the configured brokers.

        Args:
            settings: LearnTrack settings; built from the environment when omitted.
            topic: destination topic; default ``settings.topics.activity``.
            on_error: called (from the SDK's delivery thread) for every failure.
            config: extra librdkafka settings, applied last.
        """
        from confluent_kafka import Producer

        self.settings = settings or get_settings()
        self.topic = topic or self.settings.topics.activity
        self._context = self.settings.event_context()
        self._on_error = on_error
        conf = {**producer_config(self.settings), **(config or {})}
        self._producer = Producer(conf)
        self._lock = threading.Lock()
        self._failures: deque[DeliveryFailure] = deque(maxlen=self.MAX_KEPT_FAILURES)
        self._unreported = 0
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self._closed = False
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="learntrack-producer-poll", daemon=True
        )
        self._poller.start()

    # -- sending --------------------------------------------------------------
    def validate(self, event: ActivityEvent | Mapping[str, Any]) -> ActivityEvent:
        """Check ``event`` against the contract; fill eventId; return the model."""
        try:
            if isinstance(event, ActivityEvent):
                # Re-validate: the instance may come from another configuration.
                return ActivityEvent.model_validate(
                    event.model_dump(), context=self._context
                )
            return ActivityEvent.model_validate(dict(event), context=self._context)
        except ValidationError as err:
            raise EventValidationError(describe_error(err)) from err

    def send(self, event: ActivityEvent | Mapping[str, Any]) -> ActivityEvent:
        """Validate ``event`` now and queue it for delivery; returns without waiting.

        Returns the validated event (with its eventId). Raises
        :class:`EventValidationError` for an invalid event and :class:`QueueFullError`
        when the local queue stays full for ``producer.queue_full_timeout_s``.
        """
        model = self.validate(event)
        self.send_serialized(model.studentId, model.to_json())
        return model

    def send_many(
        self, events: Iterable[ActivityEvent | Mapping[str, Any]]
    ) -> list[ActivityEvent]:
        """Validate every event first, then queue them all; all or none are queued.

        An invalid event raises :class:`EventValidationError` naming its index.
        """
        models = []
        for index, event in enumerate(events):
            try:
                models.append(self.validate(event))
            except EventValidationError as err:
                msg = f"event #{index}: {err}"
                raise EventValidationError(msg) from err
        for model in models:
            self.send_serialized(model.studentId, model.to_json())
        return models

    def send_serialized(self, key: str | bytes | None, value: bytes) -> None:
        """Queue an already-serialized record, unvalidated.

        For trusted producers that validated upstream (the load generator, the
        importer, the dead-letter writer). Course apps use :meth:`send`. A record
        the client refuses outright (larger than ``message.max.bytes``, 1 MB by
        default) raises :class:`ProducerError`; the broker's refusals are delivery
        failures.
        """
        from confluent_kafka import KafkaException

        if self._closed:
            msg = "producer is closed"
            raise ProducerError(msg)
        deadline = time.monotonic() + self.settings.producer.queue_full_timeout_s
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except KafkaException as err:
                # Refused before queueing, e.g. larger than message.max.bytes.
                msg = f"not queued ({len(value):,} bytes): {err.args[0].str()}"
                raise ProducerError(msg) from err
            except BufferError:
                if time.monotonic() >= deadline:
                    wait = self.settings.producer.queue_full_timeout_s
                    msg = (
                        f"local queue full for {wait} s: the broker is slow or down;"
                        " slow down or flush()"
                    )
                    raise QueueFullError(msg) from None
                self._producer.poll(0.05)
        with self._lock:
            self.sent += 1

    # -- delivery -------------------------------------------------------------
    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            with self._lock:
                self.delivered += 1
            return
        key = msg.key()
        failure = DeliveryFailure(
            key=key.decode("utf-8", "replace") if key is not None else None,
            reason=str(err.str() if hasattr(err, "str") else err),
            retriable=bool(getattr(err, "retriable", lambda: False)()),
            value=msg.value(),
        )
        with self._lock:
            self.failed += 1
            self._unreported += 1
            self._failures.append(failure)
        log.error(
            "activity event not delivered (key=%s): %s", failure.key, failure.reason
        )
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:  # the app's callback must not kill delivery
                log.exception("on_error callback raised")

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    @property
    def failures(self) -> list[DeliveryFailure]:
        """The most recent delivery failures (at most :attr:`MAX_KEPT_FAILURES`)."""
        with self._lock:
            return list(self._failures)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is delivered or failed.

        Raises :class:`DeliveryError` if any message failed since the last flush,
        :class:`FlushTimeoutError` if messages are still queued after ``timeout``.
        """
        remaining = self._producer.flush(timeout)
        with self._lock:
            unreported, self._unreported = self._unreported, 0
            failures = (
                list(self._failures)[-min(unreported, 10) :] if unreported else []
            )
        if unreported:
            raise DeliveryError(failures, unreported)
        if remaining:
            msg = f"{remaining} message(s) still queued after {timeout} s"
            raise FlushTimeoutError(msg)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the delivery thread. Idempotent."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._stop.set()
            self._poller.join(timeout=2)

    def __enter__(self) -> Self:
        """Use as ``with ActivityProducer() as producer:``."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Flush and close; delivery failures raise unless already unwinding."""
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except ProducerError:
            log.exception("while closing the producer after an error")
