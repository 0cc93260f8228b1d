"""Calibrating the account score: P(an opportunity at the account within the opportunity horizon).

The noisy-OR of the leads' calibrated P(opportunity) (:func:`training.account_score.noisy_or`) assumes
the leads of an account convert independently. They do not (one budget, one deal: the second
interested person adds less than the first), and it ignores leads that do not exist yet (an account's
opportunity may come from a lead created after the moment). Its *ranking* is good (it beats the best
single lead); its level is checked, and corrected where the correction carries, by a calibration map
on top of it, fitted like the lead models' calibrators:

* **Account-month moments**, point-in-time: at the first instant of each month of the opportunity
  target's validation, calibration and test months (its :class:`~training.split.TimeSplit`), every
  account's open leads (created, not closed by the CRM) get features computed with what was known
  at that instant (:func:`features.compute`, the batch path) and are scored by the **model that
  ships**, each lead by a model that never fitted it (:func:`shipped_scores`: the refit's calibration
  fold that held the lead out, or the backtest when there is no refit); the account row is
  :func:`account_rows` of those scores. The map corrects the shipped lead scores' noisy-OR, so it must
  learn on their level: fitted on the backtest's scores while the refit shipped, it learnt the
  backtest's correction (a +0.45 Platt shift on the generated CRM, seed 1, with moment weights).
  The label is an opportunity at the account created within ``horizons.opp_days`` after the moment;
  every moment of these months has matured by the cut-off (the split's last month is the last
  matured one), so nothing is censored in practice and :func:`account_moments` drops any that is not.
* **Fitted on validation rows only**: moments in ``[validation_start, test_start)``; the test months'
  moments are held out and give the before/after report (ECE, log loss, mean predicted vs observed, AUC).
* **Checked forward, before the test months**: a probe map fitted on the fitting months but the last
  is scored on that last month against the raw noisy-OR (log loss); the map (refitted on every fitting
  month) ships only if the probe won there, else the identity ships (``p_account`` = the noisy-OR;
  ``report["map"]`` says which, the rejected map is in ``report["rejected"]``, the check in
  ``report["check"]``). A two-parameter map fitted on a few months carries their level, and the account
  rate moves against the noisy-OR from month to month (generated CRM, seed 1, lead scores with moment
  weights: 1.3-1.5x the noisy-OR in the validation months, 0.9-1.2x in the test months), so the map
  must show that it carries to a month it did not see. The choice never reads the test months: their
  before/after figures are an honest report of the shipped map (with a single fitting month there is
  nothing to check on and the map ships, as it did before the check).
* **Method**: Platt scaling — a logistic regression of the label on the logit of the noisy-OR (its
  coefficient below 1 is the correlation discount). Two parameters, so a few hundred account moments
  suffice. Measured on the generated CRM (5,000 leads, seed 1; fitted on 1,029 validation account
  moments, 65 positives; 2,175 held-out test moments, 120 positives) with lead scores at the sampled
  moments' level (``training.moment_weights: none``, whose sample over-represents converting leads):
  the noisy-OR over-counted (mean 0.094 against 0.055 observed, ECE 0.040) and the map fixed most of
  it (ECE 0.018, mean 0.068), AUC unchanged (0.747, a monotone map). With moment weights (the default)
  the lead scores are at the population's level and the noisy-OR is close to calibrated on the test
  months (backtest: mean 0.051 vs 0.055, ECE 0.018, log loss 0.1900), where the map fitted on the
  validation months (+0.46 intercept) over-predicts (mean 0.070, ECE 0.020, log loss 0.1924): the
  identity ships (with extra trees, the refit's out-of-fold scores: ECE 0.012 raw, 0.021 mapped).
  Adding the
  number of engaged leads as an input raised the held-out AUC to 0.760 but left ECE at 0.023; the
  buying-group roles or the number of open leads added nothing; isotonic steps calibrated worse
  (ECE 0.028) on so few positives. The calibrator records its inputs (:data:`INPUTS` are those it can
  read), so a bundle fitted with more of them scores the same everywhere.

The fitted map is **shipped in the bundle** (``account_calibration`` in ``bundle.json``, like the band
cut points) and applied identically by ``GET /accounts/{id}`` and ``leadscore score --accounts``
(:func:`training.account_score.account_rows`); a bundle without it answers the raw noisy-OR.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.config import BUYING_ROLES

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory
    from leadscore.training.bundle import BoundBundle
    from leadscore.training.refit import Refit
    from leadscore.training.split import TimeSplit

#: the inputs a calibrator can read from an account row (:func:`calibrator_inputs`)
INPUTS = ("logit_noisy_or", "log1p_engaged_leads", "roles_engaged")
#: the inputs the training fits (module docstring: what the others were measured to add)
FITTED_INPUTS = ("logit_noisy_or",)
#: fewer validation account moments or positives than this: no calibrator is fitted (raw noisy-OR ships)
MIN_ROWS, MIN_POSITIVES = 200, 20
_EPS = 1e-6


@dataclass(frozen=True)
class AccountCalibrator:
    """A Platt map from an account row's inputs (:data:`INPUTS`) to P(account opportunity)."""

    coef: tuple[float, ...]
    intercept: float
    inputs: tuple[str, ...] = FITTED_INPUTS
    method: str = "platt"
    #: validation account moments (and positives) it was fitted on, and their months
    rows: int = 0
    positives: int = 0
    months: tuple[str, ...] = ()
    #: held-out (test months) report: before/after ECE, mean predicted, observed rate, AUC
    report: dict[str, Any] = field(default_factory=dict)

    def apply(self, rows: pd.DataFrame) -> np.ndarray:
        """Calibrated P(account opportunity) of account rows (:data:`~training.account_score.ACCOUNT_COLUMNS`)."""
        if not len(rows):
            return np.zeros(0)
        z = calibrator_inputs(rows, self.inputs) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "inputs": list(self.inputs), "coef": list(self.coef),
                "intercept": self.intercept, "rows": self.rows, "positives": self.positives,
                "months": list(self.months), "report": self.report}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccountCalibrator:
        if d.get("method", "platt") != "platt":
            raise ValueError(f"unknown account calibration method {d.get('method')!r}")
        inputs = tuple(str(x) for x in d["inputs"])
        unknown = sorted(set(inputs) - set(INPUTS))
        if unknown:
            raise ValueError(f"unknown account calibrator input(s) {unknown}")
        return cls(coef=tuple(float(x) for x in d["coef"]), intercept=float(d["intercept"]), inputs=inputs,
                   rows=int(d.get("rows", 0)), positives=int(d.get("positives", 0)),
                   months=tuple(str(m) for m in d.get("months", ())), report=dict(d.get("report", {})))


