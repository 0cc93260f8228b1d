"""Batch scoring: every open lead of a CRM history, as of one time, exactly as the service scores it.

Scores decay (recency, decayed counts, velocity) but the service rescores a lead only when something
arrives for it, so a lead that went quiet keeps its old score and stage. ``leadscore score`` fixes that
on a schedule. It reuses the service's pieces instead of copying them:

* the model is the service's :class:`~leadscore.serving.scoring.Scorer` (the bundle bound to the
  feature code by ``bind(settings)``, its stage policy and version);
* the features come from the batch feature build (``features.engine``), which runs the very kernel the
  online entry runs, so a lead's row equals the one the service computes for ``(lead, T)``;
* probabilities and contributions come from one compiled pass over the chunk for every target
  (:func:`~training.batch_explain.explain_block`: the path walk of its trees, whose margin is LightGBM's to
  the bit, and its logistic terms and blend), calibrated by the same ``np.interp`` as the one-row path;
* reasons are the same sentences as :func:`training.reasons.top_reasons` over the same contributions
  (the bundle's attribution, :mod:`training.attribution`), computed for the whole chunk at once: the
  same pass runs the one-row rule compiled on each row as soon as its contributions are made
  (:class:`training.reason_batch.BatchWalk`, over a table of the sentences each distinct (column, shown
  value) words, kept across chunks), and sums them per band group as the service does; the text columns
  are assembled in Arrow (:mod:`training.score_columns`), the JSON lists of reasons compiled on a helper
  thread meanwhile;
* the stage is the bundle's :class:`StagePolicy`, with hysteresis from the lead's current stage and
  the days it has held it, both read from the kernel's own ``current_stage``/``days_in_stage``
  features: the stage the CRM recorded last at or before ``T``, as the service reads it
  (:func:`training.batch_stages.stage_codes`: the policy's comparisons over arrays).

Nothing here loops over rows in Python except for leads with previous scores (their trend and changes):
the per-row wording and policy calls cost several times the models (``benchmarks/score.py``).

Memory stays bounded by the chunk: the history is prepared once (the kernel's arrays), then features,
predictions and reasons are computed ``chunk_size`` leads at a time and each chunk is written out before
the next is computed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.errors import LeadscoreError
from leadscore.training.batch_stages import previous_stages, stage_codes
from leadscore.training.score_columns import (
    coded_column,
    inferred_text_dtype,
    json_list_column,
    quoted_sentences,
    repeated_column,
    text_column,
)
from leadscore.training.trend import PastScore, annotate, trend

if TYPE_CHECKING:
    from distributed import Client

    from leadscore.config import Settings
    from leadscore.history import CRMHistory
    from leadscore.serving.scoring import Scorer
    from leadscore.serving.store import EventStore
    from leadscore.training.account_calibration import AccountCalibrator

#: stages whose leads are not scored: the CRM closed them (ARCHITECTURE §4, issue 14)
CLOSED_STAGES = ("customer", "disqualified")
#: reasons per side, as the service answers
REASONS_K = 3
#: the output columns, in order (lists are JSON text so CSV and Parquet hold the same values)
COLUMNS = ("lead_id", "scored_at", "p_sql", "p_opportunity", "stage", "previous_stage", "days_in_stage",
           "reasons_positive", "reasons_negative", "model_version", "trend", "changes", "band")
#: ``scored_at``'s dtype (the feature rows' ``as_of`` already has it: no conversion)
_UTC = pd.DatetimeTZDtype("us", "UTC")


class BatchScoreError(LeadscoreError):
    """The batch cannot be scored as asked (bad time, bad output path); the message says why."""


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did: rows written, leads skipped as closed, where, how fast."""

    rows: int
    closed: int
    not_created: int
    as_of: pd.Timestamp
    out: Path | None
    seconds: float
    model_version: str


def candidate_leads(history: CRMHistory, as_of: pd.Timestamp) -> tuple[np.ndarray, int]:
    """Ids of the leads that exist at ``as_of`` (created at or before it), sorted; and how many do not."""
    leads = history.leads
    created = pd.to_datetime(leads["created_at"], utc=True)
    keep = (created <= as_of).to_numpy()
    ids = np.sort(leads["lead_id"].to_numpy(dtype=object)[keep])
    return ids, int((~keep).sum())


