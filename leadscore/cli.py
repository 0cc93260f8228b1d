"""The ``leadscore`` command line: a thin Typer layer over plain functions.

Global options (``--config``, ``--set``) come before the command and build the one typed config
tree that every command receives explicitly. Each package registers its own commands; their
modules import heavy libraries inside the command bodies so that ``leadscore --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from leadscore.cli_context import ErrorBoundaryGroup, State, console, print_validation_report, settings_from
from leadscore.env import set_offline_env
from leadscore.training.threads import configure_openmp

app = typer.Typer(
    name="leadscore",
    cls=ErrorBoundaryGroup,
    help="ML lead scoring and qualification: generate or import CRM history, build point-in-time "
    "features, train calibrated models, set SLA stages, serve scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config directory (default: ./configs or $LEADSCORE_CONFIG_DIR).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set training.trials=5 (repeatable)."),
    ] = None,
) -> None:
    """Global options shared by every command."""
    set_offline_env()
    configure_openmp()  # before numba or LightGBM loads the OpenMP runtime (training.threads)
    ctx.obj = State(config, list(set_ or []))


@app.command()
def generate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory to write the CRM tables into.")],
    leads: Annotated[int, typer.Option(min=10, help="Number of leads.")] = 5000,
    months: Annotated[int, typer.Option(min=1, max=120, help="Months of history.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    end: Annotated[str, typer.Option(help="Data cut-off (UTC date); history ends here.")] = "2026-11-01",
    scenario: Annotated[
        str,
        typer.Option(help="default, or regime-shift: the last months convert several-fold more, come from "
                     "accounts larger than any before, and one activity type changes meaning."),
    ] = "default",
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="Write <table>/part-NNNNN.parquet files in N parts, each holding whole accounts "
                     "with all their leads' rows (default: one <table>.parquet per table up to 100,000 leads, "
                     "above that one part per 100,000 leads). The rows are the same for any N."),
    ] = None,
) -> None:
    """Write a realistic generated B2B CRM history, with the ground truth it knows.

    Streamed block by block, so memory stays bounded (about 1-2 GB) whatever ``--leads``."""
    from leadscore.generate import generate_crm
    from leadscore.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}", param_hint="--scenario")
    summary = generate_crm(out, n_leads=leads, months=months, seed=seed, settings=settings_from(ctx), end=end,
                           scenario=SCENARIOS[scenario], partitions=partitions)
    table = Table(title=f"Generated CRM in {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def validate(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(help="The five CRM tables: a directory (Parquet or CSV) or a database URL.")],
    cutoff: Annotated[str | None, typer.Option(help="Data cut-off (default: manifest.json, else now).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Validate CRM history: counts per table and reason; rejected rows go to DIR/_rejected/."""
    from leadscore.history import load_history

    _, report = load_history(directory, settings_from(ctx), cutoff=cutoff)
    print_validation_report(report)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
    if not report.usable:
        raise typer.Exit(1)


def _register_subcommands() -> None:
    """Mount the commands each package owns (their modules keep heavy imports inside commands)."""
    from leadscore.features.cli import app as features_app
    from leadscore.importers.cli import app as import_app
    from leadscore.serving.cli import register as register_serving
    from leadscore.training.cli import register as register_training
    from leadscore.training.eval_cli import register as register_evaluation
    from leadscore.training.score_cli import register as register_scoring
    from leadscore.training.score_cli import register_sync
    from leadscore.training.sla_cli import register as register_sla

    app.add_typer(features_app, name="features", help="Point-in-time features, rule score and labels.")
    app.add_typer(import_app, name="import", help="Import CRM exports (HubSpot, Salesforce) as CRM tables.")
    register_training(app)
    register_sla(app)
    register_evaluation(app)
    register_serving(app)
    register_scoring(app)
    register_sync(app)


_register_subcommands()
