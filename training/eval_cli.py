"""``leadscore evaluate ...``: evaluation on public lead datasets."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the main app."""
