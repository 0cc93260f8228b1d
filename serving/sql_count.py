"""What a piece of work costs the event store: the SQL statements it runs and the connections it checks out.

The scoring path runs most statements on the raw DBAPI cursor (:mod:`leadscore.serving.queries`), which
SQLAlchemy's ``before_cursor_execute`` never sees, so on SQLite the count comes from SQLite itself:
a trace callback set on each connection while it is checked out reports every statement the engine
runs, the transaction's ``BEGIN`` and ``COMMIT`` included. Elsewhere only the statements SQLAlchemy
executes are seen. Used by ``benchmarks/serving_profile.py`` (per-request cost) and by the test that
bounds the statements of one ``POST /activities``, so the number cannot creep back up unnoticed.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

#: statements the transaction machinery issues (counted apart from the work's own)
CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


class SqlCounter:
    """Counts, while entered, the statements run and the pool checkouts of ``engine`` (every thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.statements: list[str] = []
        self.checkouts = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ counts
    @property
    def queries(self) -> list[str]:
        """The work's own statements (not ``BEGIN``/``COMMIT``)."""
        return [s for s in self.statements if not s.lstrip().upper().startswith(CONTROL)]

    @property
    def transactions(self) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith("COMMIT"))

    def kinds(self) -> Counter[str]:
        """Statements by first word (``SELECT``, ``INSERT``, ``BEGIN``...)."""
        return Counter(s.split(None, 1)[0].upper() for s in self.statements if s.strip())

    def reset(self) -> None:
        with self._lock:
            self.statements.clear()
            self.checkouts = 0

    # ------------------------------------------------------------------ events
    def _record(self, sql: str) -> None:
        with self._lock:
            self.statements.append(sql)

    def _checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        with self._lock:
            self.checkouts += 1
        if self.sqlite:
            dbapi_conn.set_trace_callback(self._record)

    def _checkin(self, dbapi_conn: Any, _record: Any) -> None:
        if self.sqlite and dbapi_conn is not None:
            dbapi_conn.set_trace_callback(None)

    def _execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self._record(statement)

    def __enter__(self) -> SqlCounter:
        sa.event.listen(self.engine, "checkout", self._checkout)
        sa.event.listen(self.engine, "checkin", self._checkin)
        if not self.sqlite:
            sa.event.listen(self.engine, "before_cursor_execute", self._execute)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        sa.event.remove(self.engine, "checkout", self._checkout)
        sa.event.remove(self.engine, "checkin", self._checkin)
        if not self.sqlite:
            sa.event.remove(self.engine, "before_cursor_execute", self._execute)