def calibrator_inputs(rows: pd.DataFrame, inputs: tuple[str, ...] = FITTED_INPUTS) -> np.ndarray:
    """The calibrator's design matrix from account rows (raw noisy-OR in ``p_noisy_or``)."""

    def column(name: str) -> np.ndarray:
        if name == "logit_noisy_or":
            p = np.clip(rows["p_noisy_or"].to_numpy(dtype=np.float64), _EPS, 1 - _EPS)
            return np.log(p) - np.log1p(-p)
        if name == "log1p_engaged_leads":
            return np.log1p(sum(rows[f"{r}_engaged"].to_numpy(dtype=np.float64) for r in BUYING_ROLES))
        return np.asarray([len(r) for r in rows["roles_engaged"]], dtype=np.float64)

    return np.column_stack([column(c) for c in inputs])


def fit_calibrator(rows: pd.DataFrame, y: np.ndarray, months: tuple[str, ...] = (),
                   inputs: tuple[str, ...] = FITTED_INPUTS) -> AccountCalibrator | None:
    """Platt scaling on validation account rows; None when too few rows or positives to fit honestly."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.int64)
    if len(y) < MIN_ROWS or y.sum() < MIN_POSITIVES or y.sum() == len(y):
        return None
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(calibrator_inputs(rows, inputs), y)
    return AccountCalibrator(coef=tuple(float(c) for c in lr.coef_[0]), intercept=float(lr.intercept_[0]),
                             inputs=inputs, rows=len(y), positives=int(y.sum()), months=months)


def calibration_report(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ECE (10 equal-mass bins), log loss, mean predicted, observed rate and AUC of one set of account rows."""
    from leadscore.training.metrics import evaluate_metrics

    m = evaluate_metrics(np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64), n_boot=0)
    return {"rows": len(y), "positives": int(np.sum(y)), "observed_rate": round(float(np.mean(y)), 4),
            "mean_predicted": round(float(np.mean(p)), 4), "ece": round(m["ece"].value, 4),
            "log_loss": round(m["log_loss"].value, 5), "roc_auc": round(m["roc_auc"].value, 4)}


