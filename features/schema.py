"""The feature schema as data: every column the model sees, its dtype, group and plain-language template.

The schema is derived from the configuration (activity catalogue, windows, half-lives), so adding an
activity type or a window adds columns without code changes. Training stores :func:`schema_hash` in
the model bundle and serving refuses a bundle whose hash differs from the running feature code: a
model must never be fed columns that mean something else than what it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from leadscore.config import Settings

#: Bump when the *meaning* of a feature changes without its name changing (semantics are part of
#: the contract between a trained model and the code that feeds it).
FEATURE_CODE_VERSION = 1

#: Categorical fit features, in output order. The SLA report segments by these names.
FIT_CATEGORICAL = (
    "source",
    "industry",
    "employee_band",
    "revenue_band",
    "country",
    "icp_match",
    "seniority",
    "department",
    "email_domain_type",
)
FIT_NUMERIC = ("employees", "annual_revenue")


@dataclass(frozen=True)
class FeatureSpec:
    """One model input column, declared by its family (:mod:`features.families`).

    ``template`` is the plain-language sentence for a value (``{value}`` is the value as ``unit``
    reads it; ``[one|many]`` picks by whether the value is 1); ``missing`` is the sentence for a
    missing value ("No buying signal yet" is a reason a reviewer understands, "Last buying signal
    none days ago" is not); ``value_texts`` gives whole sentences for known category values.
    Reasons sum the contributions of the columns of one ``concept`` (every column about demo
    requests, say) and word the sum with the applicable column of lowest ``rank``. ``only_for``: a
    present value reads as a buying signal ("2 pricing page views in the last 24 hours"), so the column
    never words a reason *against* the lead (training.reasons).
    """

    name: str
    dtype: Literal["float64", "str"]
    group: Literal["fit", "interest"]
    description: str
    template: str
    missing: str = ""
    concept: str = ""
    #: how a value reads: count, days, ratio, weight, flag, number, money or category (see training.reasons)
    unit: str = ""
    rank: int = 0
    value_texts: dict[str, str] = field(default_factory=dict)
    only_for: bool = False


def num(x: float) -> str:
    """Format a window/half-life for a column name: 14 -> "14", 2.5 -> "2p5"."""
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")



def missing_text(name: str) -> str:
    """Default sentence for a missing value: "Industry not known"."""
    return f"{name.replace('_', ' ').capitalize()} not known"


def feature(name: str, dtype: Literal["float64", "str"], group: Literal["fit", "interest"], description: str,
            template: str, missing: str = "", *, concept: str = "", unit: str = "", rank: int = 0,
            value_texts: dict[str, str] | None = None, only_for: bool = False) -> FeatureSpec:
    """A :class:`FeatureSpec` with the defaults filled in (missing sentence, concept = its own name)."""
    return FeatureSpec(name, dtype, group, description, template, missing or missing_text(name),
                       concept or name, unit or ("category" if dtype == "str" else "number"), rank,
                       dict(value_texts or {}), only_for)


def count_name(activity: str, window_days: int) -> str:
    return f"n_{activity}_{num(window_days)}d"


def decay_name(activity: str, half_life_days: float) -> str:
    return f"decay_{activity}_hl{num(half_life_days)}"


def window_phrase(days: float) -> str:
    """ "24 hours" for 1, else "7 days": what follows "in the last"."""
    return "24 hours" if days == 1 else f"{num(days)} days"


def singular(label: str) -> str:
    """The catalogue's plural label for one activity: "demo requests" → "demo request",
    "webinars attended" → "webinar attended", "other activities" → "other activity"."""
    words = label.split()
    if not words:
        return label
    last = words[-1]
    if last.endswith("ies") and len(last) > 3:
        words[-1] = last[:-3] + "y"
    elif last.endswith("s") and not last.endswith("ss"):
        words[-1] = last[:-1]
    elif words[0].endswith("s") and not words[0].endswith("ss"):
        words[0] = words[0][:-1]
    return " ".join(words)


def feature_schema(settings: Settings) -> list[FeatureSpec]:
    """All features in output order: each enabled family's columns, families in registry order.

    Fit families come first, then interest families; the engine reads the kernel slots of the same
    registry, so the order here and the kernel's layout cannot disagree.
    """
    from leadscore.features.registry import registry

    return registry(settings).schema


def feature_names(settings: Settings) -> list[str]:
    return [s.name for s in feature_schema(settings)]


def schema_hash(settings: Settings) -> str:
    """Digest of the feature names, dtypes and groups plus the configuration that shapes their values.

    The rule score is not a model input, so ``rules`` is not part of it: editing points must not
    invalidate trained models. Everything that changes what a column *means* is.
    """
    payload = {
        "version": FEATURE_CODE_VERSION,
        "columns": [[s.name, s.dtype, s.group] for s in feature_schema(settings)],
        "features": _features_payload(settings),
        "icp": settings.icp.model_dump(mode="json"),
        "titles": settings.titles.model_dump(mode="json"),
        "activities": [a.model_dump(mode="json") for a in settings.activities],
        "stages": settings.stages.model_dump(mode="json"),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _features_payload(settings: Settings) -> dict[str, object]:
    """The ``features`` section as the hash sees it.

    ``account_window_days`` and ``families`` came after models were trained: at their defaults they
    are left out, so a default configuration keeps the hash its models were trained under; set away
    from the default they are in (and the columns they add or rename are too).
    """
    from leadscore.features.registry import changed_switches

    dump = settings.features.model_dump(mode="json")
    if dump.pop("account_window_days") != 30:
        dump["account_window_days"] = settings.features.account_window_days
    dump.pop("families")
    switches = changed_switches(settings)
    if switches:
        dump["families"] = switches
    return dump
