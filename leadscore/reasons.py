"""The catalogue of reasons sales gives when it returns or disqualifies an MQL (``configs/reasons.yaml``).

Why a catalogue and not free text: the SLA review counts rejections by reason, and training turns a
rejection into a label event. Each reason says what it teaches the model (``label``):

* ``negative``: the lead will not buy (wrong persona, no budget, competitor, spam...). Its moments
  before the rejection are labelled 0 for the SQL target even when their horizon runs past the data
  cut-off: sales has already answered the question the label asks.
* ``censor``: the answer is "not now" (returned not ready, no response, bad timing). The lead may
  still convert, so the rejection is no label by itself: the moment keeps the ordinary rule (labelled
  by what happened within the horizon, censored when the horizon is not over).

Codes are ``word`` or ``group:word`` (``disqualified:no_budget``); a code the catalogue does not know
is counted as ``other`` in the review and treated as ``censor`` (never invent a negative).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from leadscore.tables import REASON_PATTERN


class Reason(BaseModel):
    """One reason code, the stage it goes with, its plain words and what it teaches the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=REASON_PATTERN)
    label: str
    #: the stage a change with this reason moves the lead to
    stage: Literal["recycled", "disqualified", "lead"]
    #: what the rejection teaches the SQL model (module docstring)
    label_rule: Literal["negative", "censor"] = "censor"


#: how a tree model's score is split among the features for the worded reasons and the band
#: (:mod:`training.attribution`): ``path`` (Saabas, about one prediction) or ``shap`` (TreeSHAP, ~30-50x)
Attribution = Literal["path", "shap"]


class ReasonsConfig(BaseModel):
    """The reason catalogue, and how a score's reasons are attributed; defaults: ``configs/reasons.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    catalogue: list[Reason] = Field(default_factory=list)
    #: recorded in the bundle at training (its band cut points are fitted on it), so the service and
    #: batch scoring of one bundle always attribute alike
    attribution: Attribution = "path"

    @field_validator("catalogue")
    @classmethod
    def _unique(cls, v: list[Reason]) -> list[Reason]:
        codes = [r.code for r in v]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate reason codes: {dupes}")
        return v

    def get(self, code: object) -> Reason | None:
        """The catalogue entry of ``code`` (case and blanks ignored), or None."""
        if not isinstance(code, str):
            return None
        key = code.strip().lower()
        return next((r for r in self.catalogue if r.code == key), None)

    def negatives(self) -> frozenset[str]:
        """Codes whose rejection labels the lead's earlier moments 0 (see the module docstring)."""
        return frozenset(r.code for r in self.catalogue if r.label_rule == "negative")

    def label_of(self, code: object) -> str:
        """Plain words for a code; unknown codes read as themselves."""
        r = self.get(code)
        return r.label if r is not None else str(code)
