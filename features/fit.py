"""Fit features: who the lead is (firmographics, ICP match, seniority/department from free-text titles).

One scalar function, :func:`fit_row`, computes them for one lead; the batch path calls it once per
lead (with a cache per distinct input) and the online path calls it for the one lead it scores, so the
two can never disagree. Title rules are regular expressions from ``configs/icp.yaml`` evaluated first
match wins, compiled once per settings object.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from leadscore.errors import ConfigError
from leadscore.features.arrays import column as frame_column
from leadscore.features.schema import FIT_CATEGORICAL, FIT_NUMERIC

if TYPE_CHECKING:
    from leadscore.config import Settings

FitRow = tuple[object, ...]
NAN = float("nan")


def _missing(x: object) -> bool:
    """True for None, NaN, pd.NA and blank strings (all the ways a CRM says "unknown")."""
    if x is None:
        return True
    if isinstance(x, float):
        return math.isnan(x)
    if isinstance(x, str):
        return not x.strip()
    try:
        return bool(x != x)  # pd.NA / NaT: comparisons are NA, bool() raises
    except TypeError:
        return True


def _token(x: object) -> str | float:
    """Normalise a category: lower case, words joined by ``_``; NaN when missing."""
    if _missing(x):
        return NAN
    return "_".join(str(x).strip().lower().split())


def _number(x: object) -> float:
    if _missing(x):
        return NAN
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return NAN
    return v if math.isfinite(v) else NAN


def _short(x: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            v = x / div
            return f"{v:g}{suffix}"
    return f"{x:g}"


def band_labels(edges: list[float], money: bool) -> list[str]:
    """Human labels of the bands cut by ``edges``: ``<10``, ``10-49``, ... ``5000+`` (money: ``1M-10M``)."""
    fmt = _short if money else (lambda v: f"{v:g}")
    labels = [f"<{fmt(edges[0])}"]
    for lo, hi in itertools.pairwise(edges):
        labels.append(f"{fmt(lo)}-{fmt(hi)}" if money else f"{fmt(lo)}-{fmt(hi - 1)}")
    labels.append(f"{fmt(edges[-1])}+")
    return labels


def _band(value: float, edges: list[float], labels: list[str]) -> str | float:
    if math.isnan(value):
        return NAN
    for edge, label in zip(edges, labels, strict=False):
        if value < edge:
            return label
    return labels[-1]


@dataclass
class FitRules:
    """Everything :func:`fit_row` needs, compiled once per settings object."""

    seniority: list[tuple[re.Pattern[str], str]]
    department: list[tuple[re.Pattern[str], str]]
    seniority_values: frozenset[str]
    department_values: frozenset[str]
    free_mail: frozenset[str]
    icp_industries: frozenset[str]
    icp_countries: frozenset[str]
    icp_min: float
    icp_max: float
    emp_edges: list[float]
    emp_labels: list[str]
    rev_edges: list[float]
    rev_labels: list[str]
    cache: dict[tuple[object, ...], FitRow]
    title_cache: dict[str, tuple[str | float, str | float]]


def fit_rules(settings: Settings) -> FitRules:
    """Compiled title rules and ICP sets for ``settings``, built once and kept with that settings object
    (its memo of fit rows, too, so a batch build maps each distinct lead profile once)."""
    return settings.derived("features.fit_rules", _compile_fit_rules)


def _compile_fit_rules(settings: Settings) -> FitRules:
    t, icp, fc = settings.titles, settings.icp, settings.features
    try:
        sen = [(re.compile(r.pattern, re.IGNORECASE), r.value) for r in t.seniority]
        dep = [(re.compile(r.pattern, re.IGNORECASE), r.value) for r in t.department]
    except re.error as exc:
        raise ConfigError(f"titles: invalid regular expression {exc.pattern!r}: {exc}") from exc
    return FitRules(
        seniority=sen,
        department=dep,
        seniority_values=frozenset(r.value for r in t.seniority),
        department_values=frozenset(r.value for r in t.department),
        free_mail=frozenset(d.strip().lower() for d in t.free_mail_domains),
        icp_industries=frozenset(str(_token(i)) for i in icp.industries),
        icp_countries=frozenset(c.strip().upper() for c in icp.countries),
        icp_min=float(icp.employees_min),
        icp_max=float(icp.employees_max),
        emp_edges=[float(e) for e in fc.employee_band_edges],
        emp_labels=band_labels([float(e) for e in fc.employee_band_edges], money=False),
        rev_edges=[float(e) for e in fc.revenue_band_edges],
        rev_labels=band_labels([float(e) for e in fc.revenue_band_edges], money=True),
        cache={},
        title_cache={},
    )


def _first_match(text: str, rules: list[tuple[re.Pattern[str], str]]) -> str | float:
    for pattern, value in rules:
        if pattern.search(text):
            return value
    return NAN


def title_to_roles(title: object, rules: FitRules) -> tuple[str | float, str | float]:
    """(seniority, department) implied by a free-text job title in any configured language."""
    if _missing(title):
        return NAN, NAN
    key = str(title)
    hit = rules.title_cache.get(key)
    if hit is None:
        text = " ".join(key.strip().split())
        hit = (_first_match(text, rules.seniority), _first_match(text, rules.department))
        if len(rules.title_cache) < 200_000:
            rules.title_cache[key] = hit
    return hit


def _role(crm_value: object, from_title: str | float, known: frozenset[str],
          rules: list[tuple[re.Pattern[str], str]]) -> str | float:
    """The CRM's own field wins when it holds a known value; else the title; else rules on the field."""
    tok = _token(crm_value)
    if isinstance(tok, str) and tok in known:
        return tok
    if isinstance(from_title, str):
        return from_title
    if isinstance(tok, str):
        return _first_match(str(crm_value), rules)
    return NAN


