"""What a running scoring service holds and does, independent of HTTP: :class:`ServingState`.

It owns the settings, the loaded model (:class:`~leadscore.serving.scoring.Scorer`), the event store
and the secrets; its methods store events and score leads. The routes (``routes_*.py``) only parse,
authenticate and call these, so the same state serves the BentoML service and in-process tests
(``fastapi.testclient.TestClient(create_app(state))``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy.engine import Connection

from leadscore.config import Settings
from leadscore.serving.rescore import account_of, rescore_after_ingest, score_with_fingerprint
from leadscore.serving.schemas import AccountProperties, ActivityIn, Reasons, ScoreOut, ScoreRequest
from leadscore.serving.scoring import Scorer, ScoreResult
from leadscore.serving.stale import StaleWorker, mark_late, serialize, serialize_leads
from leadscore.serving.store import EventStore, StoredScore, to_micros
from leadscore.serving.wire import Event, LeadUpsert, Parsed, StageChangeIn, WireError
from leadscore.training.trend import Trend

#: Why bounded, and why 2: scoring is mostly Python under the GIL, so one process gains nothing from
#: more than ~2 scorings at once (one in SQLite or LightGBM, which release the GIL, one in Python),
#: while every extra one in flight widens the window in which another request's activity commits
#: between a score's read and its append, each such conflict costing a background rescore, and
#: holds one more lead history in memory. Requests beyond it wait their turn in the thread pool.
SCORING_CONCURRENCY = 2


def _env_list(name: str) -> list[str]:
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


@dataclass
class ServingState:
    """Everything a request needs: config, the loaded model, the event store, the secrets."""

    settings: Settings
    scorer: Scorer
    store: EventStore
    api_keys: list[str]
    segment_keys: list[str]
    hubspot_secret: str | None
    public_base_url: str | None = None
    started_at: float = field(default_factory=time.time)
    #: rescores the leads marked stale (:mod:`leadscore.serving.stale`); started with the service
    stale_worker: StaleWorker | None = None
    #: scorings (a request's ingest and scores, a background refresh) running at once in this process
    scoring_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(SCORING_CONCURRENCY))

    @classmethod
    def from_env(cls, settings: Settings, scorer: Scorer, store: EventStore) -> ServingState:
        """Secrets come from the environment variables named in ``serving:``, never from YAML."""
        cfg = settings.serving
        return cls(
            settings=settings,
            scorer=scorer,
            store=store,
            api_keys=_env_list(cfg.api_keys_env),
            segment_keys=_env_list(cfg.segment_write_keys_env),
            hubspot_secret=os.environ.get(cfg.hubspot_client_secret_env) or None,
            public_base_url=os.environ.get(cfg.public_base_url_env) or None,
        )

    def start_stale_worker(self) -> StaleWorker:
        """Start this process's background rescoring of stale leads (idempotent); see :mod:`serving.stale`."""
        if self.stale_worker is None:
            self.stale_worker = StaleWorker(self)
        self.stale_worker.start()
        return self.stale_worker

    def stop_stale_worker(self) -> None:
        if self.stale_worker is not None:
            self.stale_worker.stop()

    def wake_stale_worker(self) -> None:
        """A lead was marked stale by this process: rescore it now rather than at the next poll."""
        if self.stale_worker is not None:
            self.stale_worker.wake()

    def wait_fresh(self, timeout: float = 60.0) -> bool:
        """Wait until no lead is marked stale (every latest score is the score of the stored history).

        With the worker running, waits for it; otherwise drains the queue in this thread (tests)."""
        worker = self.stale_worker or StaleWorker(self)
        return worker.wait_drained(timeout)

    @property
    def catalogue(self) -> set[str]:
        """Every activity type the service knows: the lead's own and the sales-side touches."""
        return set(self.settings.activity_names) | set(self.settings.sales_activity_names)

    def warm_up(self) -> None:
        """Score a made-up lead once, so the first real request does not pay for loading the
        compiled feature kernel and building the LightGBM predictors (seconds, not milliseconds)."""
        at = datetime(2026, 1, 2, tzinfo=UTC)
        req = ScoreRequest.model_validate(
            {
                "lead": {"lead_id": "warm-up", "created_at": "2026-01-01T00:00:00Z", "job_title": "CTO"},
                "account": {"account_id": "warm-up-account", "employees": 100},
                "activities": [{"occurred_at": at.isoformat(), "type": name} for name in sorted(self.catalogue)],
            }
        )
        score_request(self, req)

    # ------------------------------------------------------------------------------- ingestion

    def activity_row(self, a: ActivityIn, received: int) -> dict[str, Any]:
        """The stored form; unknown types become ``other`` with the original kept in properties."""
        typ = a.type.strip().lower()
        props = dict(a.properties or {})
        if typ not in self.catalogue:
            props.setdefault("original_type", a.type)
            typ = "other"
        # a sales touch is sales-side whoever sent it (as when a history is loaded): never the lead's interest
        actor = "sales" if typ in self.settings.sales_activity_names else (a.actor or "lead")
        return {
            "activity_id": a.activity_id,
            "lead_id": a.lead_id,
            "occurred_at": to_micros(pd.Timestamp(a.occurred_at)),
            "type": typ,
            "actor": actor,
            "properties": json.dumps(props, default=str) if props else None,
            "received_at": received,
        }

    def store_events(self, conn: Connection, events: list[tuple[int, Event]]) -> tuple[int, int, set[str], dict[str, list[tuple[pd.Timestamp, bool]]]]:
        """Write events in order inside ``conn``'s transaction.

        Returns (new activities, duplicates, leads whose properties changed, per lead the times of
        the activities in this request with whether each was new).
        """
        received = to_micros(pd.Timestamp(datetime.now(UTC)))
        stored = dupes = 0
        leads_touched: set[str] = set()
        per_lead: dict[str, list[tuple[pd.Timestamp, bool]]] = defaultdict(list)
        for _, ev in events:
            if isinstance(ev, ActivityIn):
                at = pd.Timestamp(ev.occurred_at)
                self._upsert_props(conn, ev.lead_id, ev.lead, ev.account, at)
                new = self.store.add_activities(conn, [self.activity_row(ev, received)])[0]
                stored += int(new)
                dupes += int(not new)
                per_lead[ev.lead_id].append((at, new))
            elif isinstance(ev, LeadUpsert):
                self._upsert_props(conn, ev.lead_id, ev.props, ev.account, pd.Timestamp(ev.at))
                leads_touched.add(ev.lead_id)
            elif isinstance(ev, StageChangeIn):
                self.store.upsert_lead(conn, ev.lead_id, {}, pd.Timestamp(ev.at))
                self.store.add_stage_change(conn, ev.lead_id, ev.stage, pd.Timestamp(ev.at), ev.set_by)
        return stored, dupes, leads_touched, per_lead

    def _upsert_props(
        self, conn: Connection, lead_id: str, lead: Any, account: AccountProperties | None, at: pd.Timestamp
    ) -> None:
        lead_props = lead.model_dump(exclude_none=True) if lead is not None else {}
        if account is not None:
            self.store.upsert_account(conn, account.account_id, account.model_dump(exclude_none=True), at)
            lead_props.setdefault("account_id", account.account_id)
        if lead_props.get("account_id") and account is None:
            # A lead pointing at an account we have never seen: create the account shell so the
            # account roll-ups (colleagues, opportunities) have a row to hang on.
            self.store.upsert_account(conn, lead_props["account_id"], {}, at)
        self.store.upsert_lead(conn, lead_id, lead_props, at)

    # ------------------------------------------------------------------------------- scoring

    def score_stored(self, conn: Connection, lead_id: str, as_of: pd.Timestamp) -> tuple[ScoreResult, pd.Timestamp]:
        """Score a stored lead at ``as_of`` from exactly the history known up to then.

        Also returns since when the lead holds the resulting stage (for recycling and the audit).
        """
        result, since, _ = score_with_fingerprint(self, conn, lead_id, as_of)
        return result, since

    def rescore_after_ingest(self, conn: Connection,
                             per_lead: dict[str, list[tuple[pd.Timestamp, bool]]]) -> list[ScoreResult]:
        """Score each lead of the request on its connection ``conn`` (outside any transaction) and append
        the scores (:func:`leadscore.serving.rescore.rescore_after_ingest`)."""
        return rescore_after_ingest(self, conn, per_lead)


