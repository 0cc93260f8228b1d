"""Replaying MQL policies on scored moments: who would have become an MQL when, and what came of it.

Shared by the threshold fit (:mod:`training.sla`) and the SLA review report (:mod:`training.report`),
so a threshold is fitted and reviewed on exactly the same replay.

Semantics: scoring moments of a lead are replayed in time order and the lead becomes an MQL at its
FIRST moment whose score reaches the threshold; later moments of the same lead do not count again.
That first crossing is exactly the moment where the running maximum of the lead's score sets a new
record, so for every lead we keep its record moments once, and the MQL moment at any threshold ``t``
is the record with ``previous record < t <= record``. Every volume/rate curve over thresholds is then
a difference of two sorted cumulative sums, which is exact and fast enough to sweep every distinct
score.

Outcomes: a moment's MQL converted if ``y_sql == 1`` (``y_opp`` for opportunities); censored moments
(``NaN``: the horizon ran past the data cut-off) count in the volume but are excluded from rates, and so
are positives later than the last observable negative (see :func:`matured_labels`), which would
otherwise inflate rates near the cut-off. Recall ("did the policy flag the eventual SQLs") uses every
observed conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadscore.errors import DataError

SCORED_COLUMNS = ("lead_id", "as_of", "p_sql", "p_opportunity", "rule_score", "y_sql", "y_opp")
SEGMENT_COLUMNS = ("source", "industry", "employee_band")


class ScoredFrameError(DataError):
    """The scored frame handed to the SLA code is not usable; the message names the column."""


def check_scored(scored: pd.DataFrame, score_columns: tuple[str, ...] = ("p_sql", "p_opportunity", "rule_score")) -> None:
    """Raise :class:`ScoredFrameError` naming the column if ``scored`` cannot be replayed."""
    missing = [c for c in SCORED_COLUMNS if c not in scored.columns]
    if missing:
        raise ScoredFrameError(f"scored frame lacks column(s) {missing}; it has {list(scored.columns)}")
    if scored.empty:
        raise ScoredFrameError("scored frame has no rows: nothing to fit or replay")
    if scored["lead_id"].isna().any():
        raise ScoredFrameError(f"column 'lead_id' has {int(scored['lead_id'].isna().sum())} missing value(s)")
    as_of = pd.to_datetime(scored["as_of"], utc=True, errors="coerce")
    if as_of.isna().any():
        raise ScoredFrameError(f"column 'as_of' has {int(as_of.isna().sum())} missing or unparsable timestamp(s)")
    for col in score_columns:
        values = pd.to_numeric(scored[col], errors="coerce").astype("float64")
        bad = int(values.isna().sum())
        if bad:
            raise ScoredFrameError(f"column {col!r} has {bad} missing or non-numeric value(s)")
        if col.startswith("p_") and ((values < 0) | (values > 1)).any():
            raise ScoredFrameError(f"column {col!r} must hold probabilities in [0, 1]")
    for col in ("y_sql", "y_opp"):
        values = pd.to_numeric(scored[col], errors="coerce").astype("float64")
        raw_missing = scored[col].isna()
        if (values.isna() & ~raw_missing).any():
            raise ScoredFrameError(f"column {col!r} must hold 1, 0 or NaN (censored)")
        if not values.dropna().isin([0.0, 1.0]).all():
            raise ScoredFrameError(f"column {col!r} must hold 1, 0 or NaN (censored)")


@dataclass(frozen=True)
class Records:
    """For one score column: each lead's moments where its running maximum sets a new record.

    ``rows`` index the replay frame, ``value`` is the record, ``prev`` the lead's previous record
    (``-inf`` for its first moment). At threshold ``t`` the lead's MQL moment is the record with
    ``prev < t <= value`` (at most one per lead).
    """

    rows: np.ndarray
    value: np.ndarray
    prev: np.ndarray
    _value_order: np.ndarray = field(repr=False)
    _prev_order: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, lead_code: np.ndarray, score: np.ndarray) -> Records:
        """``lead_code``/``score`` are per row, already sorted by (lead, time)."""
        running = pd.Series(score).groupby(lead_code, sort=False).cummax().to_numpy()
        prev = pd.Series(running).groupby(lead_code, sort=False).shift(1).to_numpy(dtype="float64")
        prev = np.where(np.isnan(prev), -np.inf, prev)
        is_record = score > prev
        rows = np.flatnonzero(is_record)
        value = score[rows]
        prev_r = prev[rows]
        return cls(rows, value, prev_r, np.argsort(value, kind="stable"), np.argsort(prev_r, kind="stable"))

    def at(self, threshold: float) -> np.ndarray:
        """Rows of the replay frame where a lead becomes MQL at ``threshold`` (one per lead at most)."""
        return self.rows[(self.prev < threshold) & (self.value >= threshold)]

    def curve(self, thresholds: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Sum of per-row ``weights`` over the MQL moments, for every threshold at once.

        ``weights`` has shape (k, n_rows); returns (k, len(thresholds)). Uses
        ``{prev < t <= value} = {value >= t} minus {prev >= t}`` (prev < value always).
        """
        w = np.atleast_2d(weights)[:, self.rows]
        out = np.empty((w.shape[0], len(thresholds)))
        for order, keys, sign in ((self._value_order, self.value, 1.0), (self._prev_order, self.prev, -1.0)):
            sorted_keys = keys[order]
            suffix = np.concatenate([np.cumsum(w[:, order][:, ::-1], axis=1)[:, ::-1], np.zeros((w.shape[0], 1))], axis=1)
            idx = np.searchsorted(sorted_keys, thresholds, side="left")
            if sign > 0:
                out[:] = suffix[:, idx]
            else:
                out -= suffix[:, idx]
        return out

    def candidates(self) -> np.ndarray:
        """Every threshold at which some volume changes, plus one above all scores (zero MQLs)."""
        distinct = np.unique(self.value)
        return np.append(distinct, np.nextafter(distinct[-1], np.inf) if len(distinct) else 1.0)


