"""Batch scoring on a Dask cluster: each account-aligned part scored on a worker, exactly as a single machine would.

A part holds its leads' accounts and all their rows (:mod:`features.dask_parts`), so its leads'
features at ``as_of`` are the single-machine ones; the model, its stage policy and ``as_of`` are fixed
on the client (the model loaded and bound once, as the service does) and sent to every worker. The
scoring itself is :func:`training.batch_score.iter_scores` on the part — the same chunks, reasons,
stage policy and trends — and the account rows are the single-machine :func:`account_frame` on the
part (an account is wholly in one part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from distributed import Client

    from leadscore.config import Settings
    from leadscore.features.dask_parts import Part
    from leadscore.history import ValidationReport
    from leadscore.serving.scoring import Scorer
    from leadscore.serving.store import EventStore
    from leadscore.training.batch_score import BatchSummary


@dataclass(frozen=True)
class PartScores:
    """One part's scores (open leads), its closed and not-yet-created lead counts, its account rows and
    its load report (the client merges the reports: one part without leads is no unusable CRM)."""

    scores: list[pd.DataFrame]
    closed: int
    not_created: int
    accounts: pd.DataFrame | None
    report: ValidationReport


def _score_part(part: Part, settings: Settings, scorer: Scorer, cutoff: pd.Timestamp, as_of: pd.Timestamp,
                chunk_size: int, reasons: bool, trail_url: str | None, with_accounts: bool) -> PartScores:
    from leadscore.features.dask_engine import _limit_threads
    from leadscore.features.dask_parts import load_part
    from leadscore.training.batch_score import account_frame, candidate_leads, iter_scores

    _limit_threads()
    history, report = load_part(part, settings, cutoff)
    _, not_created = candidate_leads(history, as_of)
    if not len(history.leads):
        return PartScores([], 0, not_created, None, report)
    trail = None
    if trail_url is not None:
        from leadscore.serving.store import EventStore

        trail = EventStore(trail_url)
    try:
        frames, closed = [], 0
        for frame, n_closed in iter_scores(history, scorer, settings, as_of, chunk_size, None, reasons, trail):
            frames.append(frame)
            closed += n_closed
    finally:
        if trail is not None:
            trail.close()
    accounts = None
    if with_accounts:
        open_scores = pd.concat([f[["lead_id", "p_opportunity"]] for f in frames], ignore_index=True) if frames \
            else pd.DataFrame({"lead_id": pd.Series(dtype=object), "p_opportunity": pd.Series(dtype="float64")})
        accounts = account_frame(history, open_scores, as_of, settings)
    return PartScores(frames, closed, not_created, accounts, report)


def score_parts(crm: str | Path, settings: Settings, client: Client, scorer: Scorer, at: str | None, *,
                chunk_size: int, reasons: bool, trail_url: str | None, with_accounts: bool
                ) -> tuple[pd.Timestamp, int, Iterator[PartScores]]:
    """``as_of``, the number of parts and each part's scores in part order (the CRM shuffled into parts first when it is not
    partitioned by account; the shuffle's scratch directory is removed when the iterator is done)."""
    from types import SimpleNamespace

    from leadscore.features.dask_engine import aligned_parts, ordered_results, resolve_source_cutoff
    from leadscore.training.batch_score import resolve_as_of

    cut = resolve_source_cutoff(crm, None)
    as_of = resolve_as_of(SimpleNamespace(cutoff=cut), at)  # type: ignore[arg-type]  # it reads the cut-off only
    parts, work = aligned_parts(crm, client, cut)

    def run() -> Iterator[PartScores]:
        try:
            [shared_settings, shared_scorer] = client.scatter([settings, scorer], broadcast=True)
            futures = [client.submit(_score_part, p, shared_settings, shared_scorer, cut, as_of, chunk_size, reasons,
                                     trail_url, with_accounts, pure=False) for p in parts]
            yield from ordered_results(futures)
        finally:
            if work is not None:
                import shutil

                shutil.rmtree(work, ignore_errors=True)

    return as_of, len(parts), run()


def score_crm_dask(crm: str | Path, settings: Settings, out: Path, client: Client, *, at: str | None = None,
                   model_uri: str | None = None, bundle_dir: Path | None = None, chunk_size: int = 20_000,
                   on_chunk: Callable[[int, int], None] | None = None,
                   transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None, reasons: bool = True,
                   trail: EventStore | None = None, accounts_out: Path | None = None) -> BatchSummary:
    """:func:`training.batch_score.score_crm` on a Dask cluster: the same arguments and output rows; the
    file holds the parts one after the other (within a part, leads sorted as the single-machine run
    sorts them). ``on_chunk`` reports parts done of parts; ``transform`` runs on the client per chunk."""
    import time

    from leadscore.features.dask_parts import merge_reports
    from leadscore.serving.scoring import Scorer
    from leadscore.training.batch_score import BatchScoreError, BatchSummary, write_accounts
    from leadscore.training.score_files import ScoreWriter

    started = time.perf_counter()
    scorer = Scorer.load(settings, model_uri=model_uri, bundle_dir=bundle_dir)
    if accounts_out is not None and accounts_out.suffix.lower() not in (".parquet", ".csv"):
        raise BatchScoreError(f"--accounts {accounts_out}: write a .parquet or .csv file")
    as_of, n_parts, parts = score_parts(crm, settings, client, scorer, at, chunk_size=chunk_size, reasons=reasons,
                               trail_url=None if trail is None else trail.url, with_accounts=accounts_out is not None)
    writer = ScoreWriter(out)
    closed = not_created = 0
    reports, accounts = [], []
    try:
        for done, part in enumerate(parts, start=1):
            for frame in part.scores:
                writer.write(frame if transform is None else transform(frame))
            closed += part.closed
            not_created += part.not_created
            reports.append(part.report)
            if part.accounts is not None:
                accounts.append(part.accounts)
            if on_chunk is not None:
                on_chunk(done, n_parts)
    finally:
        writer.close()
    if not merge_reports(reports, as_of).usable:
        raise BatchScoreError(f"{crm}: the CRM history is not usable (run leadscore validate {crm})")
    if accounts_out is not None:
        # one row per account, in account order as the single-machine file (an account is in one part only)
        rows = pd.concat(accounts, ignore_index=True).sort_values("account_id", kind="stable", ignore_index=True) \
            if accounts else _no_accounts(as_of)
        write_accounts(rows, accounts_out)
    return BatchSummary(rows=writer.rows, closed=closed, not_created=not_created, as_of=as_of, out=out,
                        seconds=time.perf_counter() - started, model_version=scorer.version)


def _no_accounts(as_of: pd.Timestamp) -> pd.DataFrame:
    """The account rows of a CRM without any open lead: none, with the columns."""
    from leadscore.training.account_score import account_rows

    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ("account_id", "lead_id", "role")})
    return account_rows(empty.assign(p_opportunity=pd.Series(dtype="float64"),
                                     last_engaged_at=pd.Series(dtype="datetime64[us, UTC]")), as_of)