def _mail(email_domain: object, rules: FitRules) -> str:
    if _missing(email_domain):
        return "unknown"
    domain = str(email_domain).strip().lower().rsplit("@", 1)[-1]
    return "free_mail" if domain in rules.free_mail else "corporate"


def _upper(x: object) -> str | float:
    return NAN if _missing(x) else str(x).strip().upper()


def _roles(job_title: object, seniority: object, department: object,
           rules: FitRules) -> tuple[str | float, str | float]:
    t_sen, t_dep = title_to_roles(job_title, rules)
    return (_role(seniority, t_sen, rules.seniority_values, rules.seniority),
            _role(department, t_dep, rules.department_values, rules.department))


def _amount(x: object, edges: list[float], labels: list[str]) -> tuple[float, str | float]:
    """A size as a number (NaN when unknown) and its band label."""
    v = _number(x)
    return v, _band(v, edges, labels)


def _place(lc: str | float, ac: str | float, ind: str | float, emp: float, rules: FitRules) -> tuple[str | float, str]:
    """(country, icp_match) from the lead's and the account's countries, the industry and the size."""
    country = lc if isinstance(lc, str) else ac
    icp_country = ac if isinstance(ac, str) else country
    icp = (
        (not rules.icp_industries or (isinstance(ind, str) and ind in rules.icp_industries))
        and (not rules.icp_countries or (isinstance(icp_country, str) and icp_country in rules.icp_countries))
        and (not math.isnan(emp) and rules.icp_min <= emp <= rules.icp_max)
    )
    return country, "true" if icp else "false"


def fit_row(
    source: object,
    job_title: object,
    seniority: object,
    department: object,
    email_domain: object,
    lead_country: object,
    industry: object,
    employees: object,
    annual_revenue: object,
    account_country: object,
    rules: FitRules,
) -> FitRow:
    """The fit features of one lead, in ``FIT_CATEGORICAL + FIT_NUMERIC`` order.

    Strings for categories (NaN when unknown), floats for numbers. Pure: same inputs, same output,
    whichever path calls it. Built from the same parts :func:`fit_columns` applies per distinct value.
    """
    key: tuple[object, ...] = (source, job_title, seniority, department, email_domain, lead_country, industry,
                               employees, annual_revenue, account_country)
    try:
        hit = rules.cache.get(key)
    except TypeError:  # an unhashable cell: compute without the cache
        hit, key = None, ()
    if hit is not None:
        return hit
    sen, dep = _roles(job_title, seniority, department, rules)
    ind = _token(industry)
    emp, emp_band = _amount(employees, rules.emp_edges, rules.emp_labels)
    rev, rev_band = _amount(annual_revenue, rules.rev_edges, rules.rev_labels)
    country, icp = _place(_upper(lead_country), _upper(account_country), ind, emp, rules)
    row: FitRow = (_token(source), ind, emp_band, rev_band, country, icp, sen, dep, _mail(email_domain, rules),
                   emp, rev)
    assert len(row) == len(FIT_CATEGORICAL) + len(FIT_NUMERIC)
    if key and len(rules.cache) < 500_000:
        rules.cache[key] = row
    return row


