"""Config sections owned by the training package: splits, tuning, minimums, promotion, SLA policy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leadscore.training.sla_ops_config import SLAOpsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    """Time-based split, counted back from the last fully matured month."""

    test_months: int = Field(default=2, ge=1)
    calibration_months: int = Field(default=2, ge=1)
    validation_months: int = Field(default=2, ge=1)
    min_train_months: int = Field(default=3, ge=1)


class MinimumsConfig(_Strict):
    """Below these the model is not trusted and the rule-based score stays in force (as in Einstein)."""

    min_moments: int = 1000
    min_positives: int = 120


class PromotionConfig(_Strict):
    """The gate a challenger must pass on a month neither model was fitted on."""

    auc_tolerance: float = 0.005
    max_ece: float = 0.03


class LightGBMConfig(_Strict):
    """Boosting settings that are not tuned: rounds, early stopping, threads, pruning."""

    max_rounds: int = Field(default=2000, ge=10)
    early_stopping_rounds: int = Field(default=30, ge=1)
    max_bin: int = Field(default=127, ge=3)
    #: 0 = automatic (training.threads): one thread below ``parallel_min_rows`` training rows (on small
    #: data OpenMP synchronisation costs more than it saves), else the CPUs this process may use, at
    #: most ``max_threads``; > 0 = exactly that many
    num_threads: int = Field(default=0, ge=0)
    parallel_min_rows: int = Field(default=50_000, ge=0)
    max_threads: int = Field(default=2, ge=1)
    #: Optuna pruning: a trial is compared with the others every ``report_every`` rounds,
    #: after ``pruning_warmup_rounds`` rounds.
    report_every: int = Field(default=10, ge=1)
    pruning_warmup_rounds: int = Field(default=50, ge=0)
    #: the final model boosts at the tuned learning rate times this (early stopping finds the rounds):
    #: tuning needs fast trials, the one final fit can afford smaller steps
    final_learning_rate_factor: float = Field(default=0.25, gt=0, le=1)
    #: LightGBM's extremely randomised trees (a random threshold per feature at each split): ``tune``
    #: lets Optuna choose per trial, true / false fix it (training.tune.suggest_params). Off by default:
    #: with moment weights its test AUC gain on the generated CRMs was +0.012 / +0.011 / -0.016 over
    #: seeds 1-3, +0.001 on regime-shift and -0.001 on Olist: noise (README, Results)
    extra_trees: bool | Literal["tune"] = False
    #: the refit boosts the backtest's rounds times (its rows / the backtest's fitting rows) ** this; 0: as many
    refit_rounds_exponent: float = Field(default=0.0, ge=-1, le=1)
    #: the refit's booster is the average of this many boosters differing only in their seed
    #: (training.seed_average): 1 = one booster; more cost as many fits and take out the seed's variance
    refit_seeds: int = Field(default=1, ge=1, le=32)


class DaskTrainingConfig(_Strict):
    """The final fit on a Dask cluster (training.dask_fit), for training tables beyond one machine."""

    #: final fits on at least this many rows go to the cluster when a client is given; smaller ones stay here
    min_rows: int = Field(default=5_000_000, ge=1)
    #: wall-clock budget of one distributed fit; past it the fit is abandoned with an error
    timeout_s: float = Field(default=3600.0, gt=0)
    #: row chunks per worker (every chunk non-empty, placed round-robin)
    partitions_per_worker: int = Field(default=1, ge=1)
    #: ``host:port,host:port`` to pin LightGBM's ports (firewalled clusters); None: free ports per worker
    machines: str | None = None


class RecencyConfig(_Strict):
    """Recency candidates, chosen on the validation months (see :mod:`training.choice`)."""

    #: time-decay half-lives in months; null = no decay
    half_lives_months: list[float | None] = Field(default_factory=lambda: [None, 3.0, 6.0, 12.0], min_length=1)
    #: training windows in months before the validation months; null = all matured history
    windows_months: list[int | None] = Field(default_factory=lambda: [None, 6, 12], min_length=1)
    #: a combination replaces "all history, no decay" only when its validation log loss is this much lower
    min_gain: float = Field(default=0.002, ge=0, lt=1)
    #: the production refit chooses the recency again, fitting the months before its newest
    #: ``split.calibration_months`` and validating on those (training.refit.refit_recency); on by
    #: default: the backtest chose on its oldest months, on a drifting CRM all before the drift
    at_refit: bool = True


#: what a target's shipped model is (see training.choice and the bundle's ``kind``)
ModelKind = Literal["lightgbm", "logistic", "blend"]


def _all_kinds() -> list[ModelKind]:
    return ["lightgbm", "logistic", "blend"]


class ModelChoiceConfig(_Strict):
    """Model candidates, chosen by calibrated log loss on the calibration months (see :mod:`training.choice`)."""

    candidates: list[ModelKind] = Field(default_factory=_all_kinds, min_length=1)
    #: weights of the trees in the log-odds blend
    blend_weights: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], min_length=1)
    #: the production refit chooses the kind again among its own candidates, on its map's held-out scores
    #: (training.refit); false: it ships the backtest's choice
    at_refit: bool = True


class TrainingConfig(_Strict):
    seed: int = 42
    trials: int = 30
    timeout_seconds: float | None = None
    tune_sample_rows: int = 60_000
    registered_model_name: str = "leadscore"
    experiment_name: str = "leadscore"
    promotion_experiment_name: str = "leadscore-promotion"
    bootstrap_samples: int = 200
    ece_bins: int = Field(default=10, ge=2)
    min_isotonic_rows: int = 1000
    #: share of moments sales can follow up ("MQL capacity") for recall@capacity; None: the share the
    #: rule-based score flags as MQL on the same rows, so model and rule are compared at equal volume.
    capacity_share: float | None = Field(default=None, gt=0, le=1)
    #: the logistic baseline is fitted on a time-stratified sample: its dense design matrix is copied
    #: by every pipeline step, and 100k rows already pin a linear model down
    logreg_max_rows: int = 100_000
    #: the registered model (training.refit): refit on all matured months, the newest
    #: ``split.calibration_months`` calibrating it: ``cross_fit`` fits them too and calibrates on their
    #: out-of-fold scores, ``last_months`` leaves them out of the fit; ``none`` ships the backtest's model
    refit: Literal["cross_fit", "last_months", "none"] = "cross_fit"
    #: ``cross_fit``: folds (by lead) of the newest months whose out-of-fold scores fit the calibration map
    #: each moment weighed by its sampling weight (features.moments.moment_weights: the cap keeps fewer
    #: moments of leads that stay open): ``maps`` in the calibration maps and the model choice that
    #: compares them, ``fit`` there and in the models' fits too (the default: scores at the level of
    #: every moment production scores, not of the sample; README, Results), ``none`` nowhere
    moment_weights: Literal["none", "maps", "fit"] = "fit"
    refit_calibration_folds: int = Field(default=3, ge=2)
    recency: RecencyConfig = Field(default_factory=RecencyConfig)
    model_choice: ModelChoiceConfig = Field(default_factory=ModelChoiceConfig)
    #: features listed by train's drift report (highest PSI first)
    drift_top_features: int = Field(default=5, ge=1)
    lightgbm: LightGBMConfig = Field(default_factory=LightGBMConfig)
    dask: DaskTrainingConfig = Field(default_factory=DaskTrainingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    minimums: MinimumsConfig = Field(default_factory=MinimumsConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)


class MQLPolicy(_Strict):
    """How the MQL threshold on calibrated P(SQL) is chosen.

    Only the fields of the chosen ``kind`` are used; the others stay in the YAML so a reviewer can
    switch policy by changing one word.
    """

    kind: Literal["capacity", "target_rate", "expected_value"] = "capacity"
    capacity_per_month: int | None = Field(default=300, ge=1)
    target_rate: float | None = Field(default=0.3, gt=0, lt=1)
    value_of_sql: float | None = Field(default=1000.0, gt=0)
    cost_of_follow_up: float | None = Field(default=150.0, ge=0)
    # A rate measured on fewer MQLs than this is noise; thresholds this high are not considered
    # when looking for a target MQL->SQL rate.
    min_labelled_mqls: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _kind_has_its_fields(self) -> MQLPolicy:
        needed = {
            "capacity": ["capacity_per_month"],
            "target_rate": ["target_rate"],
            "expected_value": ["value_of_sql", "cost_of_follow_up"],
        }[self.kind]
        missing = [f for f in needed if getattr(self, f) is None]
        if missing:
            raise ValueError(f"mql_policy.kind={self.kind!r} needs {', '.join(missing)}")
        return self


class SLAReportConfig(_Strict):
    """Knobs of the SLA review report."""

    calibration_bins: int = Field(default=10, ge=2)
    listed_leads: int = Field(default=50, ge=0)  # gained/lost leads shown by name (all are counted)
    min_segment_leads: int = Field(default=1, ge=1)  # smaller segments are folded into "(other)"


class SLAConfig(_Strict):
    """The agreement between marketing and sales (configs/sla.yaml)."""

    recommended_stages: list[str] = Field(default_factory=lambda: ["lead", "mql", "sql"])
    sales_owned_stages: list[str] = Field(default_factory=lambda: ["opportunity", "customer", "disqualified"])
    mql_policy: MQLPolicy = Field(default_factory=MQLPolicy)
    # probability: recommend SQL when calibrated P(opportunity) reaches sql_recommend_p_opportunity;
    # target_rate: the lowest P(opportunity) threshold whose SQL recommendations become opportunities
    # (within the opportunity horizon) at least at that rate on the calibration months.
    sql_policy_kind: Literal["probability", "target_rate"] = "target_rate"
    sql_recommend_p_opportunity: float = Field(default=0.35, gt=0, lt=1)
    hysteresis: float = Field(default=0.1, ge=0, lt=1)
    recycle_after_days: int = Field(default=45, ge=1)
    follow_up_hours: int = Field(default=24, ge=1)
    # Replays need to know which leads had already crossed before the window; without earlier scored
    # moments, the first months of the window only serve that purpose (see training.sla.Replay).
    warmup_months: int = Field(default=1, ge=0)
    report: SLAReportConfig = Field(default_factory=SLAReportConfig)
    ops: SLAOpsConfig = Field(default_factory=SLAOpsConfig)
