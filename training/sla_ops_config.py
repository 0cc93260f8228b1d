"""Knobs of the SLA operations review (``configs/sla.yaml``, section ``sla.ops``).

Apart from :class:`leadscore.training.config.SLAConfig` because they describe the review of what sales
did (follow-up speed, hand-backs, targets per stage), not how thresholds are set.
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SLAOpsConfig(BaseModel):
    """Targets the marketing-sales agreement sets, and how the review groups follow-up delays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: hours from hand-over to first sales touch that make a follow-up delay band (ascending)
    delay_bands_hours: list[float] = Field(default_factory=lambda: [4.0, 24.0, 72.0])
    #: an MQL counts as accepted when it reaches SQL within this many days of the hand-over
    acceptance_days: int = Field(default=60, ge=1)
    #: agreed conversion rate of each stage step ("mql->sql": 0.25, ...); the review shows actual vs target
    targets: dict[str, float] = Field(default_factory=dict)
    #: share of MQLs that must get their first touch within ``follow_up_hours``
    target_share_within: float = Field(default=0.9, gt=0, le=1)
    #: confidence level of the intervals the review shows
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    #: owner -> team, for CRMs whose export names no team (it wins over a team the CRM declares);
    #: owners in neither are grouped under "(no team)"
    teams: dict[str, str] = Field(default_factory=dict)

    @field_validator("delay_bands_hours")
    @classmethod
    def _ascending(cls, v: list[float]) -> list[float]:
        if not v or any(b <= a for a, b in itertools.pairwise(v)) or v[0] <= 0:
            raise ValueError("delay_bands_hours must be positive and ascending")
        return v

    def band_labels(self) -> list[str]:
        """``<4h``, ``4-24h``, ``24-72h``, ``>=72h`` for the default bands."""
        edges = [f"{b:g}" for b in self.delay_bands_hours]
        return [f"<{edges[0]}h"] + [f"{a}-{b}h" for a, b in itertools.pairwise(edges)] + [f">={edges[-1]}h"]
