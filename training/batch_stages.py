"""Batch scoring's stages: :meth:`StagePolicy.stage` of every row of a chunk as array comparisons.

The one-row policy (:mod:`training.stage_policy`) stays the definition; here its comparisons run per
distinct previous stage over arrays of probabilities, and the stages come out as codes into their labels
(:func:`stage_codes`), from which :func:`training.batch_score.score_frame` builds the text column in
Arrow. ``tests/test_batch_vectorised.py`` holds every branch to the one-row rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadscore.training.stage_policy import _FUNNEL_RANK, StagePolicy

if TYPE_CHECKING:
    from leadscore.training.linear import FrameColumns


def previous_stages(features: pd.DataFrame, cols: FrameColumns) -> tuple[np.ndarray, list[str]]:
    """Each row's ``current_stage`` feature as the policy's previous stage: codes (-1: None) into labels,
    from the batch's factorisation of the column."""
    if "current_stage" not in features:
        return np.full(len(features), -1, dtype=np.int64), []
    codes, uniques = cols.factorized("current_stage")
    return codes, [str(v) for v in uniques.tolist()]


def policy_stages(policy: StagePolicy, p_sql: np.ndarray, p_opp: np.ndarray, previous: np.ndarray,
                  days: np.ndarray | None) -> np.ndarray:
    """:meth:`StagePolicy.stage` of every row as array comparisons (``previous``: stage text or None;
    ``days``: NaN where unknown): :func:`stage_codes` of the distinct previous stages, as text."""
    codes, uniques = pd.factorize(pd.Series(previous, dtype=object), use_na_sentinel=True)
    got, labels = stage_codes(policy, p_sql, p_opp, codes, [str(v) for v in uniques.tolist()], days)
    return np.array(labels, dtype=object)[got]


def stage_codes(policy: StagePolicy, p_sql: np.ndarray, p_opp: np.ndarray, prev_codes: np.ndarray,
                prev_labels: Sequence[str], days: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """:func:`policy_stages` as codes into stage labels (``prev_codes``: each row's previous stage as a code
    into ``prev_labels``, -1 None): the text column is built from them without factorising the stages
    again. Per distinct previous stage the bars are the policy's own arithmetic on the same doubles,
    compared with the same ``>=``; ``tests/test_batch_score.py`` checks every branch against the one-row
    rule, which stays the definition."""
    n = len(p_sql)
    out = np.empty(n, dtype=np.int64)
    labels = ["sql", "mql"]
    index = {"sql": 0, "mql": 1}

    def code(label: str) -> int:
        if label not in index:
            index[label] = len(labels)
            labels.append(label)
        return index[label]

    limit = policy.recycle_after_days
    long_held = np.zeros(n, dtype=bool) if days is None or limit is None else \
        np.nan_to_num(np.asarray(days, dtype=np.float64), nan=-np.inf) >= limit
    keep, lift = 1.0 - policy.hysteresis, 1.0 + policy.hysteresis
    for c, label in enumerate([*prev_labels, None]):
        rows = np.flatnonzero(prev_codes == c) if label is not None else np.flatnonzero(prev_codes < 0)
        if not len(rows):
            continue
        prev = label or "lead"
        if prev in policy.sales_owned_stages:
            out[rows] = code(prev)
            continue
        sql_bar, mql_bar = {"sql": (policy.sql_threshold * keep, policy.mql_threshold * keep),
                            "mql": (policy.sql_threshold, policy.mql_threshold * keep),
                            "recycled": (policy.sql_threshold * lift, policy.mql_threshold * lift),
                            }.get(prev, (policy.sql_threshold, policy.mql_threshold))
        rest = code(prev if prev in ("subscriber", "recycled") else "lead")
        new = np.where(p_opp[rows] >= sql_bar, 0, np.where(p_sql[rows] >= mql_bar, 1, rest))
        if prev in ("mql", "sql"):  # no progress for recycle_after_days: back to marketing
            no_progress = np.array([_FUNNEL_RANK[s] <= _FUNNEL_RANK[prev] for s in ("sql", "mql", "lead")])
            new[long_held[rows] & no_progress[np.minimum(new, 2)]] = code("recycled")
        out[rows] = new
    return out, labels


__all__ = ["policy_stages", "previous_stages", "stage_codes"]