class Replay:
    """A scored frame prepared for replaying MQL policies: sorted, coded, with per-lead outcomes.

    Why a warm-up: a lead already hot before the replay window would cross the threshold at its first
    moment in the window and be counted as a new MQL there, inflating the window's first month (by 2x on
    the generated CRM). So moments before the window are replayed too, only to learn who had already
    crossed; they add no volume. The warm-up is ``warmup`` (earlier scored moments, e.g. the calibration
    months before the test months) or else the first ``warmup_months`` calendar months of ``scored``.
    A lead flagged during the warm-up still counts as flagged for recall: sales had it.
    """

    def __init__(
        self,
        scored: pd.DataFrame,
        score_columns: tuple[str, ...] = ("p_sql", "p_opportunity", "rule_score"),
        *,
        warmup: pd.DataFrame | None = None,
        warmup_months: int = 0,
    ):
        check_scored(scored, score_columns)
        frame = scored.copy()
        frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
        frame["_window"] = True
        if warmup is not None and len(warmup):
            check_scored(warmup, score_columns)
            early = warmup.copy()
            early["as_of"] = pd.to_datetime(early["as_of"], utc=True)
            early = early[early["as_of"] < frame["as_of"].min()]
            early["_window"] = False
            frame = pd.concat([early, frame], ignore_index=True, sort=False)
            self.warmup_note = f"warm-up: {len(early)} earlier scored moments (before the window) mark leads already MQL"
        else:
            month = frame["as_of"].dt.strftime("%Y-%m")
            months = sorted(month.unique().tolist())
            if warmup_months > 0 and len(months) > warmup_months:
                frame["_window"] = (month >= months[warmup_months]).to_numpy()
                self.warmup_note = (
                    f"warm-up: the first {warmup_months} month(s) ({', '.join(months[:warmup_months])}) "
                    "only mark leads already MQL"
                )
            else:
                self.warmup_note = (
                    "no warm-up: leads that crossed before the first month count again there (its volume is overstated)"
                )
        frame = frame.sort_values(["lead_id", "as_of"], kind="stable")
        in_window_lead = frame.groupby("lead_id", sort=False)["_window"].transform("any").to_numpy(dtype=bool)
        frame = frame[in_window_lead].reset_index(drop=True)
        for col in (*score_columns, "y_sql", "y_opp"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        self.frame = frame
        self.in_window = frame["_window"].to_numpy(dtype=bool)
        month = frame["as_of"].dt.strftime("%Y-%m")
        self.months: list[str] = sorted(month[self.in_window].unique().tolist())
        self.month_code = month.map({m: i for i, m in enumerate(self.months)}).fillna(-1).to_numpy(dtype="int64")
        codes, leads = pd.factorize(frame["lead_id"], sort=False)
        self.lead_code = codes.astype("int64")
        self.lead_ids = np.asarray(leads, dtype=object)
        self.n_leads = len(leads)
        self.n_months = len(self.months)
        self.n_moments = int(self.in_window.sum())
        window_nan = np.where(self.in_window, 0.0, np.nan)
        raw_sql = frame["y_sql"].to_numpy() + window_nan  # warm-up labels are not this window's outcomes
        raw_opp = frame["y_opp"].to_numpy() + window_nan
        self.ever_sql = _lead_any(self.lead_code, raw_sql, self.n_leads)
        self.ever_opp = _lead_any(self.lead_code, raw_opp, self.n_leads)
        as_of_us = frame["as_of"].to_numpy(dtype="datetime64[us]")
        self.y_sql, sql_until = matured_labels(raw_sql, as_of_us)
        self.y_opp, opp_until = matured_labels(raw_opp, as_of_us)
        self.matured_until = {"y_sql": sql_until, "y_opp": opp_until}
        days = frame["days_since_created"] if "days_since_created" in frame else pd.Series(np.nan, index=frame.index)
        self.days = pd.to_numeric(days, errors="coerce").to_numpy(dtype="float64")
        self._records: dict[str, Records] = {}

    def records(self, column: str) -> Records:
        if column not in self._records:
            self._records[column] = Records.build(self.lead_code, self.frame[column].to_numpy())
        return self._records[column]

    def at(self, column: str, threshold: float) -> np.ndarray:
        """Each lead's first crossing of ``threshold`` on ``column`` (warm-up crossings included)."""
        return self.records(column).at(threshold)

    def window(self, rows: np.ndarray) -> np.ndarray:
        """The rows that fall in the replay window (new MQLs there), dropping warm-up crossings."""
        return rows[self.in_window[rows]]

    def window_values(self, column: str) -> np.ndarray:
        return self.frame[column].to_numpy()[self.in_window]

    # ---- per-row weights for the curves --------------------------------------------------------
    def row_weights(self) -> dict[str, np.ndarray]:
        """Per-row quantities whose sums over first crossings give the volume, rate and recall curves."""
        win = self.in_window.astype(float)
        return {
            "mqls": win,
            "lab_sql": (~np.isnan(self.y_sql)).astype(float),
            "pos_sql": np.nan_to_num(self.y_sql),
            "lab_opp": (~np.isnan(self.y_opp)).astype(float),
            "pos_opp": np.nan_to_num(self.y_opp),
            # Recall counts crossings at any time, warm-up included: the lead was handed over.
            "ever_sql": self.ever_sql[self.lead_code].astype(float),
            "ever_opp": self.ever_opp[self.lead_code].astype(float),
        }

    def curves(self, column: str, thresholds: np.ndarray) -> dict[str, np.ndarray]:
        """Volume, rates and recalls of the first-crossing policy on ``column`` at each threshold."""
        rec = self.records(column)
        weights = self.row_weights()
        names = list(weights)
        sums = dict(zip(names, rec.curve(thresholds, np.vstack([weights[n] for n in names])), strict=True))
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "threshold": thresholds,
                "mqls": sums["mqls"],
                "mqls_per_month": sums["mqls"] / max(self.n_months, 1),
                "labelled_sql": sums["lab_sql"],
                "mql_to_sql_rate": sums["pos_sql"] / sums["lab_sql"],
                "labelled_opp": sums["lab_opp"],
                "mql_to_opp_rate": sums["pos_opp"] / sums["lab_opp"],
                "sql_recall": sums["ever_sql"] / max(self.ever_sql.sum(), 1),
                "opp_recall": sums["ever_opp"] / max(self.ever_opp.sum(), 1),
            }

    def monthly_counts(self, column: str, thresholds: np.ndarray) -> np.ndarray:
        """New MQLs per window month (rows) at each threshold (columns)."""
        onehot = np.zeros((self.n_months, len(self.frame)))
        rows = np.flatnonzero(self.in_window)
        onehot[self.month_code[rows], rows] = 1.0
        return self.records(column).curve(thresholds, onehot)

    def volume_threshold(self, column: str, volume: float) -> float:
        """The threshold on ``column`` that hands sales ``volume`` new MQLs (as close as possible).

        Without a warm-up volume only grows as the bar goes down, and this is the k-th largest lead
        maximum. With one it is not monotone: far down, most leads' first crossing moves into the
        warm-up and the volume falls again to "every lead new in the window". Only the selective branch
        (from the top down to the peak volume) is a meaningful operating point, so we walk down from the
        top and stop at the first threshold that reaches ``volume`` (or at the peak if none does).
        """
        cands = self.records(column).candidates()[::-1]  # highest first
        vol = self.curves(column, cands)["mqls"]
        reached = np.flatnonzero(vol >= volume)
        if len(reached) == 0:
            return float(cands[int(np.argmax(vol))])
        i = int(reached[0])
        if i > 0 and abs(vol[i - 1] - volume) < abs(vol[i] - volume):
            i -= 1
        return float(cands[i])

    # ---- outcomes of one operating point -------------------------------------------------------
    def outcomes(self, rows: np.ndarray, lead_weight: np.ndarray | None = None) -> dict[str, float]:
        """Outcomes of the first crossings ``rows`` (from :meth:`at`), optionally with bootstrap weights."""
        w_lead = np.ones(self.n_leads) if lead_weight is None else lead_weight
        flagged = self.lead_code[rows]
        w_flagged = w_lead[flagged]
        rows = self.window(rows)
        leads = self.lead_code[rows]
        w = w_lead[leads]
        y_sql, y_opp = self.y_sql[rows], self.y_opp[rows]
        lab_sql, lab_opp = ~np.isnan(y_sql), ~np.isnan(y_opp)
        total = float(w.sum())
        out: dict[str, float] = {
            "mqls": total,
            "mqls_per_month": total / max(self.n_months, 1),
            "mql_to_sql_rate": _ratio(float((w * np.nan_to_num(y_sql)).sum()), float(w[lab_sql].sum())),
            "mql_to_opp_rate": _ratio(float((w * np.nan_to_num(y_opp)).sum()), float(w[lab_opp].sum())),
            "sql_recall": _ratio(float(w_flagged[self.ever_sql[flagged]].sum()), float(w_lead[self.ever_sql].sum())),
            "opp_recall": _ratio(float(w_flagged[self.ever_opp[flagged]].sum()), float(w_lead[self.ever_opp].sum())),
            "median_days_to_mql": _weighted_median(self.days[rows], w),
            "labelled_sql": float(w[lab_sql].sum()),
            "labelled_opp": float(w[lab_opp].sum()),
        }
        by_month = np.bincount(self.month_code[rows], weights=w, minlength=self.n_months)
        for month, count in zip(self.months, by_month, strict=True):
            out[f"month:{month}"] = float(count)
        return out

    def bootstrap(
        self, stat: Callable[[np.ndarray], dict[str, float]], samples: int, seed: int
    ) -> dict[str, tuple[float, float]]:
        """95% percentile CIs of every statistic, resampling leads (all of a lead's moments together)."""
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {}
        for _ in range(samples):
            weight = np.bincount(rng.integers(0, self.n_leads, self.n_leads), minlength=self.n_leads).astype(float)
            for key, value in stat(weight).items():
                draws.setdefault(key, []).append(value)
        cis: dict[str, tuple[float, float]] = {}
        for key, values in draws.items():
            arr = np.asarray(values, dtype=float)
            arr = arr[~np.isnan(arr)]
            # Nearest-rank percentiles: a CI of a count is a count a reviewer could have seen.
            lo, hi = np.percentile(arr, [2.5, 97.5], method="nearest") if len(arr) else (np.nan, np.nan)
            cis[key] = (float(lo), float(hi))
        return cis


