"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` on a temporary directory and a free port.

Why not a mock or SQLite alone: the event store runs on PostgreSQL in production, shared by service
replicas, and its PostgreSQL path (dialect inserts, advisory locks, READ COMMITTED visibility) only
shows its bugs against the real server. Why not ``pytest-postgresql``: CI runs as root and ``initdb``
refuses to run as root, so the server must be started as another user (``runuser -u postgres --``);
what that takes is the ~40 lines below.

The binaries come from ``$LEADSCORE_PG_BINDIR``, the ``PATH`` or Debian's ``/usr/lib/postgresql/<N>/bin``
(``apt-get install postgresql``; ``.ci/run`` installs it). Without them the PostgreSQL tests are skipped
with the reason (they fail instead under ``$LEADSCORE_REQUIRE_POSTGRES``, as in CI); ``$LEADSCORE_TEST_POSTGRES_URL`` points the tests at an existing server instead (its
user must be allowed to ``CREATE DATABASE``). One server per test session (per xdist worker); each test
that needs a store gets a database of its own (:meth:`PostgresServer.database`).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

BINDIR_ENV = "LEADSCORE_PG_BINDIR"
URL_ENV = "LEADSCORE_TEST_POSTGRES_URL"
#: set (``.ci/run`` does): missing binaries fail the PostgreSQL tests instead of skipping them
REQUIRE_ENV = "LEADSCORE_REQUIRE_POSTGRES"
#: the user a root session runs the server as (Debian's package creates it)
SERVER_USERS = ("postgres", "nobody")


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(p: Path) -> int:
        m = re.fullmatch(r"\d+", p.parent.name)
        return int(m.group()) if m else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """Who runs the server: ourselves, or (as root, which ``initdb`` refuses) a system user."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {SERVER_USERS} exists to run PostgreSQL")


@dataclass
class PostgresServer:
    """A running server (or an existing one from ``$LEADSCORE_TEST_POSTGRES_URL``)."""

    admin_url: str
    root: Path | None = None
    bindir: Path | None = None
    run_as: str | None = None
    log: Path | None = None
    _names: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, bindir: Path) -> PostgresServer:
        """``initdb`` (trust authentication, no fsync: the data is thrown away) and ``pg_ctl start``."""
        run_as = _server_user()
        root = Path(tempfile.mkdtemp(prefix="leadscore-pg-"))
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        server = cls(admin_url="", root=root, bindir=bindir, run_as=run_as, log=root / "server.log")
        server._run("initdb", "-D", str(root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C", "--no-sync")
        port = _free_port()
        opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        server._run("pg_ctl", "start", "-D", str(root / "data"), "-l", str(server.log), "-w", "-t", "60", "-o", opts)
        server.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        return server

    def _run(self, tool: str, *args: str) -> None:
        assert self.bindir is not None
        cmd = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text() if self.log is not None and self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")

    def database(self, prefix: str = "t") -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        self._names.append(name)
        return sa.engine.make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def stop(self) -> None:
        """Stop a server we started (``immediate``: nothing in it is kept) and remove its files."""
        if self.root is None:
            return
        try:
            self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "immediate", "-w", "-t", "30")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; skips when no PostgreSQL binaries are installed."""
    if os.environ.get(URL_ENV):
        yield PostgresServer(admin_url=os.environ[URL_ENV])
        return
    bindir = find_bindir()
    if bindir is None:
        why = (f"no PostgreSQL binaries (initdb, pg_ctl) found: apt-get install postgresql, or set {BINDIR_ENV} "
               f"or {URL_ENV}")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(why)
        pytest.skip(why)
    server = PostgresServer.start(bindir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty event-store URL on each backend: a SQLite file, then a new database on the session's server.

    A test that takes it runs once per backend.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database()
