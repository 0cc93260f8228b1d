"""Drift between the rows a model learned from and the months it scores, and the honest verdict.

A model that loses to the rule score on its test months has, on CRM data, usually been surprised by
the months: a conversion rate that climbed, a signal that left the range it was trained on. The
report says which, per feature:

* **PSI** (population stability index) ``Σ (q - p) · ln(q / p)`` over bins of the training rows'
  distribution ``p`` (deciles for numbers, the values for strings; missing is its own bin) against the
  scoring months' shares ``q``. Rules of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted.
* **outside range**: the share of scoring-month values a tree model can only extrapolate flat: numbers
  below the training minimum or above its maximum, strings never seen in training.
* the **label rate by month** (matured moments), the drift no feature shows.

:func:`verdict` turns the backtest's test-month metrics into one line: whether the shipped model beats
the rule score and chance, and if not, the most drifted features as the likely causes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

_FLOOR = 1e-4  # share given to an empty bin (PSI's log would be infinite)
#: a shipped model must beat the rule score's AUC and chance (0.5) by this much to be called better
MIN_AUC_GAIN = 0.0


def _shares(codes: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_bins).astype(np.float64)
    return np.maximum(counts / max(counts.sum(), 1.0), _FLOOR)


def _numeric_codes(ref: np.ndarray, cur: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    finite = ref[~np.isnan(ref)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])

    def code(x: np.ndarray) -> np.ndarray:
        c = np.searchsorted(edges, x, side="right")
        return np.where(np.isnan(x), len(edges) + 1, c)

    return code(ref), code(cur), len(edges) + 2


def _category_codes(ref: pd.Series, cur: pd.Series, max_values: int = 30) -> tuple[np.ndarray, np.ndarray, int]:
    r, c = ref.astype(object), cur.astype(object)
    top = list(r.dropna().astype(str).value_counts().index[:max_values])
    index = {v: i for i, v in enumerate(top)}
    other, missing = len(top), len(top) + 1

    def code(s: pd.Series) -> np.ndarray:
        return np.array([missing if v is None or v != v else index.get(str(v), other) for v in s.tolist()])

    return code(r), code(c), len(top) + 2


def psi(ref: pd.Series | np.ndarray, cur: pd.Series | np.ndarray, *, categorical: bool = False,
        bins: int = 10) -> float:
    """Population stability index of ``cur`` against ``ref`` (module docstring)."""
    if categorical:
        rc, cc, n = _category_codes(pd.Series(ref), pd.Series(cur))
    else:
        rc, cc, n = _numeric_codes(np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64), bins)
    p, q = _shares(rc, n), _shares(cc, n)
    return float(np.sum((q - p) * np.log(q / p)))


def outside_range(ref: pd.Series | np.ndarray, cur: pd.Series | np.ndarray, *, categorical: bool = False) -> float:
    """Share of the non-missing ``cur`` values outside the range (or the values) seen in ``ref``."""
    if categorical:
        seen = set(pd.Series(ref).dropna().astype(str))
        c = pd.Series(cur).dropna().astype(str)
        return float((~c.isin(seen)).mean()) if len(c) else 0.0
    r, x = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    r, x = r[~np.isnan(r)], x[~np.isnan(x)]
    if len(x) == 0 or len(r) == 0:
        return 0.0
    return float(np.mean((x < r.min()) | (x > r.max())))


def label_rate_by_month(as_of: pd.Series, y: np.ndarray) -> dict[str, dict[str, float]]:
    """``{month: {"moments": n, "rate": share positive}}`` over the labelled moments."""
    known = ~np.isnan(np.asarray(y, dtype=np.float64))
    months = as_of[known].dt.tz_localize(None).dt.to_period("M").astype(str).to_numpy()
    frame = pd.DataFrame({"month": months, "y": np.asarray(y, dtype=np.float64)[known]})
    g = frame.groupby("month")["y"].agg(["count", "mean"])
    return {str(m): {"moments": int(r["count"]), "rate": round(float(r["mean"]), 5)} for m, r in g.iterrows()}


def _months(as_of: pd.Series) -> list[str]:
    return sorted(as_of.dt.tz_localize(None).dt.to_period("M").astype(str).unique().tolist())


def drift_report(
    frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]], reference_rows: np.ndarray, scoring_rows: np.ndarray,
    label_rates: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> dict[str, Any]:
    """Per feature PSI and outside-range share of ``scoring_rows`` against ``reference_rows``, highest PSI
    first, and the label rate by month per target (JSON-able)."""
    ref, cur = frame.iloc[reference_rows], frame.iloc[scoring_rows]
    features = []
    for s in schema:
        cat = s["dtype"] == "str"
        features.append({"feature": s["name"],
                          "psi": round(psi(ref[s["name"]], cur[s["name"]], categorical=cat), 5),
                          "outside_range": round(outside_range(ref[s["name"]], cur[s["name"]], categorical=cat), 5)})
    features.sort(key=lambda f: (-f["psi"], -f["outside_range"], f["feature"]))
    return {"reference_months": _months(frame["as_of"].iloc[reference_rows]),
            "scoring_months": _months(frame["as_of"].iloc[scoring_rows]),
            "features": features, "label_rate": {t: dict(v) for t, v in label_rates.items()}}


def top_drift(drift: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    return list(drift.get("features", []))[:k]


def describe_top(drift: Mapping[str, Any], k: int) -> str:
    """``a (PSI 0.41, 12% outside range), b (PSI 0.2)`` for the ``k`` most drifted features."""
    parts = []
    for f in top_drift(drift, k):
        extra = f", {f['outside_range']:.0%} outside range" if f["outside_range"] >= 0.005 else ""
        parts.append(f"{f['feature']} (PSI {f['psi']:.2f}{extra})")
    return ", ".join(parts)


def label_shift(drift: Mapping[str, Any], target: str, factor: float = 1.5) -> str | None:
    """``label rate 30.0% in 2024-01..2024-06 → 58.4% in 2024-10..2024-12`` when the scoring months' rate
    is ``factor`` times the training rows' months' rate (or that much lower), else None."""
    rates = drift.get("label_rate", {}).get(target, {})

    def pooled(months: Sequence[str]) -> float | None:
        got = [rates[m] for m in months if m in rates]
        n = sum(r["moments"] for r in got)
        return sum(r["rate"] * r["moments"] for r in got) / n if n else None

    ref, cur = drift.get("reference_months", []), drift.get("scoring_months", [])
    a, b = pooled(ref), pooled(cur)
    if not a or b is None or 1 / factor < b / a < factor:
        return None
    return f"label rate {a:.1%} in {ref[0]}..{ref[-1]} → {b:.1%} in {cur[0]}..{cur[-1]}"


def verdict(target: str, kind: str, auc: float, rule_auc: float, drift: Mapping[str, Any], k: int = 3
            ) -> tuple[bool, str]:
    """``(beats, line)``: whether the shipped model beats the rule score and chance on the test months."""
    if auc > rule_auc + MIN_AUC_GAIN and auc > 0.5 + MIN_AUC_GAIN:
        return True, (f"{target}: the shipped {kind} model beats the rule score on the test months "
                      f"(AUC {auc:.3f} vs {rule_auc:.3f})")
    against = "the rule score" if auc <= rule_auc else "chance"
    causes = [c for c in (label_shift(drift, target), describe_top(drift, k)) if c]
    return False, (f"{target}: the shipped {kind} model does not beat {against} on the test months "
                   f"(AUC {auc:.3f}, rule {rule_auc:.3f}); likely causes: drift in {'; '.join(causes) or 'unknown'}"
                   "; not recommended for promotion")


__all__ = ["describe_top", "drift_report", "label_rate_by_month", "outside_range", "psi", "verdict"]