def score_out(r: ScoreResult | StoredScore, trend: Trend, changes: list[str]) -> ScoreOut:
    """The answer of one score; ``trend`` and ``changes`` from its previous scores (:mod:`serving.trail`)."""
    return ScoreOut(
        lead_id=r.lead_id,
        scored_at=r.scored_at.to_pydatetime(),
        p_sql=r.p_sql,
        p_opportunity=r.p_opportunity,
        stage=r.stage,
        previous_stage=r.previous_stage,
        reasons=Reasons(positive=list(r.reasons.get("positive", [])), negative=list(r.reasons.get("negative", []))),
        model_version=r.model_version,
        trend=trend,
        changes=changes,
        band=r.band,
    )


def score_request(st: ServingState, req: ScoreRequest) -> ScoreResult:
    """Score the lead, account and activities carried by ``req`` (``POST /score``); nothing is stored."""

    if req.previous_stage is not None and req.previous_stage not in st.settings.stages.all:
        raise WireError(422, f"unknown stage {req.previous_stage!r}; known: {st.settings.stages.all}", "previous_stage")
    times = [a.occurred_at for a in req.activities]
    as_of = pd.Timestamp(req.as_of or (max(times) if times else datetime.now(UTC)))
    lead = req.lead.model_dump()
    if lead.get("created_at") is None:
        lead["created_at"] = min([*times, as_of.to_pydatetime()])
    if req.account is not None:
        lead["account_id"] = lead.get("account_id") or req.account.account_id
    account_rows = []
    if req.account is not None:
        acc = req.account.model_dump()
        acc["created_at"] = acc.get("created_at") or lead["created_at"]
        account_rows.append(acc)
    received = to_micros(as_of)
    acts = []
    for i, a in enumerate(req.activities):
        row = st.activity_row(
            ActivityIn(activity_id=a.activity_id or f"request-{i}", lead_id=req.lead.lead_id, occurred_at=a.occurred_at,
                       type=a.type, actor=a.actor, properties=a.properties),
            received,
        )
        acts.append(row)

    def micros(rows: list[dict[str, Any]], cols: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{k: (to_micros(pd.Timestamp(v)) if k in cols and v is not None else v) for k, v in r.items()}
                for r in rows]

    from leadscore.features.online import rows_arrays

    history = rows_arrays(micros([lead], ("created_at",))[0],
                          micros(account_rows, ("created_at",))[0] if account_rows else None,
                          [(r["activity_id"], r["occurred_at"], r["type"], r["actor"]) for r in acts
                           if r["occurred_at"] <= received],
                          st.settings)
    return st.scorer.score(history, req.lead.lead_id, as_of, req.previous_stage, days_in_stage=None)


