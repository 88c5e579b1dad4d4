"""The sink contract every store writer follows.

A sink is built from picklable settings and holds no client until
:meth:`Sink.open`, which runs where the writing happens. Every write is idempotent:
replaying a batch with the same ``batch_id`` (which Spark does after a crash inside
``foreachBatch``) changes nothing, either because rows carry their own key
(eventId) or because the write is fenced by the batch id in the same transaction.

The stream's sinks follow :class:`StreamSink`, which adds *where* a sink runs and
the split of a batch into write and commit (Spark's own data-source writers have the
same split):

- an **executor** sink's :meth:`StreamSink.write_part` runs inside every task of the
  batch's one Spark job, on that task's Kafka partition as columns
  (:class:`Part`); whatever it returns travels to the driver, where
  :meth:`StreamSink.commit` sees what every task returned (the lake moves its
  staged files into place there);
- a **driver** sink gets, once per batch, the rows the tasks emitted under its
  :attr:`StreamSink.takes` (the dead letters, the alerts) through
  :meth:`Sink.write_batch`.

The stream's topology (:data:`learntrack.streaming.fanout.TOPOLOGY`) lists the sinks in
order; adding a sink is one class and one line there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from learntrack.sinks.fold import StudentBatch

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


def map_value(value: Any) -> Any:
    """An Arrow map column's value as a dict (pyarrow gives (key, value) pairs)."""
    return dict(value) if isinstance(value, list) else value


class Runs(StrEnum):
    """Where a stream sink writes."""

    EXECUTOR = "executor"
    DRIVER = "driver"


@dataclass
class Part:
    """One task's share of a micro-batch, as an executor sink sees it.

    ``events`` are the partition's valid events that no earlier batch stored, one
    copy each, as columns (name -> values, the event model's fields plus
    ``partition``, ``offset`` and ``kafkaTimestamp``), in (partition, offset)
    order. Kafka keys every record by its studentId (the parser refuses any other
    key), so a task holds every event of its students in the batch: per-student
    folds need no shuffle. ``students`` is that fold, computed once per task and
    shared by the sinks that need it.
    """

    batch_id: int
    partition: int
    events: dict[str, list[Any]]
    #: Event-time watermark of the batch per Kafka partition (epoch ms): events
    #: older than their partition's are late. A partition not in it: 0.
    watermarks: dict[int, int] = field(default_factory=dict)
    students: dict[str, StudentBatch] = field(default_factory=dict)
    #: Events left out because another copy of them counts (see :meth:`drop`).
    dropped: int = 0

    def __len__(self) -> int:
        """Number of events."""
        return len(self.events.get("eventId", ()))

    def drop(self, event_ids: set[str]) -> None:
        """Leave these events out of every later sink (another copy counts)."""
        keep = [i for i, e in enumerate(self.events["eventId"]) if e not in event_ids]
        self.dropped += len(self) - len(keep)
        self.events = {k: [v[i] for i in keep] for k, v in self.events.items()}

    def rows(self) -> list[dict[str, Any]]:
        """The events as dicts (for stores whose drivers take documents)."""
        names = list(self.events)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*self.events.values(), strict=True)
        ]


class StreamSink(Sink):
    """A sink of the stream's fan-out: says where it runs and how a batch commits.

    Subclasses set :attr:`runs_on`. Executor sinks implement :meth:`write_part`
    (and :meth:`commit` if the batch needs a last step on the driver); driver sinks
    set :attr:`takes` and implement :meth:`Sink.write_batch`. Errors are classified
    by the sink: :class:`~learntrack.errors.RetryableSinkError` (retried with
    backoff, in the task and then for the whole batch) or
    :class:`~learntrack.errors.FatalSinkError` (stops the query).
    """

    runs_on: ClassVar[Runs]
    #: Driver sinks: the kind of rows the tasks emit for them.
    takes: ClassVar[str] = ""
    #: Executor sinks: the kind of rows :meth:`write_part` returns for driver sinks.
    emits: ClassVar[str] = ""

    @classmethod
    def decode(cls, emitted: list[Any]) -> list[Any]:
        """Driver: what the tasks returned (JSON) -> the rows driver sinks take."""
        return emitted

    @classmethod
    def enabled(cls, settings: Settings) -> bool:  # noqa: ARG003 - a hook
        """Whether the stream runs this sink with ``settings``."""
        return True

    def prepare(self, batch_id: int) -> None:  # noqa: B027 - optional hook
        """Driver, before the batch's tasks run (the lake empties its staging)."""

    def write_part(self, part: Part) -> list[Any]:
        """Write one task's share (executor); return rows for :meth:`commit`."""
        self.write_batch(part.batch_id, part.rows())
        return []

    def commit(self, batch_id: int, emitted: list[Any]) -> None:  # noqa: B027
        """After every task of ``batch_id`` wrote (driver); ``emitted``: their rows."""
