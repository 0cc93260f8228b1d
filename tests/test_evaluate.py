"""Evaluation on the public datasets in the shared data directory (skipped when it is absent).

Few Optuna trials keep these quick; the point is that the protocol runs end to end on real data,
that the leakage guard catches the sales-entered ``Tags`` field, and that reports are written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings, mappings_dir
from leadscore.training.evaluate import (
    DataMissingError,
    cross_validate,
    evaluate_olist,
    evaluate_x_education,
    shared_data_dir,
    write_report,
)
from leadscore.training.flat import (
    ColumnSpec,
    FlatData,
    LeakageError,
    check_leakage,
    load_mapping,
    prepare_flat,
    read_flat,
)

DATA = shared_data_dir()
#: the model-choice candidates of the default configs/training.yaml
CANDIDATES = ("lightgbm", "logistic", "blend 0.25", "blend 0.5", "blend 0.75")
has_x = pytest.mark.skipif(not (DATA / "x_education" / "Leads.csv").exists(), reason="shared X Education data absent")
has_olist = pytest.mark.skipif(not (DATA / "olist_funnel").exists(), reason="shared Olist data absent")


@has_x
def test_leakage_guard_flags_tags_on_x_education() -> None:
    mapping = load_mapping(Path(str(mappings_dir())) / "x_education.yaml")
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
@pytest.mark.training
def test_evaluate_x_education(settings: Settings, tmp_path: Path) -> None:
    quick = settings.model_copy(update={"training": settings.training.model_copy(update={"bootstrap_samples": 50})})
    result = evaluate_x_education(quick, trials=2)
    assert result.rows == 9240 and result.positives == 3561
    assert set(result.metrics) == {"shipped", *CANDIDATES, "rule"}
    auc = {k: v["roc_auc"].value for k, v in result.metrics.items()}
    assert auc["shipped"] > 0.85 and auc["shipped"] > auc["rule"]
    # the shipped score is one of the candidates' (the one model choice picked in each fold)
    assert auc["shipped"] >= min(auc[c] for c in CANDIDATES) - 0.01
    ci = result.metrics["shipped"]["roc_auc"]
    assert ci.lo < ci.value < ci.hi
    assert "tags" not in result.details["features"]
    js, md = write_report(result, tmp_path)
    assert json.loads(js.read_text())["goal"]["target"] == 0.89
    assert "| shipped model" in md.read_text() and "| LightGBM candidate (calibrated) |" in md.read_text()


@has_olist
def test_evaluate_olist_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--set", "training.bootstrap_samples=50", "evaluate", "olist", "--trials", "2",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "roc_auc" in result.output and "points" in result.output
    data = json.loads((tmp_path / "evaluation_olist.json").read_text())
    assert data["metrics"]["shipped"]["roc_auc"]["value"] > 0.6
    model = data["details"]["model"]
    # routed through train's procedure: recency chosen, model chosen, the shipped score is the refit's
    assert set(model["candidates_log_loss"]) == set(CANDIDATES) and model["shipped"] in CANDIDATES
    assert data["metrics"]["shipped"] == data["metrics"][model["shipped"]]
    assert data["details"]["refit"]["fit_rows"] > data["details"]["window"]["train"][2]
    assert data["details"]["window"]["test"][1] <= "2018-05-31"
    assert not any("won_date" in f or "business" in f for f in data["details"]["features"])


def _synthetic_flat(n: int = 3000, seed: int = 0) -> FlatData:
    """Exchangeable rows with a planted signal in a number and a category (oracle AUC 0.82)."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n).astype(np.float64)
    source = rng.choice(["ads", "referral", "organic"], n, p=[0.5, 0.2, 0.3])
    logit = -3.0 + 0.8 * visits + 2.0 * (source == "referral")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    features = pd.DataFrame({"visits": visits, "source": pd.Series(source, dtype="str")})
    schema = [{"name": "visits", "dtype": "float64", "group": "interest", "description": "", "template": ""},
              {"name": "source", "dtype": "str", "group": "fit", "description": "", "template": ""}]
    return FlatData(features=features, schema=schema, y=y, as_of=pd.Series(pd.to_datetime(["2025-01-01"] * n)),
                    lead_id=pd.Series([str(i) for i in range(n)]), rule_score=visits, real_time=False)


