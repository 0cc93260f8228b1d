"""The online entry: features and rule score of one lead at one moment, for the scoring API.

It runs the batch code path (``engine.prepare`` → the numba kernel → ``engine.rule_scores``) on a
history holding just that lead, its account and the account's other leads, so a lead scored online
at time t gets bit-for-bit the row that ``features.compute`` produces for ``(lead, t)`` in training.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.features.engine import FeatureInputError, plan, prepare, rule_scores, run

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory


def _as_of_us(as_of: pd.Timestamp | datetime | str) -> tuple[pd.Timestamp, int]:
    ts = pd.Timestamp(as_of)
    if ts is pd.NaT or (isinstance(ts, float) and math.isnan(ts)):
        raise FeatureInputError("as_of: missing timestamp")
    ts = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")
    return ts, int(ts.asm8.astype("datetime64[us]").astype(np.int64))


def compute_many(history: CRMHistory, lead_id: str, as_of: list[Any], settings: Settings) -> list[dict[str, object]]:
    """:func:`compute_one` for several moments of the same lead (one preparation, one kernel call)."""
    p = plan(settings)
    prep = prepare(history, settings, only_lead=lead_id)
    code = int(prep.leads.codes(np.array([lead_id], dtype=object))[0])
    stamps = [_as_of_us(a) for a in as_of]
    m_t = np.array([us for _, us in stamps], dtype=np.int64)
    m_lead = np.full(len(m_t), code, dtype=np.int64)
    out = run(prep, m_lead, m_t, parallel=False)
    cat = [c[code] for c in prep.fit_cat]
    num = [float(c[code]) for c in prep.fit_num]
    rows: list[dict[str, object]] = []
    for r, (ts, _) in enumerate(stamps):
        row: dict[str, object] = {"lead_id": lead_id, "as_of": ts}
        vec = out[:, r]
        for spec, (kind, i) in zip(p.schema, p.sources, strict=True):
            if kind == "k":
                row[spec.name] = float(vec[i])
            elif kind == "cat":
                row[spec.name] = cat[i]
            elif kind == "num":
                row[spec.name] = num[i]
            else:
                c = int(vec[i])
                row[spec.name] = p.categories[spec.name][c] if c >= 0 else float("nan")

        def column(name: str, row: dict[str, object] = row) -> np.ndarray:
            v = row[name]
            return np.array([v], dtype=object if isinstance(v, str) or v is None else np.float64) \
                if not isinstance(v, float) else np.array([v], dtype=np.float64)

        row["rule_score"] = float(rule_scores(p, p.rule_points(out[:, r:r + 1]), column)[0])
        rows.append(row)
    return rows


def compute_one(history: CRMHistory, lead_id: str, as_of: pd.Timestamp | datetime | str,
                settings: Settings) -> dict[str, object]:
    """Features of ``lead_id`` at ``as_of`` as ``{"lead_id", "as_of", <feature>..., "rule_score"}``.

    ``history`` should hold the lead, its account, that account's other leads, the lead's activities
    and stage changes, and the account's opportunities (more rows are harmless). The other leads'
    activities only feed the 30-day account rollups, so the caller may pass just those dated in
    ``(as_of - 30 days, as_of]``: cost grows with the rows passed (about 0.5 ms for a lead with 200
    activities, several ms for an account with ~10k activities if all are passed).

    Values equal the batch row exactly: ``float`` for float64 features (NaN when undefined), ``str``
    or NaN for categorical ones, ``as_of`` as a UTC ``pd.Timestamp``. Rows dated after ``as_of`` are
    ignored. Raises :class:`~features.engine.FeatureInputError` naming the table/column on bad input.
    """
    return compute_many(history, lead_id, [as_of], settings)[0]
