"""SLA commands: ``leadscore thresholds`` (what-if) and ``leadscore report sla`` (the review report).

Both read a registered model version from MLflow: its scoring bundle (which holds the stage policy it
shipped with) and the scored calibration/test moments training logged with it, so a reviewer's what-if
and report are about exactly the model that would serve, not a retrained look-alike.
Heavy imports stay inside the command bodies so ``leadscore --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from leadscore.cli_context import console, err_console, settings_from

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.training.bundle import StagePolicy
    from leadscore.training.config import MQLPolicy


MODEL_HELP = "Registered model version to use (default: models:/<registered_model_name>@challenger)."


def _model_uri(model: str | None, settings: Settings) -> str:
    return model or f"models:/{settings.training.registered_model_name}@challenger"


def what_if_policy(
    settings: Settings,
    capacity: int | None,
    target_rate: float | None,
    value_of_sql: float | None,
    cost: float | None,
) -> MQLPolicy:
    """The MQL policy a reviewer asked for on the command line (the configured one if none).

    Exactly one kind may be asked for; a half-given expected-value policy is an error rather than a
    silent mix with the configured numbers, because the reviewer would read the wrong threshold.
    """
    from leadscore.training.config import MQLPolicy

    asked = [
        name
        for name, given in (
            ("--capacity", capacity is not None),
            ("--target-rate", target_rate is not None),
            ("--value-of-sql/--cost", value_of_sql is not None or cost is not None),
        )
        if given
    ]
    if len(asked) > 1:
        raise typer.BadParameter(f"choose one policy, not {' and '.join(asked)}")
    base = settings.sla.mql_policy.model_dump()
    if capacity is not None:
        return MQLPolicy.model_validate({**base, "kind": "capacity", "capacity_per_month": capacity})
    if target_rate is not None:
        return MQLPolicy.model_validate({**base, "kind": "target_rate", "target_rate": target_rate})
    if value_of_sql is not None or cost is not None:
        if value_of_sql is None or cost is None:
            raise typer.BadParameter("the expected-value policy needs both --value-of-sql and --cost")
        return MQLPolicy.model_validate(
            {**base, "kind": "expected_value", "value_of_sql": value_of_sql, "cost_of_follow_up": cost}
        )
    return settings.sla.mql_policy


def _ci(cell: dict[str, Any] | None, pct: bool = False) -> str:
    if not cell or cell.get("value") is None:
        return "n/a"

    def fmt(v: float) -> str:
        return f"{v * 100:.1f}%" if pct else f"{v:,.1f}"

    text = fmt(cell["value"])
    if cell.get("ci_low") is not None and cell.get("ci_high") is not None:
        text += f"  [{fmt(cell['ci_low'])}, {fmt(cell['ci_high'])}]"
    return text


def _value(cell: dict[str, Any] | None, pct: bool = False) -> str:
    """Point estimate only: the terminal summary stays narrow; the CIs are in the report."""
    return _ci({"value": (cell or {}).get("value")}, pct)


def print_policy(policy: StagePolicy, current: StagePolicy | None, title: str) -> None:
    """A reviewer-facing table: the what-if threshold and its expected outcomes, beside the shipped ones."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("what-if", justify="right")
    if current is not None:
        table.add_column("shipped with the model", justify="right")
    exp = policy.expected
    cur = current.expected if current is not None else {}
    rows: list[tuple[str, Any, Any]] = [
        ("MQL policy", policy.policy["mql"]["kind"], current.policy.get("mql", {}).get("kind") if current else None),
        ("MQL threshold on P(SQL)", f"{policy.mql_threshold:.4f}", f"{current.mql_threshold:.4f}" if current else None),
    ]
    for key, label, pct in (
        ("mqls_per_month", "MQLs per month", False),
        ("mql_to_sql_rate", "MQL→SQL rate", True),
        ("mql_to_opp_rate", "MQL→opportunity rate", True),
        ("sql_recall", "recall of eventual SQLs", True),
        ("median_days_to_mql", "median days creation→MQL", False),
    ):
        rows.append((label, _ci(exp["mql"].get(key), pct), _ci(cur.get("mql", {}).get(key), pct) if current else None))
    for month, cell in exp["mql"].get("by_month", {}).items():
        rows.append((f"  MQLs in {month}", _ci(cell), None))
    if "net_value_per_month" in exp:
        rows.append(("net value per month", f"{exp['net_value_per_month']:,.0f}", None))
    rows.append(("SQL threshold on P(opportunity)", f"{policy.sql_threshold:.4f}", None))
    rows.append(("rule score threshold", f"{policy.rule_mql_threshold:g}", None))
    rows.append(("rule: MQLs per month", _ci(exp["rule_mql"].get("mqls_per_month")), None))
    rows.append(("rule: MQL→SQL rate", _ci(exp["rule_mql"].get("mql_to_sql_rate"), True), None))
    for label, a, b in rows:
        cells = [label, str(a)]
        if current is not None:
            cells.append("" if b is None else str(b))
        table.add_row(*cells)
    console.print(table)
    note = policy.policy["mql"].get("note", "")
    met = policy.policy["mql"].get("met", True)
    console.print(("[green]" if met else "[yellow]policy not met: ") + note + ("[/green]" if met else "[/yellow]"))
    console.print(f"Fitted on months {', '.join(exp.get('months', []))} ({exp.get('leads')} leads); 95% CIs resample leads.")