def test_cross_validation_averages_fold_models(settings: Settings) -> None:
    from sklearn.metrics import roc_auc_score

    # 4,500 rows: the tuned search space (min_data_in_leaf up to 1,000) needs a few thousand per fold model
    data = _synthetic_flat(4500)
    oof, details = cross_validate(data, settings, trials=2, folds=3, bag_folds=4)
    p = oof["lightgbm"]
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    for fold in details["folds"]:
        assert fold["bag_folds"] == 4 and len(fold["rounds"]) == 4 and min(fold["rounds"]) >= 1
        assert fold["importance"]["visits"] > 0 and set(fold["importance"]) == {"visits", "source"}
        # 3,000 training rows per fold: 20% calibrate, the rest split 80/20 into fit and early stopping
        assert fold["rows"] == {"fit": 1920, "early_stop": 480, "calibration": 600, "test": 1500}
    assert roc_auc_score(data.y, p) > 0.75
    # calibrated on rows no fold model saw: the mean prediction tracks the base rate
    assert abs(p.mean() - data.y.mean()) < 0.03
    single, details1 = cross_validate(data, settings, trials=2, folds=3, bag_folds=0)
    assert all(f["bag_folds"] == 1 and len(f["rounds"]) == 1 for f in details1["folds"])
    assert roc_auc_score(data.y, single["lightgbm"]) > 0.75


def test_missing_data_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"Leads\.csv"):
        evaluate_x_education(settings, trials=1, data_dir=tmp_path)
    with pytest.raises(DataMissingError, match="olist_funnel"):
        evaluate_olist(settings, trials=1, data_dir=tmp_path)


FLAT_MAPPING = """
name: my-leads
id: lead
label: outcome
positive: ["gagné"]
time: {column: created}
horizon_days: 30
columns:
  visits: {role: interest, type: numeric}
  source: {role: fit, type: categorical}
rule:
  points:
    - {column: source, values: [référence], points: 20}
    - {column: visits, min: 4, points: 10}
  mql_threshold: 20
"""


def test_evaluate_flat_cli_writes_the_shared_report_per_protocol(tmp_path: Path) -> None:
    """A user's semicolon-separated Latin-1 export, evaluated with both protocols through the CLI."""
    rng = np.random.default_rng(3)
    n = 6000
    visits = rng.poisson(3, n)
    source = rng.choice(["pub", "référence", "organique"], n, p=[0.5, 0.2, 0.3])
    y = rng.random(n) < 1 / (1 + np.exp(-(-3.0 + 0.7 * visits + 1.8 * (source == "référence"))))
    created = pd.Timestamp("2025-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 365 * 24, n)), unit="h")
    frame = pd.DataFrame({"lead": [f"L{i}" for i in range(n)], "created": created.strftime("%Y-%m-%d %H:%M"),
                          "visits": visits.astype(str), "source": source,
                          "outcome": np.where(y, "gagné", "perdu")})
    flat, mapping = tmp_path / "export.csv", tmp_path / "mapping.yaml"
    flat.write_bytes(frame.to_csv(index=False, sep=";").encode("latin-1"))
    mapping.write_text(FLAT_MAPPING, encoding="utf-8")
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, ["--set", "training.bootstrap_samples=30", "evaluate", "--flat", str(flat),
                                      "--mapping", str(mapping), "--protocol", "both", "--trials", "2",
                                      "--bag-folds", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    reports = {p.name for p in out.iterdir()}
    assert reports == {f"evaluation_my_leads_{k}.{e}" for k in ("random", "chrono") for e in ("json", "md")}
    cv = json.loads((out / "evaluation_my_leads_random.json").read_text())
    chrono = json.loads((out / "evaluation_my_leads_chrono.json").read_text())
    assert cv["rows"] == n and cv["goal"] is None and len(cv["details"]["folds"]) == 5
    assert chrono["rows"] == round(0.2 * n) and chrono["details"]["window"]["test"][1] == "2025-12-31"
    for report in (cv, chrono):
        assert set(report["metrics"]) == {"shipped", *CANDIDATES, "rule"}
        auc = {k: v["roc_auc"]["value"] for k, v in report["metrics"].items()}
        # the planted signal (oracle AUC about 0.8) is found, and beats the mapping's points rule
        assert auc["shipped"] > 0.75 and auc["shipped"] > auc["rule"], auc
        assert any("'delimiter': ';'" in note and "cp1252" in note for note in report["notes"])
    # a planted linear signal: model choice ships the logistic model or a blend in the chronological run
    assert chrono["details"]["model"]["kind"] in ("logistic", "blend"), chrono["details"]["model"]
    assert "| shipped model" in (out / "evaluation_my_leads_chrono.md").read_text()
    missing = CliRunner().invoke(app, ["evaluate", "--flat", str(flat)])
    assert missing.exit_code != 0 and "--mapping" in missing.output
