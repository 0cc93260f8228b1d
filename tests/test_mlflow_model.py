"""The logged MLflow model and the bundle contract, end to end on a model trained by the real pipeline.

- the model loads with ``mlflow.pyfunc.load_model`` in a fresh virtual environment where the leadscore
  wheel is installed, from a directory outside the repository, and predicts what the bundle predicts;
- training logs it as code (no cloudpickle) and emits no CloudPickle or type-hint warning;
- a bundle whose feature-schema hash was tampered with is refused by ``bind``, by the promotion gate
  (no alias moves), by the SLA report and by serving start-up.

The fresh environment is a ``venv`` without system site-packages and without the repository on
``sys.path``; the wheel is installed into it with ``--no-deps``, and the third-party dependencies are
made importable by a ``.pth`` line naming this environment's site-packages (installing ~150 packages
from the pip cache would take minutes on a shared machine). A line in a ``.pth`` file only appends a
directory, it does not run the ``.pth`` files inside it, so this environment's editable leadscore
finder stays inactive: leadscore comes from the wheel.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.training.bundle import ScoringBundle
from tests.conftest import TRAIN_OVERRIDES, SmallModel
from tests.test_serving_support import REPO_ROOT, Server, server_env

pytestmark = pytest.mark.server

TAMPERED = "0000tampered0000"


@dataclass
class Trained:
    settings: Settings
    version: str
    bundle_dir: Path
    rows: pd.DataFrame
    warnings: tuple[str, ...]
    logs: tuple[str, ...]


@pytest.fixture(scope="module")
def trained(small_model: SmallModel) -> Trained:
    """The session's model (trained, logged and registered by ``leadscore train``'s code, warnings
    recorded) and 200 of its CRM's feature rows."""
    from leadscore.features.build import build_dataset
    from leadscore.history import load_history

    history, _ = load_history(small_model.crm_dir, small_model.settings)
    dataset, _ = build_dataset(history, small_model.settings)
    bound = ScoringBundle.load(small_model.bundle_dir).bind(small_model.settings)
    rows = dataset.sample(200, random_state=1)[bound.feature_names].reset_index(drop=True)
    return Trained(small_model.settings, small_model.version, small_model.bundle_dir, rows, small_model.warnings,
                   small_model.logs)


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The python of a new venv holding only the leadscore wheel (dependencies via a .pth line)."""
    root = tmp_path_factory.mktemp("fresh-env")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "wheels"),
                    str(REPO_ROOT)], check=True, cwd=root)
    wheel = next((root / "wheels").glob("leadscore-*.whl"))
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", purelib, str(wheel)],
                   check=True, cwd=root)
    (Path(purelib) / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    yield python
    shutil.rmtree(root, ignore_errors=True)


def _run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_model_loads_in_a_fresh_env_outside_the_repo(trained: Trained, fresh_python: Path, tmp_path: Path) -> None:
    import mlflow

    from leadscore.training.registry import load_bundle

    name = trained.settings.training.registered_model_name
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{trained.version}", dst_path=str(tmp_path / "m")))
    assert (model_dir / "mlflow_model.py").exists() and not list(model_dir.rglob("*.pkl"))  # code, not a pickle
    reqs = (model_dir / "requirements.txt").read_text().split()
    from importlib.metadata import version

    assert f"leadscore=={version('leadscore')}" in reqs
    trained.rows.to_parquet(tmp_path / "rows.parquet")
    code = f"""