def ingest_and_score(st: ServingState, parsed: Parsed) -> tuple[int, int, list[ScoreResult]]:
    """Store the parsed events in one transaction, then re-score each lead they touched.

    The same transaction marks the leads whose new activities are late (their stored scores, and
    their account colleagues', are rescored in the background: :mod:`leadscore.serving.stale`)."""
    stored, dupes, results, _ = ingest_score_answer(st, parsed, answer=False)
    return stored, dupes, results


def ingest_score_answer(st: ServingState, parsed: Parsed, answer: bool = True
                        ) -> tuple[int, int, list[ScoreResult], list[ScoreOut]]:
    """:func:`ingest_and_score` and, with ``answer``, the answers of its scores (trend and changes read
    from the audit trail: :func:`leadscore.serving.trail.answers`), on one connection.

    One connection for the whole request, taken once it holds a scoring slot (so waiting requests hold
    none): its write transactions (the events, then each score's append) commit on it in turn, each
    before the next step, exactly as durable as on connections of their own.
    """
    from leadscore.serving.trail import answers

    with st.scoring_slots, st.store.engine.connect() as conn:
        stored, dupes, results = _ingest_and_score(st, conn, parsed)
        return stored, dupes, results, answers(st, results, conn) if answer else []


def _ingest_and_score(st: ServingState, conn: Connection, parsed: Parsed) -> tuple[int, int, list[ScoreResult]]:
    marked = False
    with st.store.write(conn):
        stored, dupes, _, per_lead = st.store_events(conn, parsed.events)
        if st.store.dialect == "postgresql":  # the advisory locks: SQLite's single writer already orders these
            serialize(st, conn, {lead_id: account_of(st, conn, lead_id) for lead_id in per_lead})
        for lead_id, items in per_lead.items():
            new = [t for t, is_new in items if is_new]
            if new:
                marked |= mark_late(st, conn, lead_id, min(new), max(new))
    # committed: from here on a crash loses no event, only the score (which is recomputable)
    if marked:
        st.wake_stale_worker()
    return stored, dupes, st.rescore_after_ingest(conn, per_lead)


def store_only(st: ServingState, parsed: Parsed) -> None:
    """Store the parsed events (CRM stage changes and properties) without scoring."""
    with st.store.begin() as conn:
        st.store_events(conn, parsed.events)
        serialize_leads(st, conn, {ev.lead_id for _, ev in parsed.events})
