"""Training commands: train, promote, rollback, thresholds, report, evaluate."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the training commands to the main app."""
