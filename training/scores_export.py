"""``leadscore scores export``: the service's ``scores`` audit table as a file, each row with its trend.

Data teams chart and audit what the service told the CRM; the audit table lives in the event store
(SQLite or PostgreSQL), which they should not query by hand against a live service. The export streams
the rows lead by lead, in the order they were scored, and annotates each with the very rule the API
answers with (:mod:`training.trend`, previous scores as :mod:`serving.trail` reads them: one per moment,
the newest row of a refreshed moment), so a row's ``trend`` in the file is the one ``GET /leads/{id}/scores``
shows. ``--since`` keeps the rows of moments at or after it, yet the trend of the first kept row still
reads the scores before it (a lead with a row since then is read from its first score).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from leadscore.serving.store_tables import from_micros, scores_t, to_micros
from leadscore.training.trend import TREND_WINDOW, PastScore, annotate

if TYPE_CHECKING:
    from leadscore.serving.store import EventStore

EXPORT_COLUMNS = ("lead_id", "scored_at", "computed_at", "p_sql", "p_opportunity", "stage", "previous_stage",
                  "stage_since", "band", "model_version", "reasons_positive", "reasons_negative", "trend", "changes")
#: rows per written chunk (memory stays bounded by it)
CHUNK = 10_000


def annotated_rows(store: EventStore, since: pd.Timestamp | None = None,
                   lead: str | None = None) -> Iterator[dict[str, Any]]:
    """The audit rows (of ``lead``, of moments at or after ``since``), by lead then moment, annotated."""
    c = scores_t.c
    query = sa.select(scores_t)
    if lead is not None:
        query = query.where(c.lead_id == lead)
    if since is not None:
        recent = sa.select(c.lead_id).where(c.scored_at >= to_micros(since)).distinct()
        query = query.where(c.lead_id.in_(recent))
    cut = None if since is None else to_micros(since)
    with store.read() as conn:
        result = conn.execution_options(yield_per=CHUNK).execute(query.order_by(c.lead_id, c.scored_at, c.id))
        current: str | None = None
        past: list[PastScore] = []  # completed moments, newest first
        moment: int | None = None
        last: PastScore | None = None  # the newest row so far of ``moment``
        for r in result.mappings():
            if r["lead_id"] != current:
                current, past, moment, last = r["lead_id"], [], None, None
            if r["scored_at"] != moment:
                if last is not None:
                    past = [last, *past][: TREND_WINDOW - 1]
                moment = r["scored_at"]
            reasons = json.loads(r["reasons"])
            p = float(r["p_sql"])
            trend, changes = annotate(p, reasons, past)
            last = PastScore(p, reasons)
            if cut is not None and r["scored_at"] < cut:
                continue
            yield {"lead_id": r["lead_id"], "scored_at": from_micros(int(r["scored_at"])),
                   "computed_at": from_micros(int(r["computed_at"])), "p_sql": p, "p_opportunity": float(r["p_opportunity"]),
                   "stage": r["stage"], "previous_stage": r["previous_stage"],
                   "stage_since": from_micros(int(r["stage_since"])), "band": r["band"], "model_version": r["model_version"],
                   "reasons_positive": json.dumps(reasons.get("positive", [])),
                   "reasons_negative": json.dumps(reasons.get("negative", [])),
                   "trend": trend, "changes": json.dumps(changes)}


def export_scores(store: EventStore, out: Path, since: pd.Timestamp | None = None, lead: str | None = None) -> int:
    """Write :func:`annotated_rows` to ``out`` (.parquet or .csv), ``CHUNK`` rows at a time; the row count."""
    from leadscore.training.score_files import ScoreWriter

    writer = ScoreWriter(out, EXPORT_COLUMNS)
    buf: list[dict[str, Any]] = []
    try:
        for row in annotated_rows(store, since, lead):
            buf.append(row)
            if len(buf) >= CHUNK:
                writer.write(pd.DataFrame(buf, columns=list(EXPORT_COLUMNS)))
                buf = []
        if buf:
            writer.write(pd.DataFrame(buf, columns=list(EXPORT_COLUMNS)))
    finally:
        writer.close()
    return writer.rows