def score_frame(scorer: Scorer, features: pd.DataFrame, reasons: bool = True,
                previous: Mapping[str, Sequence[PastScore]] | None = None) -> pd.DataFrame:
    """Score feature rows (``features.compute`` output) as the service would: one output row per input row.

    ``previous_stage`` and ``days_in_stage`` are the rows' own ``current_stage``/``days_in_stage``
    features (the CRM's last stage change at or before the moment), which is what the service passes
    to the policy for a stored lead it has not scored yet, and what a CRM sends ``POST /score`` as
    ``previous_stage``. ``reasons=False`` leaves the reason columns empty (``[]``): wording the reasons
    costs more than the models (``benchmarks/score.py``; a TreeSHAP bundle ~50x a prediction), so a
    probability-and-stage refresh can skip it.

    ``previous``: per lead its previous scores, newest first (:func:`serving.trail.previous_scores`), for
    ``trend`` and ``changes`` (:mod:`training.trend`, the service's rule); a lead without any is ``new``.
    Without reasons, ``changes`` is empty (there is nothing to compare), and so is ``band``: the
    fit/engagement band sums the same contributions the reasons do (:mod:`training.bands`).
    """
    bundle = scorer.bundle
    n = len(features)
    from leadscore.training.batch_explain import explain_block
    from leadscore.training.linear import FrameColumns

    cols = FrameColumns(features)
    worded: tuple[np.ndarray, np.ndarray, list[str], Any] | None = None
    band_codes = None
    if reasons:  # the reasons walk and the band sums run in the scoring pass, row by row (training.batch_pass)
        from leadscore.training.bands import BAND_LABELS, band_groups, codes_of_sums
        from leadscore.training.reason_batch import BatchWalk

        cuts = bundle.bands
        groups = band_groups(bundle.schema) if cuts is not None else None
        with BatchWalk.open(bundle._reason_plan(), features, REASONS_K, factorize=cols.factorized,
                            column=cols.column) as walk:
            probs, contrib, block, group_sums = explain_block(bundle, features, "sql", cols, groups=groups, walk=walk)
            worded = walk.finish(contrib, block)
        if cuts is not None:
            band_codes = codes_of_sums(group_sums, cuts)
    else:
        probs, _, _, _ = explain_block(bundle, features, None, cols)
    text = inferred_text_dtype()  # text columns assembled in Arrow as pandas would infer them (score_columns)
    texts: list[str] = []
    pos_ids = neg_ids = np.empty((n, 0), dtype=np.int64)
    if worded is not None:
        pos_ids, neg_ids, texts, quoted = worded
    else:
        quoted = quoted_sentences(texts)
    # the JSON lists (compiled, GIL released) on a helper thread while this one builds the other columns
    lists = _lists_thread().submit(lambda: [json_list_column(ids, texts, text, quoted) for ids in (pos_ids, neg_ids)])
    p_sql = probs["p_sql"]
    # a one-target (flat) bundle's probability stands for both stages, as its stage policy was fitted
    p_opp = probs["p_opportunity"] if "p_opportunity" in probs else p_sql.copy()
    prev_codes, prev_labels = previous_stages(features, cols)
    days = features["days_in_stage"].to_numpy(dtype=np.float64) if "days_in_stage" in features else None
    stages, stage_labels = stage_codes(scorer.policy, p_sql, p_opp, prev_codes, prev_labels, days)
    band_col = text_column(np.full(n, None, dtype=object), text)
    if band_codes is not None:
        band_col = coded_column(band_codes, BAND_LABELS, text)
    lead_ids = features["lead_id"]
    stage_col, previous_col = coded_column(stages, stage_labels, text), coded_column(prev_codes, prev_labels, text)
    if previous:
        leads = lead_ids.astype(object).to_numpy()
        trends, changed = _trends(leads, p_sql, previous, texts, pos_ids, neg_ids, worded=reasons)
        trend_col, changes_col = text_column(trends, text), text_column(changed, text)
    else:  # a lead without previous scores is new with no changes (what training.trend answers)
        trend_col, changes_col = repeated_column("new", n, text), repeated_column("[]", n, text)
    as_of = features["as_of"]
    if as_of.dtype != _UTC:
        as_of = pd.to_datetime(as_of, utc=True)
    reasons_positive, reasons_negative = lists.result()
    columns = {  # in COLUMNS' order: a frame built from them as they are is a third of one that reorders them
        "lead_id": lead_ids.array if lead_ids.dtype == text else text_column(lead_ids.astype(object).to_numpy(), text),
        "scored_at": as_of.array,  # UTC, no index to align
        "p_sql": p_sql, "p_opportunity": p_opp, "stage": stage_col, "previous_stage": previous_col,
        "days_in_stage": days if days is not None else np.full(n, np.nan),
        "reasons_positive": reasons_positive, "reasons_negative": reasons_negative,
        "model_version": repeated_column(scorer.version, n, text),
        "trend": trend_col, "changes": changes_col, "band": band_col,
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(n), copy=False)