import json, mlflow, pandas as pd, leadscore
rows = pd.read_parquet({str(tmp_path / 'rows.parquet')!r})
rows = rows.astype({{c: object for c in rows.columns if rows[c].dtype != 'float64'}})
rows = rows.where(rows.notna(), None)
model = mlflow.pyfunc.load_model({str(model_dir)!r})
out = model.predict(rows)
print(json.dumps({{"leadscore": leadscore.__file__, "p": out[["p_sql", "p_opportunity"]].to_numpy().tolist()}}))
"""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = _run(fresh_python, code, outside)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert not got["leadscore"].startswith(str(REPO_ROOT))  # the wheel's copy, not the checkout
    expected = load_bundle(f"models:/{name}/{trained.version}", trained.settings).predict(trained.rows)
    np.testing.assert_allclose(np.asarray(got["p"]), expected.to_numpy(), rtol=0, atol=1e-12)
    # the checkout's top-level packages are not importable there: only the installed wheel is
    no_repo = _run(fresh_python, "import features", outside)
    assert no_repo.returncode != 0 and "ModuleNotFoundError" in no_repo.stderr


def test_training_emits_no_cloudpickle_or_type_hint_warning(trained: Trained) -> None:
    said = [m for m in trained.warnings + trained.logs if "cloudpickle" in m.lower() or "type hint" in m.lower()]
    assert said == []
    # the type-hint warning fires when the PythonModel subclass is defined: check a clean import too
    done = subprocess.run([sys.executable, "-W", "always", "-c", "import leadscore.training.pyfunc"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0 and "type hint" not in done.stderr.lower(), done.stderr


def _tampered_copy(bundle_dir: Path, dst: Path) -> Path:
    shutil.copytree(bundle_dir, dst)
    doc = json.loads((dst / "bundle.json").read_text())
    doc["schema_hash"] = TAMPERED
    (dst / "bundle.json").write_text(json.dumps(doc))
    return dst


def test_bind_refuses_a_tampered_bundle_naming_both_hashes(trained: Trained, tmp_path: Path) -> None:
    from leadscore.features.schema import schema_hash
    from leadscore.training.bundle import SchemaMismatchError, ScoringBundle

    bundle = ScoringBundle.load(_tampered_copy(trained.bundle_dir, tmp_path / "b"))
    assert not hasattr(bundle, "predict")  # an unbound bundle cannot score
    with pytest.raises(SchemaMismatchError) as err:
        bundle.bind(trained.settings)
    assert TAMPERED in str(err.value) and schema_hash(trained.settings) in str(err.value)
    assert ScoringBundle.load(trained.bundle_dir).bind(trained.settings).predict(trained.rows.head(3)).shape == (3, 2)


def test_promote_refuses_a_tampered_challenger_and_moves_no_alias(trained: Trained, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from leadscore.training.bundle import SchemaMismatchError, ScoringBundle
    from leadscore.training.promote import promote
    from leadscore.training.pyfunc import log_bundle_model
    from leadscore.training.tracking import ensure_experiment

    settings, name = trained.settings, trained.settings.training.registered_model_name
    tampered = ScoringBundle.load(_tampered_copy(trained.bundle_dir, tmp_path / "b")).bind(schema_hash=TAMPERED)
    with mlflow.start_run(experiment_id=ensure_experiment(settings.training.experiment_name, settings)):
        _, bad_version = log_bundle_model(tampered, tmp_path / "b", trained.rows.head(3), settings)
    client = MlflowClient()
    before = _aliases(name)
    assert before["challenger"] == bad_version
    with pytest.raises(SchemaMismatchError, match=f"challenger models:/{name}/{bad_version}.*{TAMPERED}"):
        promote(settings, dataset=pd.DataFrame(), cutoff="2030-01-01")
    assert _aliases(name) == before  # no alias moved

    # the SLA report (and the what-if) refuse it too, with one line and exit code 2
    from typer.testing import CliRunner

    from leadscore.cli import app

    args = ["--config", str(REPO_ROOT / "configs"), *(arg for o in TRAIN_OVERRIDES for arg in ("--set", o))]
    out = CliRunner().invoke(app, [*args, "report", "sla", "--model", f"models:/{name}/{bad_version}",
                                   "--out", str(tmp_path / "r.html"), "--no-log"])
    assert out.exit_code == 2 and TAMPERED in out.output and not (tmp_path / "r.html").exists()
    client.set_registered_model_alias(name, "challenger", trained.version)  # leave the store as found


def _aliases(name: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return {a: str(v) for a, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_serving_refuses_a_tampered_bundle_at_start_up(trained: Trained, tmp_path: Path) -> None:
    from leadscore.serving.scoring import ModelLoadError, Scorer

    bad = _tampered_copy(trained.bundle_dir, tmp_path / "b")
    with pytest.raises(ModelLoadError) as err:
        Scorer.load(trained.settings, bundle_dir=bad)
    message = str(err.value)
    assert "\n" not in message and TAMPERED in message and "refusing to serve" in message
    # the real server: the worker refuses on that one line and stops the whole server (no crash loop of
    # retried workers behind a port nobody answers)
    env = server_env(bad, f"sqlite:///{tmp_path / 'events.db'}")
    server = Server(env, tmp_path / "server.log")
    log = server.log_path.open("ab")
    server.proc = subprocess.Popen([c.replace("{port}", str(server.port)) for c in server.cmd], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Application startup failed" not in server.log_tail(400) and server.proc.poll() is None:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(1)
        try:
            ready = httpx.get(server.url + "/ready", timeout=2.0).status_code
        except httpx.HTTPError:
            ready = None
        assert ready != 200
        exited = server.proc.poll() is not None or server.proc.wait(timeout=60) is not None
    finally:
        server.stop()
        log.close()
    lines = [line for line in server.log_tail(400).splitlines() if "refusing to serve" in line]
    assert lines and all(message in line for line in lines)
    assert exited  # the server stopped by itself
