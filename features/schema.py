"""The feature schema as data: every column the model sees, its dtype, group and plain-language template.

The schema is derived from the configuration (activity catalogue, windows, half-lives), so adding an
activity type or a window adds columns without code changes. Training stores :func:`schema_hash` in
the model bundle and serving refuses a bundle whose hash differs from the running feature code: a
model must never be fed columns that mean something else than what it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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
    """One model input column. ``template`` explains a value in words, with ``{value}`` in it.

    ``missing`` is the sentence for a missing value: "no buying signal yet" is a reason a reviewer
    understands, "Last buying signal none days ago" is not.
    """

    name: str
    dtype: Literal["float64", "str"]
    group: Literal["fit", "interest"]
    description: str
    template: str
    missing: str = ""


def _num(x: float) -> str:
    """Format a window/half-life for a column name: 14 -> "14", 2.5 -> "2p5"."""
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")


def missing_text(name: str) -> str:
    """Default sentence for a missing value: "Industry not known"."""
    return f"{name.replace('_', ' ').capitalize()} not known"


def count_name(activity: str, window_days: int) -> str:
    return f"n_{activity}_{_num(window_days)}d"


def decay_name(activity: str, half_life_days: float) -> str:
    return f"decay_{activity}_hl{_num(half_life_days)}"


def feature_schema(settings: Settings) -> list[FeatureSpec]:
    """All features in output order: fit features first, then interest features.

    The interest block is laid out exactly as the kernel in :mod:`features.kernel` writes it, which is
    why the engine builds its column map from this same function.
    """
    fc = settings.features
    specs: list[FeatureSpec] = []

    def add(name: str, dtype: Literal["float64", "str"], group: Literal["fit", "interest"], desc: str, tpl: str,
            missing: str = "") -> None:
        specs.append(FeatureSpec(name, dtype, group, desc, tpl, missing or missing_text(name)))

    # ---- fit: who the lead is -------------------------------------------------------------------
    add("source", "str", "fit", "Lead source (channel the lead came from).", "Came from {value}", "Lead source not known")
    add("industry", "str", "fit", "Industry of the lead's account.", "Works in {value}", "Industry not known")
    add("employee_band", "str", "fit", "Company size band of the account (employees).", "Company with {value} employees", "Company size not known")
    add("revenue_band", "str", "fit", "Annual revenue band of the account.", "Company revenue {value}", "Company revenue not known")
    add("country", "str", "fit", "Country of the lead, else of its account.", "Based in {value}", "Country not known")
    add("icp_match", "str", "fit", "Whether the account matches the ideal customer profile (configs/icp.yaml).",
        "Ideal customer profile match: {value}", "Ideal customer profile match not known")
    add("seniority", "str", "fit", "Seniority from the CRM field, else from the job title rules.", "Seniority: {value}")
    add("department", "str", "fit", "Department from the CRM field, else from the job title rules.", "Department: {value}")
    add("email_domain_type", "str", "fit", "free_mail, corporate or unknown e-mail domain.", "E-mail domain: {value}")
    add("employees", "float64", "fit", "Employees of the account.", "Company has {value} employees", "Company size not known")
    add("annual_revenue", "float64", "fit", "Annual revenue of the account.", "Company revenue is {value}", "Company revenue not known")

    # ---- interest: what the lead did, as of the scoring moment ----------------------------------
    for a in settings.activities:
        for w in fc.windows_days:
            add(count_name(a.name, w), "float64", "interest", f"Number of {a.name} activities in the last {w} days.",
                f"{{value}} {a.label} in the last {w} days")
    for w in fc.windows_days:
        add(f"n_total_{_num(w)}d", "float64", "interest", f"Number of activities of any type in the last {w} days.",
            f"{{value}} activities in the last {w} days")
        add(f"n_high_intent_{_num(w)}d", "float64", "interest",
            f"Number of high-intent activities (pricing, demo, trial, meeting...) in the last {w} days.",
            f"{{value}} buying signals in the last {w} days")
    for a in settings.activities:
        for hl in fc.half_lives_days:
            add(decay_name(a.name, hl), "float64", "interest",
                f"Exponentially decayed count of {a.name} activities, half-life {hl} days.",
                f"Recent {a.label} (weighted, half-life {_num(hl)} days): {{value}}")
    for hl in fc.half_lives_days:
        add(f"decay_total_hl{_num(hl)}", "float64", "interest",
            f"Exponentially decayed count of all activities, half-life {hl} days.",
            f"Recent activity (weighted, half-life {_num(hl)} days): {{value}}")
    add("n_activities_total", "float64", "interest", "All activities up to the scoring moment.",
        "{value} activities in total")
    for a in settings.activities:
        if a.negative:
            add(f"n_{a.name}_total", "float64", "interest", f"All {a.name} activities up to the moment (negative signal).",
                f"{{value}} {a.label} in total")
    add("days_since_last_activity", "float64", "interest", "Days since the last activity (NaN: none yet).",
        "Last activity {value} days ago", "No activity yet")
    add("days_since_last_high_intent", "float64", "interest", "Days since the last high-intent activity (NaN: none).",
        "Last buying signal {value} days ago", "No buying signal yet")
    add("days_since_first_activity", "float64", "interest", "Days since the first activity (NaN: none yet).",
        "First activity {value} days ago", "No activity yet")
    for w in fc.windows_days:
        if w > 1:
            add(f"active_days_{_num(w)}d", "float64", "interest", f"Distinct UTC days with activity in the last {w} days.",
                f"Active on {{value}} days of the last {w}")
    r, b = fc.velocity_recent_days, fc.velocity_base_days
    add(f"velocity_{r}_{b}", "float64", "interest",
        f"Daily activity rate of the last {r} days over that of the {b} days before (smoothed; 1 = steady).",
        f"Activity pace vs the previous {b} days: {{value}}x")
    add("times_recycled", "float64", "interest", "How often the lead was recycled back to nurturing so far.",
        "Recycled {value} times")
    add("current_stage", "str", "interest", "Lifecycle stage at the moment (last stage change; NaN: none).",
        "Currently in stage {value}", "No lifecycle stage recorded yet")
    add("days_in_stage", "float64", "interest", "Days since the last stage change (NaN: none).",
        "In the current stage for {value} days", "No lifecycle stage recorded yet")
    add("days_since_created", "float64", "interest", "Days since the lead was created.", "Lead created {value} days ago")
    add("account_n_leads", "float64", "interest", "Leads at the same account created so far, this one included (NaN: no account).",
        "{value} people from this company are known", "No company known")
    add("account_has_open_opportunity", "float64", "interest", "1 if the account has an open opportunity (NaN: no account).",
        "Company has an open opportunity: {value}", "No company known")
    add("account_had_opportunity", "float64", "interest", "1 if the account has had any opportunity so far (NaN: no account).",
        "Company has had an opportunity: {value}", "No company known")
    add("account_other_leads_activities_30d", "float64", "interest",
        "Activities of the other leads of the same account in the last 30 days (NaN: no account).",
        "{value} activities by colleagues in the last 30 days", "No company known")
    add("account_other_leads_high_intent_30d", "float64", "interest",
        "High-intent activities of the other leads of the same account in the last 30 days (NaN: no account).",
        "{value} buying signals by colleagues in the last 30 days", "No company known")
    return specs


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
        "features": settings.features.model_dump(mode="json"),
        "icp": settings.icp.model_dump(mode="json"),
        "titles": settings.titles.model_dump(mode="json"),
        "activities": [a.model_dump(mode="json") for a in settings.activities],
        "stages": settings.stages.model_dump(mode="json"),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
