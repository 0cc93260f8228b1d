"""Backtest metrics with bootstrap 95% confidence intervals.

Every metric is computed from one descending sort of the scores: a bootstrap resample is then just a
vector of multiplicities (weights) over the same sorted rows, so 200 resamples of a million moments
cost 200 linear passes instead of 200 sorts. Ties in the score (the rule-based points score has many)
are treated as one threshold for ROC/PR AUC, exactly like scikit-learn.

ECE uses equal-mass bins: with lead-scoring base rates of a few percent, equal-width bins put almost
every row in the first bin and hide miscalibration where the leads actually are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift", "recall_at_capacity")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False, "ece": False,
                    "top_decile_lift": True, "recall_at_capacity": True}
_EPS = 1e-15


@dataclass(frozen=True)
class MetricCI:
    """A point estimate with its bootstrap percentile interval."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.lo:.4f}, {self.hi:.4f}]"


class _Sorted:
    """Scores sorted descending (ties broken by a seeded shuffle), with tie groups and ECE bins."""

    def __init__(self, y: np.ndarray, p: np.ndarray, n_bins: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(p))
        order = perm[np.argsort(-p[perm], kind="stable")]
        self.y = y[order].astype(np.float64)
        self.p = p[order].astype(np.float64)
        # group id per row: a new group starts where the score changes
        change = np.empty(len(self.p), dtype=bool)
        change[:1] = True
        change[1:] = self.p[1:] != self.p[:-1]
        self.group = np.cumsum(change) - 1
        self.n_groups = int(self.group[-1]) + 1 if len(self.p) else 0
        # equal-mass ECE bins over the ascending rank (row order here is descending)
        n = len(self.p)
        self.bin = (n_bins - 1 - (np.arange(n) * n_bins // max(n, 1))).astype(np.int64)
        self.n_bins = n_bins
        pc = np.clip(self.p, _EPS, 1 - _EPS)
        self.ll = -(self.y * np.log(pc) + (1 - self.y) * np.log1p(-pc))
        self.sq = (self.p - self.y) ** 2


def _metrics(s: _Sorted, w: np.ndarray, capacity_share: float) -> dict[str, float]:
    W = w.sum()
    wy = w * s.y
    P = wy.sum()
    N = W - P
    out: dict[str, float] = {}
    gp = np.bincount(s.group, weights=wy, minlength=s.n_groups)
    gn = np.bincount(s.group, weights=w - wy, minlength=s.n_groups)
    if P > 0 and N > 0:
        neg_below = N - np.cumsum(gn)
        out["roc_auc"] = float((gp * (neg_below + 0.5 * gn)).sum() / (P * N))
        tp, fp = np.cumsum(gp), np.cumsum(gn)
        precision = tp / np.maximum(tp + fp, _EPS)
        out["pr_auc"] = float((gp / P * precision).sum())
    else:
        out["roc_auc"] = out["pr_auc"] = float("nan")
    out["log_loss"] = float((w * s.ll).sum() / W)
    out["brier"] = float((w * s.sq).sum() / W)
    bp = np.bincount(s.bin, weights=w * s.p, minlength=s.n_bins)
    by = np.bincount(s.bin, weights=wy, minlength=s.n_bins)
    out["ece"] = float(np.abs(bp - by).sum() / W)
    cw = np.cumsum(w)
    base = P / W if W > 0 else float("nan")
    top = cw <= 0.1 * W
    top_w = w[top].sum()
    out["top_decile_lift"] = float(wy[top].sum() / top_w / base) if top_w > 0 and base > 0 else float("nan")
    cap = cw <= capacity_share * W
    out["recall_at_capacity"] = float(wy[cap].sum() / P) if P > 0 else float("nan")
    return out


def evaluate_metrics(
    y: np.ndarray,
    p: np.ndarray,
    *,
    capacity_share: float = 0.1,
    n_boot: int = 200,
    n_bins: int = 10,
    seed: int = 0,
) -> dict[str, MetricCI]:
    """ROC AUC, PR AUC, log loss, Brier, ECE, top-decile lift and recall at capacity, with 95% CIs.

    ``p`` must be a probability for log loss / Brier / ECE to mean anything (ranking metrics only
    need an order). ``capacity_share`` is the share of rows sales can follow up; recall at capacity
    is the share of positives among the top-scored rows of that volume. CIs are bootstrap
    percentiles over ``n_boot`` resamples (``n_boot=0``: the interval collapses to the point).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y has {len(y)} rows but p has {len(p)}")
    keep = ~np.isnan(y) & ~np.isnan(p)
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return {m: MetricCI(float("nan"), float("nan"), float("nan")) for m in METRICS}
    s = _Sorted(y, p, n_bins, seed)
    point = _metrics(s, np.ones(len(y)), capacity_share)
    rng = np.random.default_rng(seed + 1)
    boots = {m: np.empty(n_boot) for m in METRICS}
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(np.float64)
        for m, v in _metrics(s, w, capacity_share).items():
            boots[m][b] = v
    result = {}
    for m in METRICS:
        if n_boot:
            lo, hi = np.nanpercentile(boots[m], [2.5, 97.5]) if np.isfinite(boots[m]).any() else (np.nan, np.nan)
        else:
            lo = hi = point[m]
        result[m] = MetricCI(point[m], float(lo), float(hi))
    return result


def population_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """AUC, log loss, ECE, mean prediction and rate over every scoring moment, not the sample: each row
    weighted by its ``moment_weight`` (the eligible moments it stands for, :mod:`features.moments`).

    The moment sampler caps moments per lead, so the sampled test months over-represent leads that
    convert (on the regime-shift CRM, seed 1, the sample's SQL rate is 1.2x the population's) and the
    sample's ECE partly measures the sampling; production scores every moment. ECE bins hold equal weight.
    """
    from sklearn.metrics import roc_auc_score

    y, p, w = (np.asarray(a, dtype=np.float64) for a in (y, p, w))
    order = np.argsort(p, kind="stable")
    ps, ys, ws = p[order], y[order], w[order]
    cw = np.cumsum(ws)
    b = np.minimum(((cw - ws) * n_bins // cw[-1]).astype(np.int64), n_bins - 1)
    gap = np.bincount(b, ws * (ps - ys), minlength=n_bins)
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    ll = -(y * np.log(pc) + (1 - y) * np.log1p(-pc))
    return {"roc_auc": round(float(roc_auc_score(y, p, sample_weight=w)), 4),
            "log_loss": round(float(np.average(ll, weights=w)), 4), "ece": round(float(np.abs(gap).sum() / cw[-1]), 4),
            "mean_p": round(float(np.average(p, weights=w)), 4), "rate": round(float(np.average(y, weights=w)), 4)}


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted vs observed rate in equal-mass bins (for the calibration plot)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, n_bins)
    return (np.array([p[b].mean() for b in bins if len(b)]), np.array([y[b].mean() for b in bins if len(b)]))
