"""Batch scoring commands: ``leadscore score`` (every open lead, as of a time, to a file).

Heavy libraries are imported inside the command bodies so ``leadscore --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadscore.cli_context import console, err_console, settings_from


def _progress() -> tuple[object, object]:
    """A rich progress bar over the leads, fed chunk by chunk."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("scoring leads"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=False)
    task = progress.add_task("score", total=None)

    def on_chunk(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, on_chunk


def register(app: typer.Typer) -> None:
    """Add ``score`` to the main app."""

    @app.command()
    def score(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv (one row per open lead).")],
        crm: Annotated[str | None, typer.Option(help="CRM history: a directory (five tables) or a database URL.")] = None,
        at: Annotated[str | None, typer.Option(help="Score as of this time (UTC; default: the data cut-off).")] = None,
        model: Annotated[str | None, typer.Option(help="Model URI (default: serving.model_uri, the champion).")] = None,
        bundle: Annotated[Path | None, typer.Option(help="Score with this bundle directory instead of the registry.")] = None,
        chunk_size: Annotated[int, typer.Option(min=100, help="Leads per chunk (bounds memory).")] = 20_000,
    ) -> None:
        """Score every open lead (not customer or disqualified) as the service would, into a file."""
        settings = settings_from(ctx)
        if crm is None:
            err_console.print("[red]error:[/red] give --crm DIR")
            raise typer.Exit(2)
        from leadscore.training.batch_score import score_crm

        progress, on_chunk = _progress()
        with progress:  # type: ignore[attr-defined]
            summary = score_crm(crm, settings, out, at=at, model_uri=model, bundle_dir=bundle, chunk_size=chunk_size,
                                on_chunk=on_chunk)  # type: ignore[arg-type]
        console.print(f"scored {summary.rows:,} open leads as of {summary.as_of.isoformat()} with model version "
                      f"{summary.model_version} into {out} ({summary.closed:,} closed and {summary.not_created:,} "
                      f"not yet created skipped; {summary.seconds:.1f} s)")
