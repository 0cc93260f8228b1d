"""The batch dataset: training moments, their features and rule score, and both labels.

One preparation of the history is shared by the three steps; every step is partitionable by lead
(moments are sampled per lead with a per-lead seed, features and labels are per moment).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory


@dataclass
class BuildSummary:
    """What the build produced, for the console, the CI log and the training run's metadata."""

    leads: int = 0
    activities: int = 0
    moments: int = 0
    features: int = 0
    censored_sql: int = 0
    censored_opp: int = 0
    positive_rate_sql: float = float("nan")
    positive_rate_opp: float = float("nan")
    rule_mql_rate: float = float("nan")
    cutoff: str = ""
    schema_hash: str = ""
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def build_dataset(
    history: CRMHistory,
    settings: Settings,
    progress: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, BuildSummary]:
    """``lead_id, as_of, <features>, rule_score, y_sql, y_opp, moment_weight`` for the training moments
    (the last column: :data:`~leadscore.features.moments.WEIGHT_COLUMN`), and a summary.

    ``progress`` shows a console progress display (the CLI); ``on_step`` is called with each step's
    name as it starts (for callers with their own display).
    """
    from leadscore.features.engine import Prepared, columns_frame, feature_columns, plan, prepare
    from leadscore.features.labels import make_labels
    from leadscore.features.moments import WEIGHT_COLUMN, moment_sample
    from leadscore.features.rules import rule_is_mql
    from leadscore.features.schema import feature_schema, schema_hash

    steps: list[tuple[str, Callable[[], None]]] = []
    state: dict[str, object] = {}
    summary = BuildSummary(leads=len(history.leads), activities=len(history.activities),
                           cutoff=pd.Timestamp(history.cutoff).isoformat(), schema_hash=schema_hash(settings))

    def s_prepare() -> None:
        state["prep"] = prepare(history, settings)

    def s_moments() -> None:
        prep: Prepared = state["prep"]  # type: ignore[assignment]
        m_lead, m_t, state["weight"] = moment_sample(history, settings, prep)
        state["codes"] = (m_lead, m_t)

    def s_features() -> None:
        # the moments' lead_id and as_of columns are built there too, beside the kernel
        prep: Prepared = state["prep"]  # type: ignore[assignment]
        codes: tuple[np.ndarray, np.ndarray] = state["codes"]  # type: ignore[assignment]
        state["features"] = feature_columns(prep, plan(settings), *codes)

    def s_labels() -> None:
        columns: dict[str, object] = state["features"]  # type: ignore[assignment]
        moments = pd.DataFrame({"lead_id": columns["lead_id"], "as_of": columns["as_of"]}, copy=False)
        state["labels"] = make_labels(history, moments, settings, state["prep"],  # type: ignore[arg-type]
                                      state["codes"])  # type: ignore[arg-type]

    steps = [("index history", s_prepare), ("sample moments", s_moments), ("compute features", s_features),
             ("label moments", s_labels)]
    t0 = time.perf_counter()
    if progress:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      transient=False) as bar:
            task = bar.add_task("building features", total=len(steps))
            for name, fn in steps:
                bar.update(task, description=name)
                _timed(summary, name, fn, on_step)
                bar.advance(task)
            bar.update(task, description="done")
    else:
        for name, fn in steps:
            _timed(summary, name, fn, on_step)
    columns: dict[str, object] = state["features"]  # type: ignore[assignment]
    labels: pd.DataFrame = state["labels"]  # type: ignore[assignment]
    columns["y_sql"] = labels["y_sql"].to_numpy()
    columns["y_opp"] = labels["y_opp"].to_numpy()
    columns[WEIGHT_COLUMN] = state["weight"]
    feats = columns_frame(columns)
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.moments = len(feats)
    summary.features = len(feature_schema(settings))
    y_sql, y_opp = feats["y_sql"].to_numpy(), feats["y_opp"].to_numpy()
    summary.censored_sql = int(np.isnan(y_sql).sum())
    summary.censored_opp = int(np.isnan(y_opp).sum())
    if summary.moments > summary.censored_sql:
        summary.positive_rate_sql = round(float(np.nanmean(y_sql)), 5)
    if summary.moments > summary.censored_opp:
        summary.positive_rate_opp = round(float(np.nanmean(y_opp)), 5)
    if summary.moments:
        summary.rule_mql_rate = round(float(np.mean(rule_is_mql(feats["rule_score"].to_numpy(), settings))), 5)
    return feats, summary


def _timed(summary: BuildSummary, name: str, fn: Callable[[], None], on_step: Callable[[str], None] | None) -> None:
    if on_step is not None:
        on_step(name)
    t = time.perf_counter()
    fn()
    summary.step_seconds[name] = round(time.perf_counter() - t, 3)
