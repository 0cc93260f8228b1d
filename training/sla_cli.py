"""SLA commands: ``leadscore thresholds`` and ``leadscore report sla``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the SLA commands to the main app."""
