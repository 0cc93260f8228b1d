"""Helpers for the serving tests: a real ``bentoml serve`` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from leadscore.env import OFFLINE_ENV

if TYPE_CHECKING:

    pass

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key"
WRITE_KEY = "test-write-key"
HUBSPOT_SECRET = "test-hubspot-secret"


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
        #: the command line; ``{port}`` is filled in. Default: ``bentoml serve`` on the service class.
        self.cmd = [str(Path(sys.executable).with_name("bentoml")), "serve", "leadscore.serving.service:LeadScoreService",
                    "--host", "127.0.0.1", "--port", "{port}"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
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


def server_env(bundle_dir: Path | None, store_url: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The server's environment: the test session's MLflow store (inherited), our store, keys."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.update(
        {
            "LEADSCORE_CONFIG_DIR": str(REPO_ROOT / "configs"),
            "LEADSCORE_EVENT_STORE": store_url,
            "LEADSCORE_API_KEYS": f"other-key,{API_KEY}",
            "LEADSCORE_SEGMENT_WRITE_KEYS": WRITE_KEY,
            "LEADSCORE_HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
            "BENTOML_HOME": str(Path(store_url.removeprefix("sqlite:///")).parent / "bentoml-home"),
        }
    )
    env.pop("LEADSCORE_BUNDLE", None)
    if bundle_dir is not None:
        env["LEADSCORE_BUNDLE"] = str(bundle_dir)
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def cli_serve_cmd(bundle_dir: Path, store_url: str) -> list[str]:
    """``leadscore serve`` (the CLI, which runs ``bentoml serve`` as its child) on ``{port}``."""
    return [str(Path(sys.executable).with_name("leadscore")), "--config", str(REPO_ROOT / "configs"), "serve",
            "--port", "{port}", "--bundle", str(bundle_dir), "--store", store_url]


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants, parents first (empty if it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(p.pid for p in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies, i.e. dead but not yet reaped, count as gone)."""
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on ``port`` now (what a restart needs)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(cond: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())