def _groups(*columns: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct combinations of the columns' values (one object array of values per column) and
    each row's combination.

    Values are compared as ``pd.factorize`` compares them, the equality :func:`fit_row`'s cache keys
    use too, and any missing value stands for all of them (every part of the fit treats None, NaN,
    pd.NA alike). Only the distinct values become Python objects.
    """
    key = np.zeros(len(columns[0]), dtype=np.int64)
    per_column = []
    for i, col in enumerate(columns):
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        values = np.empty(len(uniques) + 1, dtype=object)
        values[:-1] = uniques.to_numpy(dtype=object) if hasattr(uniques, "to_numpy") else uniques
        values[-1] = NAN
        codes = np.where(codes < 0, len(uniques), codes)
        per_column.append((codes, values))
        key = key * (len(uniques) + 1) + codes
        if i + 1 < len(columns):  # dense again, so that the next product cannot overflow
            key = np.unique(key, return_inverse=True)[1]
    first, group = np.unique(key, return_index=True, return_inverse=True)[1:]
    return [values[codes[first]] for codes, values in per_column], group


def fit_columns(lead_cols: list[Any], acc_cols: list[Any], lead_acc: np.ndarray, rules: FitRules) -> list[np.ndarray]:
    """:func:`fit_row` for every lead at once, as ``FIT_CATEGORICAL + FIT_NUMERIC`` columns.

    ``lead_cols``: the lead's six arguments of :func:`fit_row` (arrays over leads); ``acc_cols``: the
    account's four (arrays over accounts); ``lead_acc``: each lead's account row (-1: none). Each part
    of :func:`fit_row` runs once per distinct value of what it reads (a few thousand titles, not one
    call per lead), then the results are gathered: the same functions on the same values, so each
    lead gets exactly what :func:`fit_row` gives it.
    """
    source, job_title, seniority, department, email_domain, lead_country = lead_cols
    industry, employees, annual_revenue, account_country = acc_cols

    def part(fn: Any, *cols: Any) -> tuple[list[Any], np.ndarray]:
        """``fn`` of each distinct combination of the columns' values, and each row's combination."""
        if not len(cols[0]):
            return [], np.zeros(0, dtype=np.int64)
        reps, group = _groups(*cols)
        return [fn(*vals) for vals in zip(*reps, strict=True)], group

    def column(values: list[Any], group: np.ndarray, item: int | None = None, dtype: Any = object) -> np.ndarray:
        picked = values if item is None else [v[item] for v in values]
        return np.fromiter(picked, dtype=dtype, count=len(picked))[group]

    def with_none(values: list[Any], group: np.ndarray, none: Any) -> tuple[list[Any], np.ndarray]:
        """Account-level results gathered to leads; leads without an account get ``none``."""
        return [*values, none], np.where(lead_acc >= 0, group[np.maximum(lead_acc, 0)] if len(group) else 0,
                                         len(values))

    src, g_src = part(_token, source)
    roles, g_roles = part(lambda t, s, d: _roles(t, s, d, rules), job_title, seniority, department)
    mail, g_mail = part(lambda v: _mail(v, rules), email_domain)
    lc, g_lc = part(_upper, lead_country)
    # account parts per distinct account value, then per lead through its account
    ind, g_ind = with_none(*part(_token, industry), _token(NAN))
    emp, g_emp = with_none(*part(lambda v: _amount(v, rules.emp_edges, rules.emp_labels), employees),
                           _amount(NAN, rules.emp_edges, rules.emp_labels))
    rev, g_rev = with_none(*part(lambda v: _amount(v, rules.rev_edges, rules.rev_labels), annual_revenue),
                           _amount(NAN, rules.rev_edges, rules.rev_labels))
    ac, g_ac = with_none(*part(_upper, account_country), _upper(NAN))
    place, g_place = part(lambda a, b, c, d: _place(lc[a], ac[b], ind[c], emp[d][0], rules), g_lc, g_ac, g_ind, g_emp)
    return [column(src, g_src), column(ind, g_ind), column(emp, g_emp, 1), column(rev, g_rev, 1),
            column(place, g_place, 0), column(place, g_place, 1), column(roles, g_roles, 0),
            column(roles, g_roles, 1), column(mail, g_mail), column(emp, g_emp, 0, np.float64),
            column(rev, g_rev, 0, np.float64)]


def fit_block(leads: pd.DataFrame, accounts: pd.DataFrame, lead_acc: np.ndarray, settings: Settings,
               only: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-lead fit features for :func:`features.engine.prepare` (``only``: just that lead via
    :func:`fit_row`, others NaN, so the online path reads one scalar per column; else every lead via
    :func:`fit_columns`, the same functions per distinct value)."""
    rules = fit_rules(settings)
    n = len(leads)

    def values(frame: pd.DataFrame, name: str, rows: np.ndarray | None) -> np.ndarray:
        size = len(frame) if rows is None else len(rows)
        if name not in frame.columns or not size:
            return np.full(size, np.nan, dtype=object)
        col = frame_column(frame, name)
        if rows is None:
            return col  # type: ignore[no-any-return]
        v = col[int(rows[0])]  # online: one scalar read instead of converting the whole column
        return np.array([np.nan if v is pd.NA or v is None else v], dtype=object)

    lead_names = ("source", "job_title", "seniority", "department", "email_domain", "country")
    acc_names = ("industry", "employees", "annual_revenue", "country")
    n_cat = len(FIT_CATEGORICAL)
    if only is None:
        cols = fit_columns([values(leads, c, None) for c in lead_names],
                           [values(accounts, c, None) for c in acc_names], lead_acc, rules)
        return cols[:n_cat], [np.asarray(c, dtype=np.float64) for c in cols[n_cat:]]
    a = int(lead_acc[only])
    acc_vals = ([values(accounts, c, np.array([a]))[0] for c in acc_names] if a >= 0
                else [np.nan] * len(acc_names))
    row = fit_row(*[values(leads, c, np.array([only]))[0] for c in lead_names], *acc_vals, rules=rules)  # type: ignore[misc]
    fit_cat = [np.full(n, np.nan, dtype=object) for _ in range(n_cat)]
    fit_num = [np.full(n, np.nan, dtype=np.float64) for _ in FIT_NUMERIC]
    for i, v in enumerate(row):
        if i < n_cat:
            fit_cat[i][only] = v
        else:
            fit_num[i - n_cat][only] = cast(float, v)
    return fit_cat, fit_num
