"""How well the stream's multi-region alerts match the generator's injected anomalies.

Runs in the CLI (``learntrack eval fraud --truth FILE``) and in tests; reads MongoDB
``alerts`` only. Definitions:

- an alert is *true* when its student carries an injected anomaly (students without
  one, legitimate travellers included, never act from two regions within the
  window: the generator keeps travel hours away);
- *precision* = true alerts / alerts; *recall* = anomalies with at least one alert /
  anomalies;
- *kind agreement*: detected anomalies whose first alert has the injected kind (the
  kind is a heuristic of the gap, see :func:`learntrack.streaming.detect.classify`);
- *detection latency*: ``detectedAt - ingestedAt`` per alert, where ``ingestedAt``
  is the broker timestamp of the later-arriving of the two events and
  ``detectedAt`` the moment the alert was first written. It includes any backlog:
  measure it with the stream running while events are produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from learntrack.clients import mongo_client
from learntrack.config import Settings
from learntrack.sinks.alerts import ALERTS


@dataclass
class FraudReport:
    """The evaluation's figures (JSON-ready via ``__dict__``)."""

    anomalies: int
    alerts: int
    true_alerts: int
    detected: int
    precision: float
    recall: float
    kind_agreement: float
    evidence_matches: int
    latency_s: dict[str, float] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)
    false_students: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` (0..100) percentile, nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def evaluate(alerts: list[dict[str, Any]], truth: dict[str, Any]) -> FraudReport:
    """Compare alert documents with the truth's anomalies (pure)."""
    injected = {a["studentId"]: a for a in truth["anomalies"]}
    true_alerts = [a for a in alerts if a["studentId"] in injected]
    first_alert: dict[str, dict[str, Any]] = {}
    for a in sorted(true_alerts, key=lambda a: (a["timestamp"], a["alertId"])):
        first_alert.setdefault(a["studentId"], a)
    agree = sum(
        1 for sid, a in first_alert.items() if a["kind"] == injected[sid]["kind"]
    )
    evidence = 0
    for a in true_alerts:
        anomaly = injected[a["studentId"]]
        planted = {anomaly["homeEventId"], *anomaly["foreignEventIds"]}
        if {a["first"]["eventId"], a["second"]["eventId"]} & planted:
            evidence += 1
    latencies = [
        (a["detectedAt"] - a["ingestedAt"]).total_seconds()
        for a in alerts
        if a.get("detectedAt") and a.get("ingestedAt")
    ]
    return FraudReport(
        anomalies=len(injected),
        alerts=len(alerts),
        true_alerts=len(true_alerts),
        detected=len(first_alert),
        precision=len(true_alerts) / len(alerts) if alerts else 1.0,
        recall=len(first_alert) / len(injected) if injected else 1.0,
        kind_agreement=agree / len(first_alert) if first_alert else 1.0,
        evidence_matches=evidence,
        latency_s={
            name: percentile(latencies, q)
            for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
        missed=sorted(set(injected) - set(first_alert)),
        false_students=sorted({a["studentId"] for a in alerts} - set(injected)),
    )


def evaluate_stored(settings: Settings, truth: dict[str, Any]) -> FraudReport:
    """Evaluate the alerts in MongoDB against ``truth``."""
    with mongo_client(settings) as client:
        alerts = list(client[settings.mongo.database][ALERTS].find({}))
    return evaluate(alerts, truth)