@cache
def _lists_thread() -> ThreadPoolExecutor:
    """The thread :func:`score_frame` writes a chunk's JSON lists of reasons on (:mod:`training.json_lists`:
    compiled, without the GIL) while it builds the other columns (Python, with it): started on first use and
    kept, its compiled loops on one thread (numba's count is per thread), this core's share."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadscore-lists", initializer=_one_numba_thread)


def _one_numba_thread() -> None:
    import numba

    numba.set_num_threads(1)


def _trends(leads: np.ndarray, p_sql: np.ndarray, previous: Mapping[str, Sequence[PastScore]], texts: Sequence[str],
            pos_ids: np.ndarray, neg_ids: np.ndarray, worded: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``trend`` and ``changes`` (JSON) by :mod:`training.trend`; a lead without previous scores
    is ``new`` with no changes (what the rule answers for it), so only leads with a past are visited.
    Without the reasons (``worded`` false) there is nothing to compare: no changes."""
    trends = np.full(len(leads), "new", dtype=object)
    changed = np.full(len(leads), "[]", dtype=object)
    if not previous:
        return trends, changed
    for i, lead in enumerate(leads.tolist()):
        past = previous.get(lead, ())
        if not past:
            continue
        if not worded:
            trends[i] = trend(float(p_sql[i]), past)
            continue
        reasons = {"positive": [texts[t] for t in pos_ids[i].tolist() if t >= 0],
                   "negative": [texts[t] for t in neg_ids[i].tolist() if t >= 0]}
        trends[i], c = annotate(float(p_sql[i]), reasons, past)
        changed[i] = json.dumps(c)
    return trends, changed


def iter_scores(
    history: CRMHistory,
    scorer: Scorer,
    settings: Settings,
    as_of: pd.Timestamp,
    chunk_size: int = 20_000,
    on_chunk: Callable[[int, int], None] | None = None,
    reasons: bool = True,
    trail: EventStore | None = None,
) -> Iterator[tuple[pd.DataFrame, int]]:
    """Yield ``(scores of the open leads of one chunk, leads closed in it)``, chunk by chunk.

    ``on_chunk(done, total)`` reports progress in leads. The kernel's arrays are prepared once for the
    whole history; each chunk computes only its leads' features at ``as_of``. ``trail``: the service's
    event store, whose ``scores`` before ``as_of`` give each lead's trend and changes (None: all ``new``).
    """
    from leadscore.features.engine import compute_features, prepare

    ids, _ = candidate_leads(history, as_of)
    prep = prepare(history, settings)
    total = len(ids)
    for start in range(0, total, chunk_size):
        chunk = ids[start : start + chunk_size]
        moments = pd.DataFrame({"lead_id": chunk, "as_of": pd.Series([as_of] * len(chunk), dtype="datetime64[us, UTC]")})
        feats = compute_features(history, moments, settings, prep=prep, coded=True)
        stage = feats["current_stage"].astype(object) if "current_stage" in feats else pd.Series([None] * len(feats))
        closed = stage.isin(CLOSED_STAGES).to_numpy()
        open_feats = feats.loc[~closed].reset_index(drop=True)
        if on_chunk is not None:
            on_chunk(min(start + chunk_size, total), total)
        if not len(open_feats):
            yield pd.DataFrame(columns=list(COLUMNS)), int(closed.sum())
            continue
        previous = None
        if trail is not None:
            from leadscore.serving.trail import previous_scores

            with trail.read() as conn:
                previous = previous_scores(conn, open_feats["lead_id"].astype(str), as_of)
        yield score_frame(scorer, open_feats, reasons, previous), int(closed.sum())


def account_frame(history: CRMHistory, scores: pd.DataFrame, as_of: pd.Timestamp, settings: Settings,
                  calibrator: AccountCalibrator | None = None) -> pd.DataFrame:
    """One row per account of the scored open leads (``lead_id, p_opportunity``): account score (through
    the bundle's ``calibrator``, as ``GET /accounts/{id}`` applies it) and buying-group coverage
    (:mod:`training.account_score`)."""
    from leadscore.training.account_score import account_rows, last_own_activity, open_lead_frame

    last = last_own_activity(history.activities, as_of)
    return account_rows(open_lead_frame(history.leads, scores, last, settings), as_of,
                        settings.accounts.engaged_days, calibrator)


