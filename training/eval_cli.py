"""``leadscore evaluate ...``: evaluation on public lead datasets (X Education, Olist) or on a user's flat file.

``leadscore evaluate --flat FILE --mapping M --protocol chrono|random|both`` runs the shared datasets'
protocols on any flat table and writes the same report (one per protocol).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leadscore.cli_context import console, settings_from

if TYPE_CHECKING:
    from leadscore.training.evaluate import EvalResult

evaluate_app = typer.Typer(invoke_without_command=True,
                           help="Evaluate the flat-table path on public lead datasets, or on your own flat file "
                                "(--flat FILE --mapping M).")

TrialsOpt = Annotated[int | None, typer.Option(min=1, help="Optuna trials per fit (default: training.trials).")]
DataOpt = Annotated[Path | None, typer.Option(help="Shared data directory (default: $LEADSCORE_SHARED_DATA "
                                                   "or <repo>/../shared/data).")]
MappingOpt = Annotated[Path | None, typer.Option(help="Mapping YAML (default: configs/mappings/<dataset>.yaml).")]
OutOpt = Annotated[Path | None, typer.Option(help="Reports directory (default: paths.reports_dir).")]
BagOpt = Annotated[int | None, typer.Option(min=0, help="Fold models averaged inside each CV fold (default 5; "
                                                        "0 or 1: one model). Calibration is always fitted on "
                                                        "rows no model was fitted or stopped on.")]


def _show(result: EvalResult, out: Path) -> None:
    from rich.table import Table

    from leadscore.training.evaluate import REPORTED, label, write_report

    table = Table(title=f"{result.dataset}: {result.protocol} — {result.rows} rows, {result.positives} positive "
                        "(95% bootstrap CI)")
    table.add_column("model")
    for m in REPORTED:
        table.add_column(m, justify="right")
    for name, ms in result.metrics.items():
        table.add_row(label(name), *(f"{ms[m].value:.3f}\n[{ms[m].lo:.3f}, {ms[m].hi:.3f}]"
                                                 for m in REPORTED))
    console.print(table)
    auc = result.metrics["shipped"]["roc_auc"].value
    if result.goal_auc is not None:
        colour = "green" if result.goal_met else "yellow"
        console.print(f"[{colour}]goal ROC AUC >= {result.goal_auc}: {'met' if result.goal_met else 'not met'} "
                      f"({auc:.3f}; reference gradient boosting {result.reference_auc})[/{colour}]")
    for note in result.notes:
        console.print(f"- {note}")
    js, md = write_report(result, out)
    console.print(f"written: {js} and {md}")


def _run(ctx: typer.Context, dataset: str, trials: int | None, data_dir: Path | None, mapping: Path | None,
         out: Path | None, bag_folds: int | None = None) -> None:
    from leadscore.training.evaluate import evaluate_olist, evaluate_x_education

    settings = settings_from(ctx)
    if dataset == "x-education":
        result = evaluate_x_education(settings, trials=trials, data_dir=data_dir, mapping_file=mapping,
                                      **({} if bag_folds is None else {"bag_folds": bag_folds}))
    else:
        result = evaluate_olist(settings, trials=trials, data_dir=data_dir, mapping_file=mapping)
    _show(result, out or Path(settings.paths.reports_dir))


@evaluate_app.callback()
def flat_file(
    ctx: typer.Context,
    flat: Annotated[Path | None, typer.Option(help="Your flat lead table (CSV in any common delimiter and "
                                                   "encoding, or Parquet).")] = None,
    mapping: Annotated[Path | None, typer.Option(help="Its mapping YAML (with --flat).")] = None,
    protocol: Annotated[str, typer.Option(help="chrono (latest 20% of rows by time), random (stratified "
                                               "5-fold CV) or both.")] = "both",
    trials: TrialsOpt = None,
    out: OutOpt = None,
    bag_folds: BagOpt = None,
) -> None:
    """With --flat: evaluate your own flat file as the shared datasets are; otherwise pick a dataset."""
    from leadscore.training.evaluate import PROTOCOLS

    if ctx.invoked_subcommand is not None:
        if flat is not None:
            raise typer.BadParameter("--flat evaluates a file; do not name a dataset as well", param_hint="--flat")
        return
    if flat is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)
    if mapping is None:
        raise typer.BadParameter("--flat needs --mapping (the YAML saying what each column is)", param_hint="--mapping")
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"one of {', '.join(PROTOCOLS)}", param_hint="--protocol")
    from leadscore.training.evaluate import evaluate_flat

    settings = settings_from(ctx)
    for result in evaluate_flat(settings, flat, mapping, protocol=protocol, trials=trials,
                                **({} if bag_folds is None else {"bag_folds": bag_folds})):
        _show(result, out or Path(settings.paths.reports_dir))


@evaluate_app.command("x-education")
def x_education(ctx: typer.Context, trials: TrialsOpt = None, data_dir: DataOpt = None, mapping: MappingOpt = None,
                out: OutOpt = None, bag_folds: BagOpt = None) -> None:
    """X Education leads: stratified 5-fold CV without sales-entered and snapshot fields."""
    _run(ctx, "x-education", trials, data_dir, mapping, out, bag_folds)


@evaluate_app.command("olist")
def olist(ctx: typer.Context, trials: TrialsOpt = None, data_dir: DataOpt = None, mapping: MappingOpt = None,
          out: OutOpt = None) -> None:
    """Olist MQLs → won deals: chronological split, MQL-time fields only, censored recent MQLs."""
    _run(ctx, "olist", trials, data_dir, mapping, out)


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the main app."""
    app.add_typer(evaluate_app, name="evaluate")
