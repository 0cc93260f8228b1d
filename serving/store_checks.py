"""Refuse, at start, an event store that cannot be used: one line naming the file and the reason.

A store that cannot be opened (random bytes, a truncated copy), migrated, or written (a read-only
file or directory) used to surface inside a worker as a 370-line traceback, after which the process
manager restarted the worker every ten seconds while every endpoint hung. Every such fault is turned
here into a :class:`~leadscore.errors.StoreError` whose message names the file and says why, which
``leadscore serve`` prints as one line before it starts any worker (exit status 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from alembic.util import CommandError as AlembicError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from leadscore.errors import StoreError


def where(engine: Engine) -> str:
    """The SQLite file, else the URL without its password."""
    db = engine.url.database
    if engine.dialect.name == "sqlite" and db not in (None, "", ":memory:"):
        return str(db)
    return engine.url.render_as_string(hide_password=True)


def reason(exc: BaseException) -> str:
    """The driver's own words on one line (SQLAlchemy's text adds the SQL statement and a link)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return " ".join(text.split())


def open_checked(engine: Engine, upgrade: Callable[[Engine], str]) -> str:
    """Check the file, run ``upgrade`` (the migrations) and probe the write lock; returns the revision.

    Any failure is a :class:`StoreError` naming the store and the reason.
    """
    try:
        if engine.dialect.name == "sqlite":
            check_file(engine)
        revision = upgrade(engine)
        if engine.dialect.name == "sqlite":
            probe_write(engine)
        return revision
    except StoreError:
        raise
    except (SQLAlchemyError, AlembicError, OSError) as exc:
        raise StoreError(f"event store {where(engine)}: {reason(exc)}") from exc


def check_file(engine: Engine) -> None:
    """SQLite writes the file and, in WAL mode, creates ``-wal`` and ``-shm`` files beside it: both the
    file and its directory must be writable (checked for the user running; root passes anyway)."""
    db = engine.url.database
    if db in (None, "", ":memory:") or db.startswith("file:"):
        return
    path = Path(db)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"event store {path}: the file is not readable and writable by this user")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(f"event store {path}: its directory is not writable (SQLite keeps its write-ahead "
                         "log beside the file)")


def probe_write(engine: Engine) -> None:
    """Take SQLite's write lock once and let go: what the file checks cannot see fails here, at start,
    rather than on the first activity."""
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.rollback()


def verify(engine: Engine) -> None:
    """Read every page once (SQLite ``PRAGMA quick_check``) so a damaged or truncated file is refused
    at start rather than found by a request. Linear in the file size (about a second per GB), so
    ``leadscore serve`` runs it once before starting the workers, and the workers do not."""
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as conn:
            rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
    except SQLAlchemyError as exc:
        raise StoreError(f"event store {where(engine)}: {reason(exc)}") from exc
    if rows != ["ok"]:
        raise StoreError(f"event store {where(engine)}: damaged ({rows[0]}; {len(rows)} problem(s) found)")
