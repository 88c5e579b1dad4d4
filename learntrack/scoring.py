"""The engagement score, as pure arithmetic shared by the sinks, truth and tests.

A student's score at time ``T`` is ``sum(w(action) * 0.5 ** ((T - t) / half_life))``
over their events at event times ``t``. To keep updates order-free and additive (so a
stream can add events in any order and a replay can be fenced), we store the score
*anchored* at a fixed epoch: ``anchor = sum(w * 2 ** ((t - EPOCH) / half_life))`` and
read it as ``anchor * 2 ** (-(T - EPOCH) / half_life)``. Runs anywhere.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

#: Anchor epoch. 2 ** ((t - EPOCH) / h) overflows a double after 1024 half-lives:
#: ~19.6 years with the default 7-day half-life, ~2.8 years with the minimum of one
#: day (settings refuse shorter). Re-anchoring (divide every stored score by
#: 2 ** (shift / h) and move EPOCH) is the way past that.
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def anchored(weight: float, event_time: dt.datetime, half_life_s: float) -> float:
    """One event's contribution to the anchored score."""
    exponent = (event_time - EPOCH).total_seconds() / half_life_s
    return weight * math.pow(2.0, exponent)


def score_at(anchor: float, as_of: dt.datetime, half_life_s: float) -> float:
    """Read an anchored score as the decayed score at ``as_of``."""
    exponent = -(as_of - EPOCH).total_seconds() / half_life_s
    return anchor * math.pow(2.0, exponent)


def weight_of(action: str, weights: Mapping[str, float]) -> float:
    """The configured weight of ``action`` (0 when it has none)."""
    return float(weights.get(action, 0.0))
