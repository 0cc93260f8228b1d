"""Config sections owned by the training package: splits, tuning, minimums, promotion, SLA policy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    auc_tolerance: float = 0.005
    max_ece: float = 0.03


class TrainingConfig(_Strict):
    seed: int = 42
    trials: int = 30
    timeout_seconds: float | None = None
    tune_sample_rows: int = 200_000
    registered_model_name: str = "leadscore"
    bootstrap_samples: int = 200
    split: SplitConfig = Field(default_factory=SplitConfig)
    minimums: MinimumsConfig = Field(default_factory=MinimumsConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)


class MQLPolicy(_Strict):
    """How the MQL threshold on calibrated P(SQL) is chosen."""

    kind: Literal["capacity", "target_rate", "expected_value"] = "capacity"
    capacity_per_month: int | None = 300
    target_rate: float | None = 0.3
    value_of_sql: float | None = 1000.0
    cost_of_follow_up: float | None = 150.0


class SLAConfig(_Strict):
    """The agreement between marketing and sales (configs/sla.yaml)."""

    mql_policy: MQLPolicy = Field(default_factory=MQLPolicy)
    sql_recommend_p_opportunity: float = 0.35
    hysteresis: float = 0.1
    recycle_after_days: int = 45
    follow_up_hours: int = 24
