"""Evaluation on the public datasets in the shared data directory (skipped when it is absent).

Few Optuna trials keep these quick; the point is that the protocol runs end to end on real data,
that the leakage guard catches the sales-entered ``Tags`` field, and that reports are written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings
from training.evaluate import (
    MAPPINGS,
    DataMissingError,
    evaluate_olist,
    evaluate_x_education,
    shared_data_dir,
    write_report,
)
from training.flat import ColumnSpec, LeakageError, check_leakage, load_mapping, prepare_flat, read_flat

DATA = shared_data_dir()
has_x = pytest.mark.skipif(not (DATA / "x_education" / "Leads.csv").exists(), reason="shared X Education data absent")
has_olist = pytest.mark.skipif(not (DATA / "olist_funnel").exists(), reason="shared Olist data absent")


@has_x
def test_leakage_guard_flags_tags_on_x_education() -> None:
    mapping = load_mapping(MAPPINGS / "x_education.yaml")
    with_tags = mapping.model_copy(update={
        "columns": {**mapping.columns, "Tags": ColumnSpec(role="fit", type="categorical")},
        "leakage": [c for c in mapping.leakage if c != "Tags"],
    })
    data = prepare_flat(read_flat(DATA / "x_education" / "Leads.csv"), with_tags)
    with pytest.raises(LeakageError, match="Tags") as info:
        check_leakage(data, with_tags)
    assert set(info.value.report.flagged) == {"tags"}
    # the shipped mapping passes (Lead Source is allowed explicitly, with its reason in the YAML)
    clean = prepare_flat(read_flat(DATA / "x_education" / "Leads.csv"), mapping)
    assert set(check_leakage(clean, mapping).allowed) == {"lead_source"}


@has_x
def test_evaluate_x_education(settings: Settings, tmp_path: Path) -> None:
    quick = settings.model_copy(update={"training": settings.training.model_copy(update={"bootstrap_samples": 50})})
    result = evaluate_x_education(quick, trials=2)
    assert result.rows == 9240 and result.positives == 3561
    assert set(result.metrics) == {"lightgbm", "logistic", "rule"}
    auc = {k: v["roc_auc"].value for k, v in result.metrics.items()}
    assert auc["lightgbm"] > 0.85 and auc["lightgbm"] > auc["rule"]
    ci = result.metrics["lightgbm"]["roc_auc"]
    assert ci.lo < ci.value < ci.hi
    assert "tags" not in result.details["features"]
    js, md = write_report(result, tmp_path)
    assert json.loads(js.read_text())["goal"]["target"] == 0.89
    assert "| LightGBM (calibrated) |" in md.read_text()


@has_olist
def test_evaluate_olist_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--set", "training.bootstrap_samples=50", "evaluate", "olist", "--trials", "2",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "roc_auc" in result.output and "points" in result.output
    data = json.loads((tmp_path / "evaluation_olist.json").read_text())
    assert data["metrics"]["lightgbm"]["roc_auc"]["value"] > 0.6
    assert data["details"]["window"]["test"][1] <= "2018-05-31"
    assert not any("won_date" in f or "business" in f for f in data["details"]["features"])


def test_missing_data_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"Leads\.csv"):
        evaluate_x_education(settings, trials=1, data_dir=tmp_path)
    with pytest.raises(DataMissingError, match="olist_funnel"):
        evaluate_olist(settings, trials=1, data_dir=tmp_path)
