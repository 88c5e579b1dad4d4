"""The sink contract every store writer follows.

A sink is built on the driver from picklable settings and holds no client until
:meth:`Sink.open`, which runs where the writing happens (on an executor inside
``foreachPartition``, or on the driver for per-batch aggregates). Every write is
idempotent: replaying a batch with the same ``batch_id`` (which Spark does after a
crash inside ``foreachBatch``) changes nothing, either because rows carry their own
key (eventId) or because the write is fenced by the batch id in the same transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from learntrack.config import Settings


@dataclass(frozen=True)
class SinkStatus:
    """What ``status()`` reports (the API's /health shows it)."""

    name: str
    healthy: bool
    detail: str = ""


class Sink(ABC):
    """Write rows of one micro-batch to one store, idempotently."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        """Keep only picklable settings; clients are opened by :meth:`open`."""
        self.settings = settings

    @abstractmethod
    def open(self) -> None:
        """Connect (runs where the write runs; never in the constructor)."""

    @abstractmethod
    def write_batch(self, batch_id: int, rows: Sequence[Any]) -> int:
        """Write ``rows`` of batch ``batch_id``; return how many were applied.

        Raises :class:`learntrack.errors.RetryableSinkError` for failures that may
        pass (server down, timeout) and :class:`learntrack.errors.FatalSinkError`
        for the others.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the client."""

    def status(self) -> SinkStatus:
        """A cheap health probe; the default opens, checks, closes."""
        try:
            self.open()
            self.ping()
        except Exception as err:  # noqa: BLE001 - reported, not raised
            return SinkStatus(self.name, False, f"{type(err).__name__}: {err}"[:200])
        finally:
            self.close()
        return SinkStatus(self.name, True)

    def _release(self, attribute: str) -> None:
        """Close and forget the client held in ``attribute`` (idempotent)."""
        client = getattr(self, attribute, None)
        if client is not None:
            client.close()
            setattr(self, attribute, None)

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise if the store does not answer (after :meth:`open`)."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Delete everything the stream wrote here (``learntrack stream --reset``)."""

    def __enter__(self) -> Self:
        """Open on entry."""
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on exit."""
        self.close()
