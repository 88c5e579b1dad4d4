"""Bench section ``producers``: what one producer process publishes.

Runs in the ``learntrack bench`` process against the bench stack's broker: one
load-generator process publishing pre-generated events, and the validating SDK
path course apps use (pydantic validation per event).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.core import BenchContext, Figure, Section
from learntrack.config import Settings

BENCH_TOPIC = "learntrack.bench"


def _fresh_topic(settings: Settings) -> None:
    """(Re)create the bench topic so runs don't pile data on the broker."""
    from learntrack.topics import create_topic, delete_topics

    delete_topics(settings, [BENCH_TOPIC])
    create_topic(settings, BENCH_TOPIC, settings.kafka.partitions, retention_ms=600_000)


def _publish_rates(
    settings: Settings, runs: int, count: int, body: Callable[[Any], object]
) -> list[float]:
    """Records/s of ``body(producer)`` publishing ``count`` records, until delivered."""
    from learntrack.producers import ActivityProducer

    rates = []
    for _ in range(runs):
        _fresh_topic(settings)
        with ActivityProducer(settings, topic=BENCH_TOPIC) as producer:
            started = time.perf_counter()
            body(producer)
            producer.flush(120)
            rates.append(count / (time.perf_counter() - started))
    return rates


def bench_generator(settings: Settings, events: int, runs: int) -> Figure:
    """One generator process: serialize + publish (acks=all, idempotent), delivered."""
    from learntrack.producers.generator import Generator, GeneratorConfig, publish

    data = Generator(GeneratorConfig(students=5000, events=events, seed=1)).build()
    rates = _publish_rates(
        settings, runs, len(data.order), lambda p: publish(data, p.send_serialized)
    )
    return Figure.of(
        "generator publish (one process, delivered)",
        "events/s",
        rates,
        "serialization + produce + delivery reports; events pre-generated",
    )


def bench_sdk_send(settings: Settings, events: int, runs: int) -> Figure:
    """The course-app path: validate each event with the model, then publish."""
    from learntrack.producers.generator import Generator, GeneratorConfig, event_dict

    data = Generator(GeneratorConfig(students=1000, events=events, seed=2)).build()
    dicts = [event_dict(e) for e in data.events]

    def send_all(producer: Any) -> None:
        for d in dicts:
            producer.send(d)

    rates = _publish_rates(settings, runs, len(dicts), send_all)
    return Figure.of(
        "SDK send() with validation (one thread)",
        "events/s",
        rates,
        "pydantic validation + JSON + produce, per event",
    )


def run(ctx: BenchContext) -> Section:
    """Generator and SDK publish rates."""
    gen_events = 50_000 if ctx.quick else 300_000
    sdk_events = 10_000 if ctx.quick else 60_000
    section = Section("producers", "Producers: one process publishing")
    section.figures = [
        bench_generator(ctx.settings, gen_events, ctx.runs),
        bench_sdk_send(ctx.settings, sdk_events, ctx.runs),
    ]
    _fresh_topic(ctx.settings)  # leave the broker small
    return section
