"""``leadscore features ...`` commands: list the schema, build the training dataset.

Heavy imports (pandas, numba) happen inside the commands so that ``leadscore --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from leadscore.cli_context import console, err_console, print_validation_report, settings_from

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.features.build import BuildSummary
    from leadscore.history import ValidationReport

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_features(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option(help="Only this group: fit or interest.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the schema as JSON instead of a table.")] = False,
) -> None:
    """Print the feature schema: name, dtype, group, description, explanation template."""
    from rich.table import Table

    from leadscore.features.rules import describe_rules
    from leadscore.features.schema import feature_schema, schema_hash

    settings = settings_from(ctx)
    if group not in (None, "fit", "interest"):
        raise typer.BadParameter("must be 'fit' or 'interest'", param_hint="--group")
    specs = [s for s in feature_schema(settings) if group is None or s.group == group]
    if json_out:
        typer.echo(json.dumps({"schema_hash": schema_hash(settings),
                               "features": [s.__dict__ for s in specs]}, indent=2))
        return
    table = Table(title=f"{len(specs)} features (schema hash {schema_hash(settings)})")
    for col in ("name", "dtype", "group", "description", "template"):
        table.add_column(col, overflow="fold")
    for s in specs:
        table.add_row(s.name, s.dtype, s.group, s.description, s.template)
    console.print(table)
    console.print("[bold]rule_score[/bold] (float64, the baseline points rule):")
    for line in describe_rules(settings):
        console.print(f"  {line}")


@app.command("build")
def build(
    ctx: typer.Context,
    crm: Annotated[str, typer.Option(help="CRM history: a directory (five tables, Parquet or CSV) or a database URL.")],
    out: Annotated[Path, typer.Option(help="Output Parquet file (features, rule_score, y_sql, y_opp).")],
    cutoff: Annotated[str | None, typer.Option(help="Data cut-off (UTC); default: manifest.json, else now.")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the build summary as JSON here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress display.")] = True,
    engine: Annotated[str, typer.Option(help="local (this process) or dask (a Dask cluster, part by part).")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="With --engine dask: the scheduler's address "
                                                  "(default: a LocalCluster on this machine).")] = None,
) -> None:
    """Build the training dataset: sampled moments, point-in-time features, rule score, censored labels."""
    from rich.table import Table

    from leadscore.features.build import build_dataset
    from leadscore.history import load_history

    settings = settings_from(ctx)
    if engine != "local" or scheduler is not None:
        summary = _build_dask(crm, out, cutoff, settings, engine, scheduler)
    else:
        history, report = load_history(crm, settings, cutoff=cutoff)
        _check_report(report, crm)
        frame, summary = build_dataset(history, settings, progress=progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out, index=False)
    table = Table(title=f"Features written to {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.to_dict().items():
        if key == "step_seconds":
            value = ", ".join(f"{k} {v:.2f}s" for k, v in value.items())  # type: ignore[attr-defined]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2))


def checked_engine(engine: str, scheduler: str | None) -> Any:
    """``--engine``/``--scheduler`` checked (a bad pair is a usage error, exit 2); the context manager
    that gives the command its Dask client, or None on the single-machine path."""
    from leadscore.features.dask_engine import check_engine, engine_client

    try:
        check_engine(engine, scheduler)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--engine") from None
    return engine_client


def _check_report(report: ValidationReport, crm: str) -> None:
    """Exit 1 on an unusable history (with the report); say how many rows were set aside."""
    if not report.usable:
        print_validation_report(report)
        err_console.print("[red]error:[/red] the CRM history is not usable (see above)")
        raise typer.Exit(1)
    rejected = sum(t.rejected_rows for t in report.tables.values())
    if rejected:
        console.print(f"[yellow]{rejected} invalid rows were set aside (run `leadscore validate {crm}` "
                      "for the report)[/yellow]")


def _build_dask(crm: str, out: Path, cutoff: str | None, settings: Settings, engine: str,
                scheduler: str | None) -> BuildSummary:
    """``--engine dask``: the parts built on the cluster, streamed into ``out`` in part order."""
    from leadscore.features.dask_engine import ParquetSink, build_dataset_dask
    engine_client = checked_engine(engine, scheduler)
    with engine_client(engine, scheduler) as client:
        sink = ParquetSink(out)
        try:
            build = build_dataset_dask(crm, settings, client, sink, cutoff=cutoff,
                                       on_step=lambda step: err_console.print(f"[dim]{step}[/dim]"))
        finally:
            sink.close()
    if not build.report.usable:
        out.unlink(missing_ok=True)
    _check_report(build.report, crm)
    return build.summary