def write_accounts(frame: pd.DataFrame, path: Path) -> None:
    """The account rows as Parquet or CSV (``roles_engaged`` as JSON text, like the reasons)."""
    out = frame.assign(roles_engaged=[json.dumps(list(r)) for r in frame["roles_engaged"]])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        out.to_csv(path, index=False)
    else:
        out.to_parquet(path, index=False)


def resolve_as_of(history: CRMHistory, at: str | None) -> pd.Timestamp:
    """``--at`` as a UTC time (default: the data cut-off); a time after the cut-off is refused."""
    if at is None:
        return pd.Timestamp(history.cutoff)
    try:
        ts = pd.Timestamp(at)
    except ValueError as exc:
        raise BatchScoreError(f"--at {at!r}: not a time ({exc})") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts > pd.Timestamp(history.cutoff):
        raise BatchScoreError(f"--at {ts.isoformat()} is after the data cut-off {history.cutoff.isoformat()}: "
                              "nothing after the cut-off is known")
    return ts


def score_crm(
    crm: str | Path,
    settings: Settings,
    out: Path,
    *,
    at: str | None = None,
    model_uri: str | None = None,
    bundle_dir: Path | None = None,
    chunk_size: int = 20_000,
    on_chunk: Callable[[int, int], None] | None = None,
    transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    reasons: bool = True,
    trail: EventStore | None = None,
    accounts_out: Path | None = None,
    client: Client | None = None,
) -> BatchSummary:
    """``leadscore score``: load and validate the CRM, load the model as the service does, score every open
    lead at ``at`` (default: the cut-off) chunk by chunk into ``out``. ``transform`` turns each chunk of
    scores into the rows written (the CRM import formats and ``--changed-only``, :mod:`training.export`);
    ``trail`` the service's event store whose audit gives the trends (:func:`iter_scores`); ``accounts_out``
    a .parquet or .csv file that gets one row per account (:func:`write_accounts`). ``client``: a Dask
    client; the CRM is then scored part by part on its cluster (:mod:`training.dask_score`)."""
    import time

    if client is not None:
        from leadscore.training.dask_score import score_crm_dask

        return score_crm_dask(crm, settings, out, client, at=at, model_uri=model_uri, bundle_dir=bundle_dir,
                              chunk_size=chunk_size, on_chunk=on_chunk, transform=transform, reasons=reasons,
                              trail=trail, accounts_out=accounts_out)

    from leadscore.history import load_history
    from leadscore.serving.scoring import Scorer

    started = time.perf_counter()
    history, report = load_history(crm, settings, write_rejected=False)
    if not report.usable:
        raise BatchScoreError(f"{crm}: the CRM history is not usable (run leadscore validate {crm})")
    as_of = resolve_as_of(history, at)
    scorer = Scorer.load(settings, model_uri=model_uri, bundle_dir=bundle_dir)
    if accounts_out is not None and accounts_out.suffix.lower() not in (".parquet", ".csv"):
        raise BatchScoreError(f"--accounts {accounts_out}: write a .parquet or .csv file")
    from leadscore.training.score_files import ScoreWriter

    writer = ScoreWriter(out)
    closed = 0
    lead_scores: list[pd.DataFrame] = []
    try:
        for frame, n_closed in iter_scores(history, scorer, settings, as_of, chunk_size, on_chunk, reasons, trail):
            if accounts_out is not None:
                lead_scores.append(frame[["lead_id", "p_opportunity"]])
            writer.write(frame if transform is None else transform(frame))
            closed += n_closed
    finally:
        writer.close()
    if accounts_out is not None:
        scores = pd.concat(lead_scores, ignore_index=True) if lead_scores else pd.DataFrame(
            {"lead_id": pd.Series(dtype=object), "p_opportunity": pd.Series(dtype=np.float64)})
        write_accounts(account_frame(history, scores, as_of, settings, scorer.bundle.account_calibration),
                       accounts_out)
    _, not_created = candidate_leads(history, as_of)
    return BatchSummary(rows=writer.rows, closed=closed, not_created=not_created, as_of=as_of, out=out,
                        seconds=time.perf_counter() - started, model_version=scorer.version)
