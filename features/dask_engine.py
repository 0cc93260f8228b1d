"""The Dask engine: the training dataset and the batch scores of a CRM, built part by part on a cluster.

Dask schedules, the kernel computes: every task loads one account-aligned part
(:mod:`features.dask_parts`) through the single-machine loader and runs the single-machine build
(:func:`features.build.build_dataset`) or scoring (:func:`training.batch_score.iter_scores`) on it.
Nothing in those is global to the CRM except what the client fixes once and sends to every task —
the settings (the feature plan, the category vocabularies, the rule score's points, the sampling
seed), the data cut-off and, for scoring, the time scored and the bound model — so each part's rows
are exactly the rows the single-machine run computes for its leads: moments are drawn with a seed
per lead (:mod:`features.moments`), labels and features are per lead and per its account.

Results come back to the client part by part, in part order, and go to a sink (a Parquet file, a
list) as they arrive, so the client holds one part at a time, not the dataset.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.features.build import BuildSummary
from leadscore.features.dask_parts import (
    Part,
    load_part,
    merge_reports,
    partition_count,
    parts_of,
    repartition,
)

if TYPE_CHECKING:
    from distributed import Client

    from leadscore.config import Settings
    from leadscore.history import ValidationReport

#: parts per worker thread when a non-partitioned source is shuffled (a few, so a slow part does not
#: leave the other workers idle at the end, and each stays a small share of a worker's memory)
PARTS_PER_THREAD = 4


@dataclass(frozen=True)
class DaskOptions:
    """Where to run: a scheduler's address, else a ``LocalCluster`` of ``workers`` processes."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | float = "auto"


