"""The fit/engagement grid (HubSpot's A1–C3): who the lead is × how interested it is, from the model itself.

A score answer's ``band`` is a letter and a digit: the **fit band** A (best) to C from the lead's
``fit`` feature group (firmographics, title, ICP match), the **engagement band** 1 (most engaged) to 3
from its ``interest`` group (activities, recency, velocity, the account's activity). Each group's
score is the sum of the model's exact per-feature contributions (the trees' path attribution or
TreeSHAP, as the bundle's ``attribution`` says, :mod:`training.attribution`; the linear terms; in
log-odds, the same ones the reasons sum per concept, :mod:`training.reasons`) over the group's columns:
both attributions are additive, so the two sums split the lead's log-odds into "fit" and "engagement"
with nothing counted twice, and the grid ranks leads by what the model actually learned rather than by
hand-set points.

The cut points are **fitted state**: the terciles of each sum over a sample of the rows the shipped
model was trained on (:func:`fit_band_cuts`, run by the retrain) and shipped in the bundle
(``bands`` in ``bundle.json``), so "A" means "top third of fit among the leads this model learned
from" and every consumer (service, batch scoring) cuts identically. They are fitted on the bundle's own
attribution (:meth:`BoundBundle.contributions`), the one every consumer then sums. A bundle without cut points
(older bundles) answers ``band = None``. The P(SQL) model's contributions are used (those of the
reasons), so a band costs no extra attribution on the serving path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from leadscore.training.bundle import BoundBundle

#: the feature groups the grid reads (``features.schema.FeatureSpec.group``)
GROUPS = ("fit", "interest")
#: fit letters and engagement digits from the lowest tercile up
FIT_LETTERS = ("C", "B", "A")
ENGAGEMENT_DIGITS = ("3", "2", "1")
#: the grid's labels by ``fit index * 3 + engagement index``
_LABELS = np.array([f + e for f in FIT_LETTERS for e in ENGAGEMENT_DIGITS], dtype=object)
#: the band labels in code order (:func:`codes_of_sums`)
BAND_LABELS: list[str] = _LABELS.tolist()
#: rows of the training window the terciles are fitted on (a bundle may attribute by TreeSHAP, ~50x a prediction)
CUT_SAMPLE_ROWS = 5000
#: the model whose contributions the grid sums (the reasons' model: no extra TreeSHAP online)
BAND_TARGET = "sql"


@dataclass(frozen=True)
class BandCuts:
    """Tercile cut points (lower, upper) of the fit and the interest contribution sums."""

    fit: tuple[float, float]
    interest: tuple[float, float]
    target: str = BAND_TARGET
    #: how many training rows the terciles were fitted on
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"fit": list(self.fit), "interest": list(self.interest), "target": self.target, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BandCuts:
        fit, interest = d["fit"], d["interest"]
        return cls(fit=(float(fit[0]), float(fit[1])), interest=(float(interest[0]), float(interest[1])),
                   target=str(d.get("target", BAND_TARGET)), rows=int(d.get("rows", 0)))


def group_masks(schema: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per group, which schema columns belong to it (a column without a group belongs to neither)."""
    groups = np.array([s.get("group", "") for s in schema], dtype=object)
    return {g: groups == g for g in GROUPS}


def group_sums(contrib: np.ndarray, schema: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per group, the summed contributions of each row (``contrib``: rows × schema columns, no bias)."""
    c = np.atleast_2d(np.asarray(contrib, dtype=np.float64))[:, : len(schema)]
    return {g: c[:, m].sum(axis=1) for g, m in group_masks(schema).items()}


def fit_band_cuts(contrib: np.ndarray, schema: Sequence[Mapping[str, Any]], target: str = BAND_TARGET) -> BandCuts:
    """The terciles of each group's summed contributions over training rows (``contrib``: rows × columns)."""
    sums = group_sums(contrib, schema)
    if len(next(iter(sums.values()))) == 0:
        raise ValueError("no rows to fit the band cut points on")

    def cuts(v: np.ndarray) -> tuple[float, float]:
        lo, hi = np.quantile(v, [1 / 3, 2 / 3])
        return float(lo), float(hi)

    return BandCuts(fit=cuts(sums["fit"]), interest=cuts(sums["interest"]), target=target,
                    rows=len(sums["fit"]))


def band_labels(contrib: np.ndarray, schema: Sequence[Mapping[str, Any]], cuts: BandCuts | None) -> list[str | None]:
    """``"A1"``..``"C3"`` per row of ``contrib`` (rows × columns); all None without cut points."""
    c = np.atleast_2d(np.asarray(contrib, dtype=np.float64))
    if cuts is None:
        return [None] * len(c)
    sums = group_sums(c, schema)
    return _LABELS[codes_of_sums(np.column_stack([sums[g] for g in GROUPS]), cuts)].tolist()  # type: ignore[no-any-return]


def codes_of_sums(sums: np.ndarray, cuts: BandCuts) -> np.ndarray:
    """Positions in :data:`BAND_LABELS` of rows' group sums (rows x :data:`GROUPS`): the service's labels
    (:func:`band_labels`) and batch scoring's coded column (its pass makes the sums)."""
    f = np.searchsorted(np.asarray(cuts.fit), sums[:, 0], side="right")
    e = np.searchsorted(np.asarray(cuts.interest), sums[:, 1], side="right")
    return f * len(ENGAGEMENT_DIGITS) + e


def band_groups(schema: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Per group of :data:`GROUPS` its schema columns in order, -1 padded (groups x columns): what batch
    scoring's pass sums per row as :func:`group_sums` sums one row (:func:`training.batch_pass.target_pass`)."""
    idx = [np.flatnonzero(m) for m in group_masks(schema).values()]
    out = np.full((len(idx), max(1, *(len(i) for i in idx))), -1, dtype=np.int64)
    for g, i in enumerate(idx):
        out[g, : len(i)] = i
    return out


def fit_bundle_bands(bundle: BoundBundle, rows: pd.DataFrame, seed: int) -> BandCuts | None:
    """Fit ``bundle``'s cut points on (a sample of) ``rows``, the rows its models were trained on; set and
    return them. None (and nothing set) when the bundle lacks the band target, a schema has no column of
    one of the groups (a grid of a missing group would put every lead in one band) or there are no rows."""
    if BAND_TARGET not in bundle.models or not len(rows) or not all(m.any() for m in group_masks(bundle.schema).values()):
        return None
    sample = rows.sample(n=min(CUT_SAMPLE_ROWS, len(rows)), random_state=seed) if len(rows) > CUT_SAMPLE_ROWS else rows
    contrib = bundle.contributions(sample, BAND_TARGET).to_numpy()[:, : len(bundle.schema)]
    bundle.bands = fit_band_cuts(contrib, bundle.schema, BAND_TARGET)
    return bundle.bands