def matured_labels(y: np.ndarray, as_of: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Labels usable for rates: moments after the last observable negative are censored, even positives.

    Labels are censored when their horizon runs past the cut-off *unless the lead converted*, so near
    the cut-off only positives are labelled; counting them would inflate every rate. The latest moment
    with a 0 label marks how far the horizon had fully elapsed; later moments are treated as censored.
    Returns the masked labels and that moment (ISO, None if there is no negative at all).
    """
    zero = y == 0
    if not zero.any():
        return np.full_like(y, np.nan, dtype="float64"), None
    until = as_of[zero].max()
    out = y.astype("float64", copy=True)
    out[as_of > until] = np.nan
    return out, str(pd.Timestamp(until, tz="UTC").isoformat())


def _lead_any(lead_code: np.ndarray, y: np.ndarray, n_leads: int) -> np.ndarray:
    """Per lead: did any of its moments convert (``y == 1``)? Censored moments count as no."""
    return np.bincount(lead_code, weights=(y == 1).astype(float), minlength=n_leads) > 0


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    keep = ~np.isnan(values) & (weights > 0)
    if not keep.any():
        return float("nan")
    v, w = values[keep], weights[keep]
    order = np.argsort(v, kind="stable")
    v, cw = v[order], np.cumsum(w[order])
    half = cw[-1] / 2.0
    i = int(np.searchsorted(cw, half, side="left"))
    if np.isclose(cw[i], half) and i + 1 < len(v):
        return float((v[i] + v[i + 1]) / 2.0)
    return float(v[i])


DIGITS = {"median_days_to_mql": 1, "mqls_per_month": 2}


def with_ci(point: dict[str, float], cis: dict[str, tuple[float, float]], digits: int = 4) -> dict[str, Any]:
    """``{stat: {value, ci_low, ci_high}}`` rounded for JSON (NaN becomes ``None``).

    Rates keep 4 decimals (shown as percentages with 2), days 1, volumes per month 2. Per-month
    volumes (``month:YYYY-MM`` keys of :meth:`Replay.outcomes`) go under ``by_month``.
    """
    out: dict[str, Any] = {}
    by_month: dict[str, Any] = {}
    for key, value in point.items():
        digits_ = DIGITS.get(key.rsplit("|", 1)[-1], digits)
        low, high = cis.get(key, (np.nan, np.nan))
        cell = {"value": round_or_none(value, digits_), "ci_low": round_or_none(low, digits_), "ci_high": round_or_none(high, digits_)}
        if key.startswith("month:"):
            by_month[key.removeprefix("month:")] = cell
        else:
            out[key] = cell
    out["by_month"] = by_month
    return out


def exact_or_none(value: float) -> float | None:
    """The value as a plain float (JSON writes its shortest exact form), None when missing or not finite.

    Not ``round(value, 17)``: 17 decimals after the point are fewer than 17 significant digits below 0.1,
    so rounding moved a threshold like 0.058357397276317856 by one unit in the last place.
    """
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def round_or_none(value: float, digits: int) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