@contextmanager
def dask_client(options: DaskOptions) -> Iterator[Client]:
    """A client of the given scheduler, or of a ``LocalCluster`` started (and stopped) here.

    Local workers are processes (the kernel holds the GIL between numba calls) with one thread each
    by default: a part is one task, and the kernel's own parallel loop is limited to the worker's
    threads (:func:`_limit_threads`), so cores are not oversubscribed.
    """
    from distributed import Client, LocalCluster

    if options.scheduler:
        with Client(options.scheduler) as client:
            yield client
        return
    workers = options.workers or max(1, os.cpu_count() or 1)
    with LocalCluster(n_workers=workers, threads_per_worker=options.threads_per_worker, processes=True,
                      memory_limit=options.memory_limit, dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _limit_threads() -> None:
    """Run the kernel's parallel loop on this worker's threads only (numba's setting is per calling thread)."""
    import numba
    from distributed import get_worker

    try:
        threads = get_worker().state.nthreads
    except ValueError:  # not on a worker (a synchronous scheduler): leave numba as it is
        return
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


def _threads(client: Client) -> int:
    return max(1, sum(client.nthreads().values()))


def aligned_parts(source: Path | str, client: Client, cutoff: pd.Timestamp, scratch: Path | None = None,
                  on_step: Callable[[str], None] | None = None) -> tuple[list[Part], Path | None]:
    """The parts of ``source``: its own when it is partitioned by account, else a Dask shuffle of it into
    a scratch directory (returned too, for the caller to remove; workers must see it — on a remote
    cluster give a shared ``scratch``, or partition the CRM beforehand)."""
    if partition_count(source) is not None:
        return parts_of(source), None
    work = Path(tempfile.mkdtemp(prefix="leadscore-parts-", dir=scratch))
    repartition(source, work, PARTS_PER_THREAD * _threads(client), client, cutoff=cutoff, on_step=on_step)
    return parts_of(work), work


def resolve_source_cutoff(source: Path | str, cutoff: str | pd.Timestamp | None) -> pd.Timestamp:
    """The cut-off the single-machine loader would use for ``source`` (explicit, else its manifest, else now)."""
    from leadscore.history import is_database_url, resolve_cutoff

    return resolve_cutoff(None if is_database_url(source) else Path(source), cutoff)


def ordered_results(futures: list[Any]) -> Iterator[Any]:
    """Each future's result in submission order, releasing it at once (a worker keeps only unread parts)."""
    for i, future in enumerate(futures):
        yield future.result()
        futures[i] = None
        future.release()


# --------------------------------------------------------------------------------------------------
# the training dataset
# --------------------------------------------------------------------------------------------------


def _build_part(part: Part, settings: Settings, cutoff: pd.Timestamp) -> tuple[pd.DataFrame | None, ValidationReport,
                                                                                BuildSummary | None]:
    """One part's dataset, with the single-machine build (None for a part without leads)."""
    from leadscore.features.build import build_dataset

    _limit_threads()
    history, report = load_part(part, settings, cutoff)
    if not len(history.leads):
        return None, report, None
    frame, summary = build_dataset(history, settings)
    return frame, report, summary


@dataclass
class DaskBuild:
    """What a Dask build produced: the summary (as the single-machine build reports it) and the load report."""

    summary: BuildSummary
    report: ValidationReport
    parts: int
    cutoff: pd.Timestamp


def build_dataset_dask(
    source: Path | str,
    settings: Settings,
    client: Client,
    sink: Callable[[pd.DataFrame], None],
    cutoff: str | pd.Timestamp | None = None,
    scratch: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DaskBuild:
    """Build the training dataset of ``source`` on the cluster; each part's frame goes to ``sink`` in part order.

    The union of the frames equals :func:`features.build.build_dataset` on the whole history, row for
    row and bit for bit (rows grouped by part instead of in leads-table order).
    """
    import time

    from leadscore.features.schema import feature_schema, schema_hash

    started = time.perf_counter()
    cut = resolve_source_cutoff(source, cutoff)
    parts, work = aligned_parts(source, client, cut, scratch, on_step)
    try:
        if on_step is not None:
            on_step(f"building features of {len(parts)} parts")
        [shared] = client.scatter([settings], broadcast=True)
        futures = [client.submit(_build_part, p, shared, cut, pure=False) for p in parts]
        totals = _Totals()
        reports = []
        for frame, report, summary in ordered_results(futures):
            reports.append(report)
            if frame is not None and summary is not None:
                totals.add(frame, summary, settings)
                sink(frame)
    finally:
        if work is not None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    out = totals.summary(cut, schema_hash(settings), len(feature_schema(settings)))
    out.seconds = round(time.perf_counter() - started, 3)
    return DaskBuild(out, merge_reports(reports, cut), len(parts), cut)


class _Totals:
    """The build summary's counts summed over parts; rates from the summed counts (exact: counts of 0/1)."""

    def __init__(self) -> None:
        self.leads = self.activities = self.moments = 0
        self.censored = [0, 0]
        self.positives = [0, 0]
        self.mql = 0
        self.step_seconds: dict[str, float] = {}

    def add(self, frame: pd.DataFrame, summary: BuildSummary, settings: Settings) -> None:
        from leadscore.features.rules import rule_is_mql

        self.leads += summary.leads
        self.activities += summary.activities
        self.moments += len(frame)
        for i, col in enumerate(("y_sql", "y_opp")):
            y = frame[col].to_numpy(dtype=np.float64)
            self.censored[i] += int(np.isnan(y).sum())
            self.positives[i] += int((y == 1.0).sum())
        self.mql += int(np.sum(rule_is_mql(frame["rule_score"].to_numpy(), settings)))
        for step, s in summary.step_seconds.items():  # worker seconds, summed over parts
            self.step_seconds[step] = round(self.step_seconds.get(step, 0.0) + s, 3)

    def summary(self, cutoff: pd.Timestamp, schema_hash: str, features: int) -> BuildSummary:
        out = BuildSummary(leads=self.leads, activities=self.activities, moments=self.moments, features=features,
                           censored_sql=self.censored[0], censored_opp=self.censored[1],
                           cutoff=pd.Timestamp(cutoff).isoformat(), schema_hash=schema_hash,
                           step_seconds=self.step_seconds)
        labelled = [self.moments - c for c in self.censored]
        if labelled[0]:
            out.positive_rate_sql = round(self.positives[0] / labelled[0], 5)
        if labelled[1]:
            out.positive_rate_opp = round(self.positives[1] / labelled[1], 5)
        if self.moments:
            out.rule_mql_rate = round(self.mql / self.moments, 5)
        return out


class ParquetSink:
    """Frames appended to one Parquet file as they come (the client holds one part, not the dataset)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(table.cast(self._schema))
        self.rows += len(frame)

    def close(self, empty: Callable[[], pd.DataFrame] | None = None) -> None:
        """Finish the file; with nothing written, ``empty()`` (a zero-row frame) is written instead."""
        if self._writer is not None:
            self._writer.close()
        elif empty is not None:
            empty().to_parquet(self.path, index=False)


def build_frame_dask(source: Path | str, settings: Settings, client: Client, cutoff: str | pd.Timestamp | None = None,
                     scratch: Path | None = None) -> tuple[pd.DataFrame, DaskBuild]:
    """The whole dataset as one frame on the client (training reads it in memory), rows sorted by
    ``(lead_id, as_of)`` so that the order does not depend on the number of parts. An unusable history
    is a :class:`~leadscore.errors.DataError`, as on the single-machine path."""
    from leadscore.errors import DataError

    frames: list[pd.DataFrame] = []
    build = build_dataset_dask(source, settings, client, frames.append, cutoff=cutoff, scratch=scratch)
    if not build.report.usable or not frames:
        bad = {n: t.unusable for n, t in build.report.tables.items() if t.unusable} or "no lead in any part"
        raise DataError(f"CRM history in {source} is not usable: {bad}")
    frame = pd.concat(frames, ignore_index=True)
    del frames
    return frame.sort_values(["lead_id", "as_of"], kind="stable", ignore_index=True), build


#: the values of the commands' ``--engine`` option
ENGINES = ("local", "dask")


def check_engine(engine: str, scheduler: str | None) -> None:
    """Refuse an unknown ``--engine``, or a ``--scheduler`` without ``--engine dask`` (ValueError, for the CLI)."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "local" and scheduler is not None:
        raise ValueError("--scheduler goes with --engine dask")


@contextmanager
def engine_client(engine: str, scheduler: str | None) -> Iterator[Client | None]:
    """``--engine``/``--scheduler`` of a command: None for the single-machine path, else a Dask client
    (of ``scheduler``, or of a ``LocalCluster`` with one single-threaded worker process per core)."""
    check_engine(engine, scheduler)
    if engine == "local":
        yield None
        return
    with dask_client(DaskOptions(scheduler=scheduler)) as client:
        yield client