# --------------------------------------------------------------------------- the point-in-time moments


@dataclass
class AccountMoments:
    """The account-month moments' open leads (features at the moment) and the accounts' labels."""

    #: one row per (open lead with an account, moment): ``lead_id, account_id, as_of, role,
    #: last_engaged_at`` and the feature columns
    leads: pd.DataFrame
    #: one row per (account, moment): ``account_id, as_of, y``
    labels: pd.DataFrame

    @property
    def empty(self) -> bool:
        return not len(self.labels)


def moment_times(split: TimeSplit) -> list[pd.Timestamp]:
    """The first instant of every month from the validation start to the test end (exclusive)."""
    starts = pd.date_range(split.validation_start.tz_localize(None), split.test_end.tz_localize(None),
                           freq="MS", inclusive="left")
    return [t.tz_localize("UTC") for t in starts]


def account_moments(history: CRMHistory, settings: Settings, times: list[pd.Timestamp]) -> AccountMoments:
    """Point-in-time account moments at ``times`` (module docstring): what batch scoring would have seen.

    Only rows known at each moment enter its features (:func:`features.engine.compute_features`); a
    moment whose label horizon runs past the cut-off is censored (dropped).
    """
    from leadscore.features.engine import compute_features, prepare
    from leadscore.training.account_score import last_own_activity, lead_roles
    from leadscore.training.batch_score import CLOSED_STAGES, candidate_leads

    horizon = pd.Timedelta(days=settings.horizons.opp_days)
    cutoff = pd.Timestamp(history.cutoff)
    leads = history.leads.assign(lead_id=history.leads["lead_id"].astype(str)).set_index("lead_id")
    with_account = leads.index[leads["account_id"].notna()]
    roles = lead_roles(leads.reset_index(), settings).set_axis(leads.index)
    opps = history.opportunities
    created = pd.to_datetime(opps["created_at"], utc=True)
    prep = prepare(history, settings)
    lead_frames, label_frames = [], []
    for as_of in times:
        if as_of + horizon > cutoff:
            continue
        ids, _ = candidate_leads(history, as_of)
        ids = np.asarray([i for i in ids if i in with_account], dtype=object)
        if not len(ids):
            continue
        moments = pd.DataFrame({"lead_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype="datetime64[us, UTC]")})
        feats = compute_features(history, moments, settings, prep=prep)
        stage = feats["current_stage"].astype(object) if "current_stage" in feats else pd.Series([None] * len(feats))
        feats = feats.loc[~stage.isin(CLOSED_STAGES).to_numpy()].reset_index(drop=True)
        lid = feats["lead_id"].astype(str).to_numpy()
        last = last_own_activity(history.activities, as_of)
        meta = pd.DataFrame({"lead_id": lid, "account_id": leads["account_id"].reindex(lid).to_numpy(dtype=object),
                             "as_of": as_of, "role": roles.reindex(lid).to_numpy(dtype=object),
                             "last_engaged_at": pd.to_datetime(last.reindex(lid).to_numpy(), utc=True)})
        lead_frames.append(pd.concat([meta, feats.drop(columns=[c for c in meta if c in feats])], axis=1))
        won = set(opps.loc[(created > as_of) & (created <= as_of + horizon), "account_id"].dropna().astype(str))
        accounts = sorted(set(meta["account_id"].astype(str)))
        label_frames.append(pd.DataFrame({"account_id": accounts, "as_of": as_of,
                                          "y": [int(a in won) for a in accounts]}))
    if not lead_frames:
        return AccountMoments(pd.DataFrame(), pd.DataFrame(columns=["account_id", "as_of", "y"]))
    return AccountMoments(pd.concat(lead_frames, ignore_index=True), pd.concat(label_frames, ignore_index=True))


#: calibrated P(opportunity) of account-moment lead rows (``lead_id`` and the feature columns)
LeadScorer = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class ShippedScores:
    """The shipped model's lead scores on account moments, fitted without those leads, and the months the
    calibrator may use: it is fitted on account moments in ``fit`` and reported on those in ``test``
    (``[start, end)``; None: no held-out months). Built by :func:`shipped_scores`."""

    score: LeadScorer
    fit: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp] | None
    #: which model scored: ``backtest`` (no refit), ``cross_fit`` or ``last_months`` (the refit's scheme)
    scorer: str


def shipped_scores(split: TimeSplit, backtest: BoundBundle, refit: Refit | None) -> ShippedScores:
    """What scores the account moments for the calibrator: the model that ships, on rows it did not fit.

    The calibrator maps the noisy-OR of the *shipped* model's lead scores, so it must learn on their
    level; the backtest's lead scores are another model's (fitted on the oldest months only, its map on
    its calibration months, without the refit's newest months, recency or choice of kind), and a map
    fitted on them (a Platt shift of +0.45 on the generated CRM, seed 1, with moment weights) carries
    that model's level into the bundle. Schemes, each leak-free (no lead is scored by a model that
    fitted one of its moments):

    * no refit (``training.refit: none``): the backtest ships; it fitted the months before
      ``split.validation_start``, so it scores every account month: fit on the validation and
      calibration months, report on the test months.
    * ``cross_fit``: the refit fitted every matured month; each account lead is scored by the
      calibration fold's models that held it out (:meth:`training.refit.Refit.held_out_probability`,
      the scores the shipped calibration map was fitted on), leads it never fitted by the shipped ones;
      the same months as without a refit.
    * ``last_months``: the refit did not fit its newest months; the shipped model scores them and the
      calibrator is fitted there, with no held-out months left to report on.
    """
    months = (split.validation_start, split.test_start), (split.test_start, split.test_end)
    if refit is None or refit.models is None:

        def backtest_score(leads: pd.DataFrame) -> np.ndarray:
            return backtest.predict(leads[backtest.feature_names])["p_opportunity"].to_numpy()

        return ShippedScores(backtest_score, *months, scorer="backtest")
    if refit.rows.scheme == "cross_fit":
        return ShippedScores(refit.held_out_probability, *months, scorer="cross_fit")
    return ShippedScores(refit.held_out_probability, (refit.rows.calibration_start, refit.rows.end), None,
                         scorer="last_months")


def score_moments(moments: AccountMoments, score: LeadScorer, settings: Settings) -> pd.DataFrame:
    """Account rows (raw noisy-OR: no calibrator) of every moment, the leads scored by ``score``, with ``y``."""
    from leadscore.training.account_score import account_rows

    leads = moments.leads[["lead_id", "account_id", "as_of", "role", "last_engaged_at"]].assign(
        p_opportunity=np.asarray(score(moments.leads), dtype=np.float64))
    frames = [account_rows(g, as_of, settings.accounts.engaged_days) for as_of, g in leads.groupby("as_of", sort=True)]
    rows = pd.concat(frames, ignore_index=True)
    labels = moments.labels.assign(as_of=pd.to_datetime(moments.labels["as_of"], utc=True))
    return rows.merge(labels, on=["account_id", "as_of"], how="inner", validate="one_to_one")


def _months(rows: pd.DataFrame) -> list[str]:
    return sorted({f"{t:%Y-%m}" for t in rows["as_of"]})


def fit_account_calibration(moments: AccountMoments, shipped: ShippedScores, settings: Settings
                            ) -> AccountCalibrator | None:
    """Fit the calibrator on ``shipped``'s fitting months' account rows, keep it only where it carries
    forward to the last of them (module docstring), and report before/after on the test months (held
    out: they decide nothing). None when there is too little to fit on."""
    if moments.empty:
        return None
    rows = score_moments(moments, shipped.score, settings)

    def within(span: tuple[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame:
        return rows[(rows["as_of"] >= span[0]) & (rows["as_of"] < span[1])]

    fit_rows = within(shipped.fit)
    test_rows = within(shipped.test) if shipped.test is not None else rows.iloc[:0]
    months = tuple(_months(fit_rows))
    cal = fit_calibrator(fit_rows, fit_rows["y"].to_numpy(), months)
    if cal is None:
        return None
    report: dict[str, Any] = {"scored_by": shipped.scorer, "validation_months": list(months),
                              "test_months": _months(test_rows), "map": "platt"}
    check = _forward_check(fit_rows, months)
    if check is not None:
        report["check"] = check
        if check["platt"]["log_loss"] >= check["before"]["log_loss"]:  # it did not carry: the identity ships
            report.update(map="identity", rejected={"coef": list(cal.coef), "intercept": cal.intercept})
            cal = replace(cal, coef=tuple(float(i == "logit_noisy_or") for i in cal.inputs), intercept=0.0)
    if len(test_rows) and 0 < test_rows["y"].sum() < len(test_rows):
        y = test_rows["y"].to_numpy()
        report["test_before"] = calibration_report(y, test_rows["p_noisy_or"].to_numpy())
        report["test_after"] = calibration_report(y, cal.apply(test_rows))
        report["test_best_lead_auc"] = calibration_report(y, test_rows["best_lead_p_opportunity"].to_numpy())["roc_auc"]
    return replace(cal, report=report)


def _forward_check(fit_rows: pd.DataFrame, months: tuple[str, ...]) -> dict[str, Any] | None:
    """A probe map fitted on every fitting month but the last, scored on the last beside the raw noisy-OR;
    None when there is one month only, or too little before it or in it to fit or judge."""
    if len(months) < 2:
        return None
    last = fit_rows["as_of"].dt.strftime("%Y-%m").to_numpy() == months[-1]
    before, after = fit_rows[~last], fit_rows[last]
    probe = fit_calibrator(before, before["y"].to_numpy(), months[:-1])
    y = after["y"].to_numpy()
    if probe is None or not 0 < y.sum() < len(y):
        return None
    return {"month": months[-1], "before": calibration_report(y, after["p_noisy_or"].to_numpy()),
            "platt": calibration_report(y, probe.apply(after))}


def training_moments(history: CRMHistory, dataset: pd.DataFrame, settings: Settings) -> AccountMoments | None:
    """The account moments of the opportunity target's split (the one training will use), built before
    the history is freed; None when the split cannot be made (training will say why)."""
    from leadscore.training.split import InsufficientDataError, time_split

    labelled = dataset["y_opp"].notna().to_numpy() if "y_opp" in dataset else np.zeros(len(dataset), dtype=bool)
    try:
        split = time_split(dataset["as_of"][labelled], pd.Timestamp(history.cutoff), settings.horizons.opp_days,
                           settings.training.split, "opportunity")
    except InsufficientDataError:
        return None
    return account_moments(history, settings, moment_times(split))


def calibrate_bundles(moments: AccountMoments | None, split: TimeSplit | None, backtest: BoundBundle,
                      shipped: BoundBundle, settings: Settings, refit: Refit | None = None) -> AccountCalibrator | None:
    """Fit the account calibrator on the shipped model's level (``refit``'s held-out scores, the backtest's
    without a refit: :func:`shipped_scores`) and put it in both bundles (the backtest bundle is the
    record of the procedure; its own scores differ in level, so it is not what the calibrator describes)."""
    if moments is None or split is None:
        return None
    cal = fit_account_calibration(moments, shipped_scores(split, backtest, refit), settings)
    backtest.account_calibration = shipped.account_calibration = cal
    return cal
