"""Time splits and data minimums: which moments a model may learn from, be tuned, calibrated and tested on.

Lead scoring is used on the future, so it is evaluated on the future: months are assigned, oldest to
newest, to train / validation / calibration / test, never at random. A month is usable only when it
is *fully matured* for the target — its last moment's label horizon has elapsed before the data
cut-off — otherwise recent negatives would be "not yet converted" leads and the test would flatter
the model. Each target gets its own split because the horizons differ (30 vs 90 days by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadscore.errors import NotEnoughDataError
from leadscore.training.config import MinimumsConfig, SplitConfig

if TYPE_CHECKING:
    from leadscore.config import Settings

PERIODS = ("train", "validation", "calibration", "test")
TARGETS = {"sql": "y_sql", "opportunity": "y_opp"}


class InsufficientDataError(NotEnoughDataError):
    """Too little matured history to train; the message names what is missing.

    Until enough history exists the rule-based score stays in force; the message says so, because
    the person reading it must know their leads are still being scored.
    """


def month_start(ts: pd.Timestamp) -> pd.Timestamp:
    """The first instant (UTC) of the month containing ``ts``."""
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return pd.Timestamp(year=ts.year, month=ts.month, day=1, tz="UTC")


def _shift(ts: pd.Timestamp, months: int) -> pd.Timestamp:
    return ts + pd.DateOffset(months=months)


@dataclass(frozen=True)
class TimeSplit:
    """Half-open month ranges ``[start, end)`` for one target, in UTC."""

    target: str
    horizon_days: int
    train_start: pd.Timestamp
    validation_start: pd.Timestamp
    calibration_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def bounds(self, period: str) -> tuple[pd.Timestamp, pd.Timestamp]:
        """``[start, end)`` of one period."""
        edges = [self.train_start, self.validation_start, self.calibration_start, self.test_start, self.test_end]
        i = PERIODS.index(period)
        return edges[i], edges[i + 1]

    @property
    def fitted_end(self) -> pd.Timestamp:
        """End of everything the model was fitted, tuned or calibrated on; later months are unseen."""
        return self.test_start

    def mask(self, as_of: pd.Series, period: str) -> np.ndarray:
        start, end = self.bounds(period)
        return np.asarray((as_of >= start) & (as_of < end))

    def months(self, period: str) -> list[str]:
        start, end = self.bounds(period)
        return [str(p) for p in pd.period_range(start.tz_localize(None), end.tz_localize(None), freq="M")[:-1]]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        return {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TimeSplit:
        kw = {k: (pd.Timestamp(str(v)) if k.endswith(("_start", "_end")) else v) for k, v in d.items()}
        return cls(**kw)  # type: ignore[arg-type]


def last_matured_month_end(cutoff: pd.Timestamp, horizon_days: int) -> pd.Timestamp:
    """The end of the latest month whose every moment's horizon elapsed by ``cutoff``."""
    return month_start(pd.Timestamp(cutoff) - pd.Timedelta(days=horizon_days))


def time_split(
    as_of: pd.Series, cutoff: pd.Timestamp, horizon_days: int, cfg: SplitConfig, target: str
) -> TimeSplit:
    """Assign months, newest matured first: test, then calibration, then validation; the rest trains.

    Raises :class:`InsufficientDataError` when fewer than ``cfg.min_train_months`` months remain
    for training.
    """
    if len(as_of) == 0:
        raise InsufficientDataError(
            f"no scoring moments at all for the {target} model. The rule-based score stays in force."
        )
    test_end = last_matured_month_end(cutoff, horizon_days)
    test_start = _shift(test_end, -cfg.test_months)
    cal_start = _shift(test_start, -cfg.calibration_months)
    val_start = _shift(cal_start, -cfg.validation_months)
    first = month_start(pd.Timestamp(as_of.min()))
    have = (val_start.year - first.year) * 12 + (val_start.month - first.month)
    if have < cfg.min_train_months:
        need_total = cfg.min_train_months + cfg.validation_months + cfg.calibration_months + cfg.test_months
        raise InsufficientDataError(
            f"not enough matured history for the {target} model: moments start in {first:%Y-%m} and, with a "
            f"{horizon_days}-day label horizon and cut-off {pd.Timestamp(cutoff):%Y-%m-%d}, months up to "
            f"{_shift(test_end, -1):%Y-%m} are matured; {need_total} matured months are needed "
            f"({cfg.min_train_months} train + {cfg.validation_months} validation + {cfg.calibration_months} "
            f"calibration + {cfg.test_months} test), there are {max(have, 0)} train month(s). "
            "The rule-based score stays in force."
        )
    return TimeSplit(target, horizon_days, first, val_start, cal_start, test_start, test_end)


