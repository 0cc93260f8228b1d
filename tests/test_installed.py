"""The installed package on its own: no checkout, no ``configs/`` folder in the working directory.

A user who ran ``pip install leadscore`` works from a directory of their own. The default configuration
is package data, so ``generate`` → ``train`` → ``promote`` → ``serve`` must run there with nothing but
the command line. (The wheel in a fresh virtual environment is tested in ``test_mlflow_model.py``.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from leadscore.env import OFFLINE_ENV
from tests.conftest import TRAIN_OVERRIDES

pytestmark = pytest.mark.server

#: what is tested is the wiring, not the model
SMALL = ("training.trials=1", *TRAIN_OVERRIDES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_generate_train_promote_serve_from_an_empty_directory(tmp_path: Path) -> None:
    leadscore = str(Path(sys.executable).with_name("leadscore"))
    env = {k: v for k, v in os.environ.items() if k not in ("LEADSCORE_CONFIG_DIR", "PYTHONPATH")}
    env.update(OFFLINE_ENV)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env["LEADSCORE_MLFLOW_ARTIFACTS"] = str(tmp_path / "mlartifacts")
    env["LEADSCORE_API_KEYS"] = "k"
    sets = [x for o in SMALL for x in ("--set", o)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([leadscore, *sets, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"leadscore {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    run("generate", "--out", "crm", "--leads", "1200", "--months", "9", "--seed", "3")
    run("train", "--crm", "crm")
    promoted = run("promote", "--crm", "crm")
    assert promoted.stdout.startswith("promoted")
    assert not (tmp_path / "configs").exists()

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([leadscore, *sets, "serve", "--port", str(port), "--store", "sqlite:///events.db"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (tmp_path / "serve.log").read_text()[-3000:]
        answer = httpx.post(f"http://127.0.0.1:{port}/activities", headers={"Authorization": "Bearer k"}, timeout=30,
                            json={"activity_id": "a1", "lead_id": "l1", "occurred_at": "2026-01-05T10:00:00Z",
                                  "type": "demo_request"})
        assert answer.status_code == 200, answer.text
        assert 0.0 <= answer.json()["scores"][0]["p_sql"] <= 1.0
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()
