"""CLI commands of the query service: api, query, profile, alerts.

Runs in the user's terminal; :func:`register` is called by :mod:`learntrack.cli`.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer, query_app: typer.Typer) -> None:
    """Add this stage's commands to ``app`` and ``query_app`` (none yet)."""
