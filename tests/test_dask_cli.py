"""``--engine dask --scheduler ADDRESS`` on ``features build``, ``score`` and ``train``: the same output
as the single-machine commands, on a 2-worker ``LocalCluster`` (scores and account rows compared
exactly after sorting by lead; the file holds the parts one after the other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings
from leadscore.features.build import build_dataset
from leadscore.history import load_history
from leadscore.training.score_files import read_scores
from tests.conftest import SmallModel
from tests.dask_support import (  # noqa: F401  (two_worker_client: the ``client`` fixture)
    assert_bit_identical,
    sorted_rows,
    two_worker_client,
    write_partitioned,
)

runner = CliRunner()


def _address(client: Any) -> str:
    return str(client.scheduler.address)


def test_features_build_on_the_cluster_writes_the_single_machine_file(client: Any, small_model: SmallModel,
                                                                      tmp_path: Path) -> None:
    parts = write_partitioned(small_model.crm_dir, tmp_path / "parts", 3)
    local, dask = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    res = runner.invoke(app, ["features", "build", "--crm", str(small_model.crm_dir), "--out", str(local),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["features", "build", "--crm", str(parts), "--out", str(dask), "--engine", "dask",
                              "--scheduler", _address(client), "--summary-json", str(tmp_path / "summary.json")])
    assert res.exit_code == 0, res.output
    assert "building features of 3 parts" in res.output
    assert_bit_identical(sorted_rows(pd.read_parquet(dask)), sorted_rows(pd.read_parquet(local)))


def test_score_on_the_cluster_equals_the_single_machine_scores(client: Any, small_model: SmallModel,
                                                               tmp_path: Path) -> None:
    parts = write_partitioned(small_model.crm_dir, tmp_path / "parts", 3)
    common = ["--bundle", str(small_model.bundle_dir), "--at", "2026-10-15", "--chunk-size", "200",
              "--store", f"sqlite:///{tmp_path / 'events.db'}"]
    outs = {}
    for engine, crm in (("local", small_model.crm_dir), ("dask", parts)):
        out, accounts = tmp_path / f"{engine}.parquet", tmp_path / f"{engine}-accounts.parquet"
        extra = ["--engine", "dask", "--scheduler", _address(client)] if engine == "dask" else []
        res = runner.invoke(app, ["score", "--crm", str(crm), "--out", str(out), "--accounts", str(accounts),
                                  *common, *extra])
        assert res.exit_code == 0, res.output
        outs[engine] = (read_scores(out).sort_values("lead_id", ignore_index=True), pd.read_parquet(accounts))
    (local, local_acc), (dask, dask_acc) = outs["local"], outs["dask"]
    assert len(local) > 300 and local["reasons_positive"].ne("[]").all()
    pd.testing.assert_frame_equal(dask, local, check_exact=True)
    pd.testing.assert_frame_equal(dask_acc, local_acc, check_exact=True)
    assert len(local_acc) > 50


def test_train_builds_its_moments_on_the_cluster(client: Any, small_model: SmallModel, settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The data-building part of ``train --engine dask``: the dataset handed to the training is the
    single-machine one (rows sorted by lead and time), with the same cut-off."""
    from leadscore.training import train as train_module

    seen: dict[str, Any] = {}

    class Handed(Exception):
        pass

    def fake(dataset: pd.DataFrame, schema: Any, settings: Settings, cutoff: pd.Timestamp, **_: Any) -> None:
        seen.update(dataset=dataset, cutoff=cutoff)
        raise Handed

    monkeypatch.setattr(train_module, "train_from_dataset", fake)
    res = runner.invoke(app, ["train", "--crm", str(small_model.crm_dir), "--engine", "dask", "--scheduler",
                              _address(client)])
    assert isinstance(res.exception, Handed), res.output
    history, _ = load_history(small_model.crm_dir, settings, write_rejected=False)
    assert seen["cutoff"] == history.cutoff
    assert_bit_identical(seen["dataset"], sorted_rows(build_dataset(history, settings)[0]))


@pytest.mark.parametrize("command", [["features", "build", "--out", "x.parquet"], ["score", "--out", "x.parquet"],
                                     ["train"]])
def test_engine_options_are_checked(command: list[str], small_model: SmallModel) -> None:
    crm = ["--crm", str(small_model.crm_dir)]
    bad = runner.invoke(app, [*command, *crm, "--engine", "spark"])
    assert bad.exit_code == 2 and "--engine must be one of local, dask" in bad.output
    lone = runner.invoke(app, [*command, *crm, "--scheduler", "tcp://127.0.0.1:1"])
    assert lone.exit_code == 2 and "--scheduler goes with --engine dask" in lone.output
