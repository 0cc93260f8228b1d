"""Training artifacts as pictures: calibration, feature importance, SHAP summary (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.metrics import reliability_curve


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def calibration_plot(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], out: Path) -> Path:
    """Reliability diagrams on the test months, one panel per target, one line per model.

    ``curves[target][model] = (y_true, p)``.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 5), squeeze=False)
    for ax, (target, models) in zip(axes[0], curves.items(), strict=True):
        top = 0.0
        for name, (y, p) in models.items():
            mp, my = reliability_curve(y, p, n_bins=10)
            top = max(top, float(mp.max(initial=0)), float(my.max(initial=0)))
            ax.plot(mp, my, marker="o", label=name)
        ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect")
        ax.set_title(f"{target}: observed vs predicted (test months, equal-mass bins)")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def importance_plot(importance: Mapping[str, pd.Series], out: Path, top: int = 20) -> Path:
    """Total gain per feature, per target (what the trees split on)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(importance), figsize=(7 * len(importance), 7), squeeze=False)
    for ax, (target, imp) in zip(axes[0], importance.items(), strict=True):
        s = imp.sort_values(ascending=True).tail(top)
        ax.barh(s.index, s.to_numpy())
        ax.set_title(f"{target}: feature importance (gain)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def shap_summary_plot(contribs: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]], out: Path, top: int = 15) -> Path:
    """Beeswarm-style SHAP summary: per feature, each row's contribution coloured by the value's rank.

    ``contribs[target] = (contributions, encoded feature values)`` for a sample of test rows.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(contribs), figsize=(8 * len(contribs), 7), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (target, (c, x)) in zip(axes[0], contribs.items(), strict=True):
        c = c.drop(columns=["bias"], errors="ignore")
        names = c.abs().mean().sort_values(ascending=False).head(top).index[::-1]
        for i, name in enumerate(names):
            vals = x[name].rank(pct=True).fillna(0.5).to_numpy()
            ax.scatter(c[name].to_numpy(), i + rng.uniform(-0.3, 0.3, len(c)), c=vals, cmap="coolwarm", s=4)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(list(names))
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(f"{target}: SHAP values (log-odds), colour = feature value rank")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