def check_minimums(y_train: np.ndarray, split: TimeSplit, cfg: MinimumsConfig) -> None:
    """Refuse to train on fewer moments or positives than configured (Einstein-style minimums)."""
    labelled = y_train[~np.isnan(y_train)]
    n, pos = len(labelled), int(labelled.sum())
    missing = []
    if n < cfg.min_moments:
        missing.append(f"{n} matured moments (need at least {cfg.min_moments})")
    if pos < cfg.min_positives:
        missing.append(f"{pos} positives (need at least {cfg.min_positives})")
    if missing:
        months = split.months("train")
        window = f"{months[0]}..{months[-1]}" if months else "(empty)"
        raise InsufficientDataError(
            f"not enough data to train the {split.target} model: the training window {window} has "
            + " and ".join(missing)
            + ". The rule-based score stays in force until more closed-loop outcomes are recorded."
        )


def stratified_time_sample(as_of: pd.Series, max_rows: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_rows`` rows, the same share from every month (sorted, reproducible).

    Tuning on a sample keeps Optuna fast on millions of moments; sampling per month keeps the
    sample's seasonality and drift the same as the full training window's.
    """
    n = len(as_of)
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    frac = max_rows / n
    months = as_of.dt.year.to_numpy() * 12 + as_of.dt.month.to_numpy()
    keep = []
    for m in np.unique(months):
        idx = np.flatnonzero(months == m)
        k = max(1, round(len(idx) * frac))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def split_target(
    dataset: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp, target: str
) -> tuple[TimeSplit, dict[str, np.ndarray]]:
    """The target's time split and the positions of its matured, labelled moments per period.

    Raises :class:`~training.split.InsufficientDataError` naming what is missing.
    """
    label = TARGETS[target]
    horizon = settings.horizons.sql_days if target == "sql" else settings.horizons.opp_days
    # masks and positions, not per-period frames: at a million moments every copy of the frame is ~1 GB
    labelled = dataset[label].notna().to_numpy()
    as_of = dataset["as_of"]
    split = time_split(as_of[labelled], cutoff, horizon, settings.training.split, target)
    rows = {p: np.flatnonzero(labelled & split.mask(as_of, p)) for p in PERIODS}
    y = dataset[label].to_numpy(dtype=np.float64)
    check_minimums(y[rows["train"]], split, settings.training.minimums)
    for p in ("validation", "calibration", "test"):
        yp = y[rows[p]]
        if len(np.unique(yp)) < 2:
            raise InsufficientDataError(
                f"the {p} months {', '.join(split.months(p))} of the {target} model contain "
                f"{len(yp)} matured moments and {int(yp.sum())} positives; both outcomes are needed. "
                "The rule-based score stays in force."
            )
    return split, rows


def check_data(dataset: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp,
               targets: Sequence[str] = tuple(TARGETS)) -> dict[str, TimeSplit]:
    """Check every target's minimums before any work, so a shortfall is reported at once, in full."""
    problems, splits = [], {}
    for target in targets:
        try:
            splits[target] = split_target(dataset, settings, cutoff, target)[0]
        except InsufficientDataError as exc:
            problems.append(str(exc))
    if problems:
        raise InsufficientDataError("\n".join(problems))
    return splits
