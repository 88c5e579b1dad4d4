"""Producers: where an activity event is born.

Course apps publish through the producer SDK; demos, tests and benchmarks through the
synthetic load generator; existing xAPI records through the importer. Everything here
runs in the producing process and imports nothing downstream (no sinks, no streaming).
"""

from learntrack.producers.sdk import (
    ActivityProducer,
    DeliveryError,
    DeliveryFailure,
    EventValidationError,
    FlushTimeoutError,
    ProducerError,
    QueueFullError,
)

__all__ = [
    "ActivityProducer",
    "DeliveryError",
    "DeliveryFailure",
    "EventValidationError",
    "FlushTimeoutError",
    "ProducerError",
    "QueueFullError",
]