def log_report_to_run(model_uri: str, files: list[Path], data: dict[str, Any], settings: Settings) -> str:
    """Attach the report files and its headline numbers to the MLflow run that produced ``model_uri``."""
    from mlflow import MlflowClient

    from leadscore.training.registry import run_id_of

    run_id = run_id_of(model_uri, settings)
    client = MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="sla_review")
    acc = data["acceptance"]
    for key in ("model_mql_to_sql_rate", "rule_mql_to_sql_rate", "ratio"):
        if acc.get(key) is not None:
            client.log_metric(run_id, f"sla_review.at_rule_volume.{key}", float(acc[key]))
    return str(run_id)


def register(app: typer.Typer) -> None:
    """Add ``leadscore thresholds`` and ``leadscore report sla`` to the main app."""

    report_app = typer.Typer(no_args_is_help=True, help="Reports for reviewers (SLA review).")

    @app.command()
    def thresholds(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
        capacity: Annotated[int | None, typer.Option(min=1, help="What if sales can follow up N MQLs a month?")] = None,
        target_rate: Annotated[
            float | None, typer.Option(min=0.0, max=1.0, help="What if the MQL→SQL rate must reach R?")
        ] = None,
        value_of_sql: Annotated[float | None, typer.Option(min=0.0, help="Value of one SQL (with --cost).")] = None,
        cost: Annotated[float | None, typer.Option(min=0.0, help="Cost of one MQL follow-up (with --value-of-sql).")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Also write the what-if policy as JSON here.")] = None,
    ) -> None:
        """What-if: the MQL threshold a policy gives on the model's calibration months, and what it promises."""
        settings = settings_from(ctx)
        policy_override = what_if_policy(settings, capacity, target_rate, value_of_sql, cost)
        uri = _model_uri(model, settings)
        from leadscore.errors import ModelError
        from leadscore.training.registry import load_bundle, load_scored
        from leadscore.training.replay import ScoredFrameError
        from leadscore.training.sla import fit_stage_policy
        try:
            bundle = load_bundle(uri, settings)  # bound: the what-if is about a model this code can serve
            calibration, _ = load_scored(uri, settings)
            policy = fit_stage_policy(calibration, settings, override=policy_override)
        except ScoredFrameError as exc:
            err_console.print(f"[red]error:[/red] scored calibration moments of {uri}: {exc}")
            raise typer.Exit(2) from exc
        except ModelError as exc:
            err_console.print(f"[red]error:[/red] cannot load {uri}: {exc}")
            raise typer.Exit(2) from exc
        print_policy(policy, bundle.stage_policy, f"MQL threshold what-if for {uri} (version {bundle.version})")
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(policy.model_dump_json(indent=2))

    @report_app.command("sla")
    def sla(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
        out: Annotated[Path, typer.Option(help="HTML file to write (the JSON goes beside it).")] = Path(
            "reports/sla-review.html"
        ),
        log: Annotated[bool, typer.Option("--log/--no-log", help="Attach the report to the model's MLflow run.")] = True,
    ) -> None:
        """SLA review: the model's MQL threshold vs the rule score's, replayed on the test months."""
        settings = settings_from(ctx)
        uri = _model_uri(model, settings)
        from leadscore.errors import ModelError
        from leadscore.training.registry import load_bundle, load_scored
        from leadscore.training.replay import ScoredFrameError
        from leadscore.training.report import build_sla_report
        try:
            bundle = load_bundle(uri, settings)  # bound: refuses a model of another feature schema
            calibration, test = load_scored(uri, settings)
        except ModelError as exc:
            err_console.print(f"[red]error:[/red] cannot load {uri}: {exc}")
            raise typer.Exit(2) from exc
        policy = bundle.stage_policy
        if policy is None:
            err_console.print(f"[red]error:[/red] {uri} was trained without a stage policy; retrain it")
            raise typer.Exit(2)
        try:
            data = build_sla_report(test, policy, settings, out, warmup=calibration)
        except ScoredFrameError as exc:
            err_console.print(f"[red]error:[/red] scored test moments of {uri}: {exc}")
            raise typer.Exit(2) from exc
        files = [out, out.with_suffix(".json")]
        acc = data["acceptance"]
        table = Table(title=f"SLA review of {uri} (version {bundle.version}), test months {', '.join(data['months'])}")
        for col in ("policy", "threshold", "MQLs/month", "MQL→SQL", "MQL→opp", "SQL recall", "opp recall"):
            table.add_column(col, justify="left" if col == "policy" else "right")
        for name, pol in data["policies"].items():
            table.add_row(
                name,
                f"{pol['threshold']['value']:g}",
                *(_value(pol[k], pct) for k, pct in (
                    ("mqls_per_month", False), ("mql_to_sql_rate", True), ("mql_to_opp_rate", True),
                    ("sql_recall", True), ("opp_recall", True),
                )),
            )
        console.print(table)
        console.print("95% CIs, segments, curves and the gained/lost leads are in the report.")
        verdict = "[green]meets[/green]" if acc["met"] else "[yellow]does not meet[/yellow]"
        console.print(
            f"At the rule's volume ({acc['rule_volume']:g} MQLs) the model's MQL→SQL rate is "
            f"{acc['model_mql_to_sql_rate']} vs the rule's {acc['rule_mql_to_sql_rate']}: ratio {acc['ratio']} "
            f"(95% CI {acc['ratio_ci_low']}-{acc['ratio_ci_high']}) "
            f"({verdict} the {acc['required_ratio']}x bar)."
        )
        if log:
            run_id = log_report_to_run(uri, files, data, settings)
            console.print(f"Logged to MLflow run {run_id} under sla_review/.")
        console.print(f"Wrote {out} and {out.with_suffix('.json')}.")

    @report_app.command("sla-ops")
    def sla_ops(
        ctx: typer.Context,
        crm: Annotated[str, typer.Option("--crm", help="CRM history: a directory of tables or a database URL.")],
        months: Annotated[int | None, typer.Option(min=1, help="Only the last N months (default: all).")] = None,
        out: Annotated[Path, typer.Option(help="HTML file to write (the JSON goes beside it).")] = Path(
            "reports/sla-ops.html"
        ),
    ) -> None:
        """SLA operations: follow-up speed, hand-backs, rejection reasons, recycling, stage targets, per owner and team."""
        from leadscore.history import is_database_url, load_history, read_manifest
        from leadscore.training.sla_ops import owner_teams, sla_ops_numbers, write_sla_ops_report

        settings = settings_from(ctx)
        history, validation = load_history(crm, settings, write_rejected=False)
        if not validation.usable:
            err_console.print(f"[red]error:[/red] {crm} is not a usable CRM history (run leadscore validate)")
            raise typer.Exit(2)
        manifest = {} if is_database_url(crm) else read_manifest(Path(crm))
        truth = manifest.get("sla")
        data = sla_ops_numbers(history, settings, months, truth if isinstance(truth, dict) else None, str(crm),
                               teams=owner_teams(manifest, settings))
        html_path, json_path = write_sla_ops_report(data, out)
        fu = data["follow_up"]
        console.print(f"{fu['handovers']} MQLs handed over; median {fu['median_hours']} h to first touch; "
                      f"{_value({'value': fu['share_within_target']}, True)} within {fu['target_hours']} h "
                      f"(SLA: {fu['target_share']:.0%}); {data['rejections']['count']} rejections, "
                      f"{data['recycled']['count']} recycled.")
        console.print(f"Wrote {html_path} and {json_path}.")

    app.add_typer(report_app, name="report", help="Reports for reviewers (SLA review).")
