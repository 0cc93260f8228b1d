"""``GET /accounts/{id}``: the account view — P(an opportunity at the account) and buying-group coverage.

Read from the event store as of a moment (default: now): the account's leads, those the CRM has not
closed (latest stage change at or before the moment not ``customer``/``disqualified``), each one's
latest stored score at or before the moment, and whether it had an activity of its own in the
``accounts.engaged_days`` (30) days before. The arithmetic (noisy-OR, the bundle's account calibrator,
roles from the ``accounts:`` config, coverage) is :mod:`leadscore.training.account_score`, shared with
``leadscore score --accounts``. Leads the service never scored count for coverage, not for the score.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection

from leadscore.serving.http import ERRORS, authorized, error_response, run_blocking
from leadscore.serving.schemas import AccountLead, AccountOut, ErrorOut, RoleCoverage, UtcDatetime
from leadscore.serving.state import ServingState
from leadscore.serving.store_tables import (
    accounts_t,
    activities_t,
    from_micros,
    leads_t,
    scores_t,
    stage_changes_t,
    to_micros,
)
from leadscore.tables import ID_LENGTH, ID_PATTERN
from leadscore.training.account_score import ROLES, account_rows, lead_roles
from leadscore.training.batch_score import CLOSED_STAGES

router = APIRouter()

#: leads per ``IN (...)`` (well under every backend's bound-parameter limit)
_IN_CHUNK = 500
DAY_US = 86_400_000_000


@router.get("/accounts/{account_id}", tags=["scoring"], response_model=AccountOut,
            responses={**ERRORS, 404: {"model": ErrorOut}})
async def get_account(
    account_id: str = Path(min_length=1, max_length=ID_LENGTH, pattern=ID_PATTERN),
    as_of: UtcDatetime | None = Query(None, description="The moment to describe (UTC; default: now)."),
    st: ServingState = Depends(authorized),
) -> JSONResponse:
    """The account's score (calibrated noisy-OR of its open leads' latest P(opportunity)) and which
    buying-group roles (decision maker, influencer, user) engaged in the window (30 days by default)."""
    at = pd.Timestamp(as_of or datetime.now(UTC))
    out = await run_blocking(account_view, st, account_id, at)
    if out is None:
        return error_response(404, f"unknown account {account_id!r}", "account_id", code="not_found")
    return JSONResponse(out.model_dump(mode="json"))


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]


def _open_leads(conn: Connection, ids: list[str], cut: int) -> set[str]:
    """The leads whose latest stage change at or before ``cut`` does not close them."""
    c = stage_changes_t.c
    latest: dict[str, tuple[int, str]] = {}
    for part in _chunks(ids):
        for lead, stage, at in conn.execute(sa.select(c.lead_id, c.stage, c.changed_at)
                                            .where(c.lead_id.in_(part), c.changed_at <= cut)):
            if lead not in latest or int(at) >= latest[lead][0]:
                latest[lead] = (int(at), str(stage))
    return {i for i in ids if latest.get(i, (0, ""))[1] not in CLOSED_STAGES}


def _latest_scores(conn: Connection, ids: list[str], cut: int) -> dict[str, tuple[float, int, str | None]]:
    """Per lead, (P(opportunity), moment, band) of its newest score at or before ``cut``."""
    c = scores_t.c
    out: dict[str, tuple[float, int, str | None]] = {}
    for part in _chunks(ids):
        ranked = (sa.select(c.lead_id, c.p_opportunity, c.scored_at, c.band, sa.func.row_number().over(
            partition_by=c.lead_id, order_by=(c.scored_at.desc(), c.id.desc())).label("rn"))
            .where(c.lead_id.in_(part), c.scored_at <= cut).subquery())
        for lead, p, at, band in conn.execute(sa.select(ranked.c.lead_id, ranked.c.p_opportunity, ranked.c.scored_at,
                                                        ranked.c.band).where(ranked.c.rn == 1)):
            out[str(lead)] = (float(p), int(at), band)
    return out


def _last_own_activity(conn: Connection, ids: list[str], cut: int, days: int) -> dict[str, int]:
    """Per lead, its latest own (``actor = lead``) activity in the engagement window ending at ``cut``."""
    c = activities_t.c
    out: dict[str, int] = {}
    for part in _chunks(ids):
        for lead, at in conn.execute(sa.select(c.lead_id, sa.func.max(c.occurred_at))
                                     .where(c.lead_id.in_(part), c.actor == "lead", c.occurred_at <= cut,
                                            c.occurred_at > cut - days * DAY_US).group_by(c.lead_id)):
            out[str(lead)] = int(at)
    return out


def account_view(st: ServingState, account_id: str, as_of: pd.Timestamp) -> AccountOut | None:
    """The account view at ``as_of`` (None for an unknown account)."""
    cut = to_micros(as_of)
    days = st.settings.accounts.engaged_days
    with st.store.read() as conn:
        if conn.execute(sa.select(accounts_t.c.account_id).where(accounts_t.c.account_id == account_id)).first() is None:
            return None
        lc = leads_t.c
        leads = pd.DataFrame(conn.execute(sa.select(lc.lead_id, lc.seniority, lc.department, lc.job_title)
                                          .where(lc.account_id == account_id).order_by(lc.lead_id)).all(),
                             columns=["lead_id", "seniority", "department", "job_title"])
        ids = [str(i) for i in leads["lead_id"]]
        open_ids = _open_leads(conn, ids, cut)
        scores = _latest_scores(conn, sorted(open_ids), cut)
        engaged_at = _last_own_activity(conn, sorted(open_ids), cut, days)
    leads = leads[leads["lead_id"].astype(str).isin(open_ids)].reset_index(drop=True)
    lead_ids = leads["lead_id"].astype(str).tolist()
    frame = pd.DataFrame({
        "lead_id": lead_ids, "account_id": account_id,
        "p_opportunity": np.array([scores[i][0] if i in scores else np.nan for i in lead_ids], dtype=np.float64),
        "role": lead_roles(leads, st.settings).to_numpy(dtype=object),
        "last_engaged_at": pd.to_datetime([from_micros(engaged_at[i]) if i in engaged_at else pd.NaT for i in lead_ids],
                                          utc=True),
    })
    rows = account_rows(frame, as_of, days, st.scorer.bundle.account_calibration)
    row = rows.iloc[0].to_dict() if len(rows) else None
    since = as_of - pd.Timedelta(days=days)
    out_leads = [
        AccountLead(lead_id=lead, role=role,
                    p_opportunity=scores[lead][0] if lead in scores else None,
                    scored_at=from_micros(scores[lead][1]).to_pydatetime() if lead in scores else None,
                    band=scores[lead][2] if lead in scores else None,
                    engaged=bool(pd.notna(last) and since < last <= as_of))
        for lead, role, last in zip(frame["lead_id"], frame["role"], frame["last_engaged_at"], strict=True)
    ]
    return AccountOut(
        account_id=account_id, as_of=as_of.to_pydatetime(),
        p_account=float(row["p_account"]) if row else 0.0,
        best_lead_p_opportunity=float(row["best_lead_p_opportunity"]) if row else 0.0,
        open_leads=len(lead_ids), scored_leads=len(scores),
        roles_engaged=list(row["roles_engaged"]) if row else [],
        buying_group={r: RoleCoverage(leads=int(row[f"{r}_leads"]) if row else 0,
                                      engaged=int(row[f"{r}_engaged"]) if row else 0) for r in ROLES},
        leads=out_leads,
    )
