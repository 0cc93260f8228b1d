"""Helpers for the serving tests: a small real scoring bundle and a real ``bentoml serve`` process.

The bundle is trained here with the training package's own pieces (feature code, category
encodings, LightGBM, calibration, stage policy) on a small generated CRM, so the serving tests run
against a real model without waiting for a full Optuna run. When the training pipeline offers a
session fixture, the tests can use that instead; the server does not care where the bundle came from.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.env import OFFLINE_ENV
from leadscore.history import CRMHistory

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key"
WRITE_KEY = "test-write-key"
HUBSPOT_SECRET = "test-hubspot-secret"


def training_moments(history: CRMHistory, per_lead: int = 6, seed: int = 0) -> pd.DataFrame:
    """Activity times of leads not yet SQL, at most ``per_lead`` per lead (what the CRM would call)."""
    acts = history.activities[["lead_id", "occurred_at"]]
    rng = np.random.default_rng(seed)
    acts = acts.iloc[rng.permutation(len(acts))]
    acts = acts.groupby("lead_id", sort=False).head(per_lead)
    sql = history.stage_changes[history.stage_changes["stage"].isin(["sql", "opportunity", "customer"])]
    first_sql = sql.groupby("lead_id")["changed_at"].min()
    t_sql = acts["lead_id"].map(first_sql)
    keep = t_sql.isna() | (acts["occurred_at"] < t_sql)
    m = acts[keep].rename(columns={"occurred_at": "as_of"}).sort_values(["lead_id", "as_of"])
    return m.reset_index(drop=True)


def labels(history: CRMHistory, moments: pd.DataFrame, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    sql = history.stage_changes[history.stage_changes["stage"].isin(["sql", "opportunity", "customer"])]
    first_sql = moments["lead_id"].map(sql.groupby("lead_id")["changed_at"].min())
    first_opp = moments["lead_id"].map(history.opportunities.groupby("lead_id")["created_at"].min())
    h_sql = pd.Timedelta(days=settings.horizons.sql_days)
    h_opp = pd.Timedelta(days=settings.horizons.opp_days)
    y_sql = (first_sql.notna() & (first_sql > moments["as_of"]) & (first_sql <= moments["as_of"] + h_sql)).to_numpy()
    y_opp = (first_opp.notna() & (first_opp > moments["as_of"]) & (first_opp <= moments["as_of"] + h_opp)).to_numpy()
    return y_sql.astype(np.float64), y_opp.astype(np.float64)


def train_small_bundle(history: CRMHistory, settings: Settings, out_dir: Path) -> Path:
    """A real (small) scoring bundle: LightGBM per target, sigmoid calibration, a stage policy."""
    import lightgbm as lgb

    import features
    from features.schema import feature_schema, schema_hash
    from training.bundle import ScoringBundle, TargetModel, schema_dicts
    from training.calibration import fit_sigmoid
    from training.encoding import categorical_indices, encode_frame, fit_encodings
    from training.sla import StagePolicy

    moments = training_moments(history)
    frame = features.compute(history, moments, settings)
    schema = schema_dicts(feature_schema(settings))
    y_sql, y_opp = labels(history, moments, settings)
    models: dict[str, TargetModel] = {}
    preds: dict[str, np.ndarray] = {}
    for target, y in (("sql", y_sql), ("opportunity", y_opp)):
        enc = fit_encodings(frame, schema)
        X = encode_frame(frame, schema, enc)
        params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 20,
                  "verbosity": -1, "num_threads": 1, "seed": 1}
        ds = lgb.Dataset(X, label=y, categorical_feature=categorical_indices(schema) or "auto",
                         params={"verbosity": -1}, free_raw_data=False)
        booster = lgb.train(params, ds, num_boost_round=40)
        raw = np.asarray(booster.predict(X), dtype=np.float64)
        cal = fit_sigmoid(raw, y)
        preds[target] = cal(raw)
        models[target] = TargetModel(model_str=booster.model_to_string(), encodings=enc, calibrator=cal, params=params)
    policy = StagePolicy(
        mql_threshold=float(np.quantile(preds["sql"], 0.8)),
        sql_threshold=float(np.quantile(preds["opportunity"], 0.95)),
        hysteresis=0.1,
        rule_mql_threshold=settings.rules.mql_threshold,
    )
    bundle = ScoringBundle(
        schema=schema, schema_hash=schema_hash(settings), config_hash=settings.config_hash(), models=models,
        stage_policy=policy, info={"trained_by": "tests/serving_support.py"},
    )
    return bundle.save(out_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real ``bentoml serve`` child process on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        bentoml_bin = Path(sys.executable).with_name("bentoml")
        cmd = [str(bentoml_bin), "serve", "serving.service:LeadScoreService", "--host", "127.0.0.1",
               "--port", str(self.port)]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(self.url + "/ready", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def server_env(bundle_dir: Path, store_url: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.update(
        {
            "LEADSCORE_CONFIG_DIR": str(REPO_ROOT / "configs"),
            "LEADSCORE_BUNDLE": str(bundle_dir),
            "LEADSCORE_EVENT_STORE": store_url,
            "LEADSCORE_API_KEYS": f"other-key,{API_KEY}",
            "LEADSCORE_SEGMENT_WRITE_KEYS": WRITE_KEY,
            "LEADSCORE_HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
            "BENTOML_HOME": str(Path(store_url.removeprefix("sqlite:///")).parent / "bentoml-home"),
        }
    )
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env
