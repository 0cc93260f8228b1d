"""Fit attributes: who the lead is (source, firmographics, ICP match, seniority, department, e-mail).

Computed outside the kernel, once per lead, by :func:`features.fit.fit_row` (the values do not depend
on the moment); the engine reads them in ``FIT_CATEGORICAL + FIT_NUMERIC`` order, which this column
order must follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leadscore.features.registry import Family
from leadscore.features.schema import FIT_CATEGORICAL, FIT_NUMERIC, FeatureSpec, feature

if TYPE_CHECKING:
    from leadscore.config import Settings


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    cols = [
        feature("source", "str", "fit", "Lead source (channel the lead came from).", "Came from {value}",
                "Lead source not known"),
        feature("industry", "str", "fit", "Industry of the lead's account.", "Works in {value}", "Industry not known"),
        feature("employee_band", "str", "fit", "Company size band of the account (employees).",
                "Company with {value} employees", "Company size not known", concept="company_size", rank=1),
        feature("revenue_band", "str", "fit", "Annual revenue band of the account.", "Company revenue {value}",
                "Company revenue not known", concept="company_revenue", rank=1),
        feature("country", "str", "fit", "Country of the lead, else of its account.", "Based in {value}",
                "Country not known"),
        feature("icp_match", "str", "fit", "Whether the account matches the ideal customer profile (configs/icp.yaml).",
                "Ideal customer profile match: {value}", "Ideal customer profile match not known",
                value_texts={"true": "Matches the ideal customer profile",
                             "false": "Outside the ideal customer profile"}),
        feature("seniority", "str", "fit", "Seniority from the CRM field, else from the job title rules.",
                "Seniority: {value}"),
        feature("department", "str", "fit", "Department from the CRM field, else from the job title rules.",
                "Department: {value}"),
        feature("email_domain_type", "str", "fit", "free_mail, corporate or unknown e-mail domain.",
                "E-mail domain: {value}",
                value_texts={"free_mail": "Uses a free-mail address", "corporate": "Uses a company e-mail address",
                             "unknown": "E-mail address not known"}),
        feature("employees", "float64", "fit", "Employees of the account.", "Company has {value} employees",
                "Company size not known", concept="company_size"),
        feature("annual_revenue", "float64", "fit", "Annual revenue of the account.", "Company revenue is {value}",
                "Company revenue not known", concept="company_revenue", unit="money"),
    ]
    assert tuple(c.name for c in cols) == FIT_CATEGORICAL + FIT_NUMERIC
    return cols


FAMILY = Family(
    name="fit",
    order=0,
    doc="Who the lead is: firmographics, ICP match, seniority and department from titles, e-mail domain.",
    columns=_columns,
)
