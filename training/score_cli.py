"""Batch scoring commands: ``leadscore score`` (every open lead, as of a time, to a file).

Heavy libraries are imported inside the command bodies so ``leadscore --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leadscore.cli_context import console, err_console, settings_from

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.config import Settings
    from leadscore.serving.store import EventStore


def _progress() -> tuple[object, object]:
    """A rich progress bar over the leads, fed chunk by chunk."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("scoring leads"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=False)
    task = progress.add_task("score", total=None)

    def on_chunk(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, on_chunk


class _Export:
    """``--format``/``--changed-only``: per chunk, drop the unchanged leads and shape the CRM's rows; at the
    end, remember what was exported (only once the whole file is written)."""

    def __init__(self, fmt: str | None, changed_only: bool, store: EventStore | None) -> None:
        self.fmt, self.changed_only = fmt, changed_only
        self.target = fmt or "file"
        self.kept = 0
        self._sent: list[pd.DataFrame] = []
        self.store = store if changed_only else None

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        from leadscore.training.export import changed, crm_frame, last_exported

        if self.store is not None:
            frame = changed(frame, last_exported(self.store, self.target, frame["lead_id"]))
            self._sent.append(frame[["lead_id", "stage", "p_sql"]])
            self.kept += len(frame)
        return frame if self.fmt is None else crm_frame(frame, self.fmt)  # type: ignore[arg-type]

    def finish(self) -> None:
        if self.store is None:
            return
        import pandas as pd

        from leadscore.training.export import record_exported

        if self._sent:
            record_exported(self.store, self.target, pd.concat(self._sent, ignore_index=True))


def open_store(settings: Settings, url: str | None, create: bool) -> EventStore | None:
    """The event store at ``url`` (default: the service's). Without ``create``, a default SQLite file that
    does not exist is None (no service has scored anything yet: every trend is ``new``), not a new file."""
    from sqlalchemy.engine import make_url

    from leadscore.serving.runtime import event_store_url
    from leadscore.serving.store import EventStore

    target = url or event_store_url(settings)
    parsed = make_url(target)
    if url is None and not create and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():
        return None
    return EventStore(target)


def _score_flat(settings: Settings, flat: Path, model: str | None, mapping: Path | None, out: Path,
                reasons: bool) -> None:
    """``score --flat``: a file that does not fit the mapping is a named error and exit code 2."""
    from leadscore.training.flat import load_mapping
    from leadscore.training.flat_score import FlatScoreError, score_flat

    if model is None:
        raise typer.BadParameter("give the flat model: --model models:/leadscore-flat-<name>@champion",
                                 param_hint="--model")
    try:
        summary = score_flat(flat, settings, out, model, load_mapping(mapping) if mapping else None, reasons)
    except FlatScoreError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"scored {summary.rows:,} rows of {flat} with {model} (version {summary.model_version}) into {out} "
                  f"({summary.seconds:.1f} s)")


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``scores export`` to the main app."""
    register_history(app)

    @app.command()
    def score(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv (one row per open lead).")],
        crm: Annotated[str | None, typer.Option(help="CRM history: a directory (five tables) or a database URL.")] = None,
        at: Annotated[str | None, typer.Option(help="Score as of this time (UTC; default: the data cut-off).")] = None,
        model: Annotated[str | None, typer.Option(help="Model URI (default: serving.model_uri, the champion).")] = None,
        bundle: Annotated[Path | None, typer.Option(help="Score with this bundle directory instead of the registry.")] = None,
        chunk_size: Annotated[int, typer.Option(min=100, help="Leads per chunk (bounds memory).")] = 20_000,
        fmt: Annotated[str | None, typer.Option("--format", help="Write a CRM import CSV instead: hubspot (contacts) "
                                                "or salesforce (Data Loader, Lead).")] = None,
        changed_only: Annotated[bool, typer.Option(help="Only leads whose stage or score band changed since the "
                                                   "previous export to this target (state in the event store).")] = False,
        store: Annotated[str | None, typer.Option(help="Event store URL (default: the service's): its score audit gives "
                                                  "each lead's trend and changes; --changed-only keeps its export state "
                                                  "there.")] = None,
        reasons: Annotated[bool, typer.Option(help="Word the top reasons (exact TreeSHAP).")] = True,
        accounts: Annotated[Path | None, typer.Option(help="Also write one row per account (.parquet or .csv): "
                                                      "P(opportunity at the account), buying-group coverage.")] = None,
        flat: Annotated[Path | None, typer.Option(help="Score the rows of this flat table with a flat model "
                                                  "(--model models:/leadscore-flat-<name>@champion).")] = None,
        mapping: Annotated[Path | None, typer.Option(help="With --flat: the mapping YAML (default: the one logged "
                                                     "with the model).")] = None,
        engine: Annotated[str, typer.Option(help="local (this process) or dask (a Dask cluster, part by "
                                                 "part).")] = "local",
        scheduler: Annotated[str | None, typer.Option(help="With --engine dask: the scheduler's address "
                                                      "(default: a LocalCluster on this machine).")] = None,
    ) -> None:
        """Score every open lead (not customer or disqualified) as the service would, into a file."""
        settings = settings_from(ctx)
        from leadscore.features.cli import checked_engine

        engine_client = checked_engine(engine, scheduler)
        if flat is not None and engine != "local":
            raise typer.BadParameter("--flat scores on this machine only", param_hint="--engine")
        if flat is not None:
            _score_flat(settings, flat, model, mapping, out, reasons)
            return
        if crm is None:
            err_console.print("[red]error:[/red] give --crm DIR (or --flat FILE --model URI)")
            raise typer.Exit(2)
        from leadscore.training.batch_score import score_crm
        from leadscore.training.threads import retain_freed_memory

        retain_freed_memory()  # each chunk's arrays reuse the last one's pages (training.threads)
        if fmt is not None and (fmt not in ("hubspot", "salesforce") or out.suffix.lower() != ".csv"):
            raise typer.BadParameter("--format is hubspot or salesforce, written to a .csv --out", param_hint="--format")
        event_store = open_store(settings, store, create=changed_only)
        if event_store is None:
            err_console.print("no event store yet: every lead's trend is new (--store names one)")
        export = _Export(fmt, changed_only, event_store)
        progress, on_chunk = _progress()
        try:
            with engine_client(engine, scheduler) as client, progress:  # type: ignore[attr-defined]
                summary = score_crm(crm, settings, out, at=at, model_uri=model, bundle_dir=bundle, chunk_size=chunk_size,
                                    on_chunk=on_chunk, reasons=reasons, trail=event_store,  # type: ignore[arg-type]
                                    accounts_out=accounts, client=client,
                                    transform=export.transform if fmt is not None or changed_only else None)
            export.finish()
        finally:
            if event_store is not None:
                event_store.close()
        if changed_only:
            console.print(f"{export.kept:,} of the scored leads changed stage or score band since the last export "
                          f"to {export.target}")
        console.print(f"scored {summary.rows:,} open leads as of {summary.as_of.isoformat()} with model version "
                      f"{summary.model_version} into {out} ({summary.closed:,} closed and {summary.not_created:,} "
                      f"not yet created skipped; {summary.seconds:.1f} s)")
        if accounts is not None:
            console.print(f"account scores and buying-group coverage written to {accounts}")


def register_history(app: typer.Typer) -> None:
    """Add ``scores export`` to the main app."""
    scores_app = typer.Typer(help="The service's score audit trail.", no_args_is_help=True)

    @scores_app.command("export")
    def export(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv (one row per audited score).")],
        since: Annotated[str | None, typer.Option(help="Only scores of moments at or after this time (UTC).")] = None,
        lead: Annotated[str | None, typer.Option(help="Only this lead's scores.")] = None,
        store: Annotated[str | None, typer.Option(help="Event store URL (default: the service's).")] = None,
    ) -> None:
        """Export the scores the service answered with, each with its trend and changes."""
        import pandas as pd

        from leadscore.training.scores_export import export_scores

        settings = settings_from(ctx)
        start = None
        if since is not None:
            try:
                start = pd.Timestamp(since)
            except ValueError as exc:
                raise typer.BadParameter(f"not a time: {exc}", param_hint="--since") from None
            start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        event_store = open_store(settings, store, create=False)
        if event_store is None:
            err_console.print("[red]error:[/red] no event store at the service's default URL (give --store)")
            raise typer.Exit(2)
        try:
            rows = export_scores(event_store, out, since=start, lead=lead)
        finally:
            event_store.close()
        console.print(f"exported {rows:,} scores into {out}")

    app.add_typer(scores_app, name="scores")


def register_sync(app: typer.Typer) -> None:
    """Add ``sync hubspot`` to the main app."""
    sync_app = typer.Typer(help="Push changed scores to a CRM through an outbox that never loses a batch.",
                           no_args_is_help=True)

    @sync_app.command("hubspot")
    def hubspot(
        ctx: typer.Context,
        scores: Annotated[Path, typer.Option(help="Scores written by leadscore score (.parquet or .csv).")],
        store: Annotated[str | None, typer.Option(help="Event store URL (export state, outbox); default: the service's.")] = None,
        token_env: Annotated[str, typer.Option(help="Environment variable holding the private app token.")] = "HUBSPOT_ACCESS_TOKEN",
        host: Annotated[str | None, typer.Option(help="API base URL (default https://api.hubapi.com).")] = None,
        retries: Annotated[int, typer.Option(min=0, help="Retries per batch on 429/5xx (with backoff).")] = 5,
    ) -> None:
        """Send the contacts whose stage or score band changed (batch update, 100 per call)."""
        import os

        from leadscore.serving.runtime import event_store_url
        from leadscore.serving.store import EventStore
        from leadscore.training.score_files import read_scores
        from leadscore.training.sync_hubspot import SyncError, sync_hubspot

        settings = settings_from(ctx)
        token = os.environ.get(token_env)
        if not token:
            raise SyncError(f"no HubSpot token: set {token_env} to a private app's access token")
        event_store = EventStore(store or event_store_url(settings))
        try:
            summary = sync_hubspot(event_store, read_scores(scores), token=token, host=host, retries=retries)
        finally:
            event_store.close()
        console.print(f"HubSpot: {summary.contacts:,} contacts updated in {summary.sent} batches "
                      f"({summary.queued} queued by this run); {summary.failed} batches kept in the outbox")
        for line in summary.errors:
            err_console.print(f"[yellow]{line}[/yellow]")
        if summary.failed:
            raise typer.Exit(1)

    app.add_typer(sync_app, name="sync")
