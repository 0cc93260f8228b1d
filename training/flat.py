"""Flat lead tables: one row per lead, interest signals already aggregated, one outcome column.

Many teams start from a spreadsheet-like export rather than an event log. Its mapping YAML
(:mod:`training.mapping`) says what each column is; here the table becomes model features:

* time: a timestamp ``time.column``, or ``time.order_by`` a sequential column (or the row order)
  cut into equal ordinal periods when the table has no dates;
* per column a ``type`` (``numeric``, ``categorical``, ``datetime`` → the ``parts`` asked for);
  categorical columns may also get point-in-time ``rolling_counts`` (rows with the same value in the
  previous N days, counting only earlier rows, so no label and no future row is used);
* ``leakage`` columns (filled after the outcome) are refused: giving one a ``fit``/``interest`` role
  stops the run;
* the ``rule`` (HubSpot style points per attribute value or numeric threshold, an MQL threshold) is
  scored on every row, written from domain sense, not fitted.

The **leakage guard** stops with a message naming the columns when one column alone nearly separates
the label: out-of-fold single-column AUC >= 0.95, or a category with >= 97% one outcome over >= 50
rows (only for an outcome that is not itself >= 90% of all rows, where 97% is no evidence).
``allow_leaky`` lets named columns through, for a reason the mapping should state in a comment.

:func:`train_flat` then hands the table to the event-log retrain
(:func:`training.train.train_from_dataset`): the same procedure (:func:`training.fit.fit_target`),
baselines, stage thresholds, SLA report, MLflow logging and registration. A flat table has one
outcome, so ONE model is trained, for the ``sql`` target; its horizon is the mapping's
``horizon_days``, and its label also fills ``y_opp`` so the SLA replay has an outcome for both stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.errors import DataError
from leadscore.training.flat_read import read_flat
from leadscore.training.mapping import (
    ColumnSpec,
    FlatMapping,
    MappingError,
    RulePoints,
    RuleSpec,
    TimeSpec,
    load_mapping,
    matches,
)

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.training.train import TrainResult

#: the one target a flat table's one label trains (its bundle holds this model only)
FLAT_TARGETS = ("sql",)
#: ordinal periods for row-order time are stamped as consecutive months from here (not real dates)
ORDINAL_EPOCH = pd.Timestamp("2000-01-01", tz="UTC")
LEAK_AUC = 0.95
LEAK_CATEGORY_SHARE = 0.97
LEAK_CATEGORY_ROWS = 50
LEAK_MAX_BASE_SHARE = 0.9


class LeakageError(DataError):
    """Columns that (nearly) give the outcome away; the message names them and how to proceed."""

    def __init__(self, message: str, report: LeakageReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------
# Preparing the table
# --------------------------------------------------------------------------------------------------


@dataclass
class FlatData:
    """Model-ready flat table: features in schema order, label, time, id, rule score, what was done."""

    features: pd.DataFrame
    schema: list[dict[str, Any]]
    y: np.ndarray
    as_of: pd.Series
    lead_id: pd.Series
    rule_score: np.ndarray
    real_time: bool
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)


def _feature_name(col: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in col.strip().lower()).strip("_")


def _numeric(s: pd.Series, col: str) -> pd.Series:
    num = pd.to_numeric(s, errors="coerce").astype("float64")
    bad = s.notna() & num.isna()
    if bad.any():
        examples = ", ".join(map(repr, s[bad].astype(str).unique()[:3]))
        raise MappingError(f"column {col!r} is mapped as numeric but {int(bad.sum())} values are not numbers "
                           f"(e.g. {examples}); map it as categorical or list the values in missing_values")
    return num


def _rolling_count(times: pd.Series, keys: pd.Series, days: int) -> np.ndarray:
    """Per row: rows with the same key in ``[t - days, t)`` (strictly earlier: only the past is known)."""
    out = np.zeros(len(times), dtype=np.float64)
    t = times.to_numpy(dtype="datetime64[ns]")
    width = np.timedelta64(days, "D")
    for _, idx in pd.Series(np.arange(len(times))).groupby(keys.fillna("(missing)").to_numpy()):
        pos = idx.to_numpy()
        ts = t[pos]
        order = np.argsort(ts, kind="stable")
        sorted_ts = ts[order]
        counts = np.searchsorted(sorted_ts, sorted_ts, side="left") - np.searchsorted(
            sorted_ts, sorted_ts - width, side="left")
        out[pos[order]] = counts
    return out


def _history(times: pd.Series, keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row: days since the key's first (strictly earlier or same-time) row, and earlier rows with it."""
    frame = pd.DataFrame({"t": times.to_numpy(), "k": keys.fillna("(missing)").to_numpy()})
    first = frame.groupby("k")["t"].transform("min")
    age = (frame["t"] - first).dt.total_seconds().to_numpy() / 86400.0
    t = frame["t"].to_numpy(dtype="datetime64[ns]")
    prior = np.zeros(len(frame))
    for _, idx in frame.groupby("k").groups.items():
        pos = np.asarray(idx)
        ts = t[pos]
        prior[pos] = np.searchsorted(np.sort(ts), ts, side="left")
    return age, prior


def _time(frame: pd.DataFrame, mapping: FlatMapping, notes: list[str]) -> tuple[pd.Series, bool]:
    """Scoring time per row: the time column, else ordinal periods by ``order_by`` or row order."""
    spec = mapping.time
    if spec.column is not None:
        if spec.column not in frame.columns:
            raise MappingError(f"time column {spec.column!r} is not in the flat file")
        ts = pd.to_datetime(frame[spec.column], utc=True, errors="coerce", format="mixed")
        if ts.isna().any():
            raise MappingError(f"time column {spec.column!r} has {int(ts.isna().sum())} missing or unparseable "
                               f"values (e.g. {frame.loc[ts.isna(), spec.column].astype(str).head(3).tolist()})")
        return ts.dt.as_unit("us").reset_index(drop=True), True
    if spec.order_by is not None:
        if spec.order_by not in frame.columns:
            raise MappingError(f"time.order_by column {spec.order_by!r} is not in the flat file")
        key = pd.to_numeric(frame[spec.order_by], errors="coerce")
        if key.isna().any():
            key = frame[spec.order_by].astype(str)
        rank = key.rank(method="first", ascending=not spec.descending).to_numpy() - 1
        what = f"{spec.order_by} ({'descending' if spec.descending else 'ascending'})"
    else:
        rank = np.arange(len(frame), dtype=np.float64)
        what = "row order"
    period = (rank * spec.periods // max(len(frame), 1)).astype(int)
    notes.append(f"no dates: time is {what}, cut into {spec.periods} equal ordinal periods stamped as months "
                 f"from {ORDINAL_EPOCH:%Y-%m} (not real dates)")
    months = {int(p): ORDINAL_EPOCH + pd.DateOffset(months=int(p)) for p in np.unique(period)}
    stamps = pd.Series(pd.DatetimeIndex([months[int(p)] for p in np.unique(period)]).take(
        np.searchsorted(np.unique(period), period))).dt.as_unit("us")
    return stamps, False


def declared_leaky(frame_columns: list[str], mapping: FlatMapping) -> list[str]:
    return [c for c in frame_columns if matches(c, mapping.leakage)]


def _label(frame: pd.DataFrame, mapping: FlatMapping) -> np.ndarray:
    """The outcome as 0/1; refuses empty labels and a table with one outcome only."""
    label_text = frame[mapping.label].astype(str).str.strip().str.lower()
    if frame[mapping.label].isna().any():
        raise MappingError(f"label column {mapping.label!r} has {int(frame[mapping.label].isna().sum())} empty values")
    positive = {p.lower() for p in mapping.positive}
    y = label_text.isin(positive).to_numpy(dtype=np.float64)
    if y.min() == y.max():
        raise MappingError(f"label column {mapping.label!r} has one outcome only "
                           f"(positive values: {sorted(positive)}; seen: {sorted(label_text.unique())[:5]})")
    return y


def prepare_flat(frame: pd.DataFrame, mapping: FlatMapping, labelled: bool = True) -> FlatData:
    """Turn the flat table into model features, label, time and rule score, checking the mapping.

    Raises :class:`MappingError` naming the column when the mapping and the file disagree, and when a
    column the mapping declares as leaky is given a role. ``labelled=False`` reads new leads to score
    (``leadscore score --flat``): no label is needed and ``y`` is all NaN.
    """
    frame = frame.reset_index(drop=True)
    notes: list[str] = []
    if labelled and mapping.label not in frame.columns:
        raise MappingError(f"label column {mapping.label!r} is not in the flat file (columns: {list(frame.columns)})")
    missing = [c for c in mapping.used() if c not in frame.columns]
    if missing:
        raise MappingError(f"mapped column(s) not in the flat file: {', '.join(missing)}")
    refused = [c for c in mapping.used() if matches(c, mapping.leakage)]
    if refused:
        raise MappingError(
            f"column(s) {', '.join(refused)} are listed under leakage (filled after the outcome) but mapped "
            "with a fit/interest role; set their role to ignore"
        )
    if mapping.missing_values:
        frame = frame.mask(frame.isin(mapping.missing_values))
    y = _label(frame, mapping) if labelled else np.full(len(frame), np.nan)
    as_of, real_time = _time(frame, mapping, notes)
    lead_id = (frame[mapping.id].astype(str) if mapping.id else pd.Series(np.arange(len(frame)).astype(str))
               ).reset_index(drop=True)
    if mapping.id and lead_id.duplicated().any():
        raise MappingError(f"id column {mapping.id!r} has {int(lead_id.duplicated().sum())} duplicate values")

    feats: dict[str, pd.Series | np.ndarray] = {}
    schema: list[dict[str, Any]] = []

    def add(name: str, values: pd.Series | np.ndarray, dtype: str, group: str, desc: str, template: str) -> None:
        feats[name] = values
        schema.append({"name": name, "dtype": dtype, "group": group, "description": desc, "template": template})

    for col, spec in mapping.used().items():
        base = _feature_name(col)
        s = frame[col]
        group = spec.role
        desc = spec.description or col
        if spec.type == "numeric":
            add(base, _numeric(s, col), "float64", group, desc, f"{col}: {{value}}")
        elif spec.type == "categorical":
            text = s.astype("str").str.strip()
            add(base, text.where(text.str.len() > 0).astype("str"), "str", group, desc, f"{col} is {{value}}")
            if (spec.rolling_counts or spec.history) and not real_time:
                raise MappingError(f"column {col!r}: rolling_counts/history need a real time column (time.column)")
            for days in spec.rolling_counts:
                add(f"{base}_n_prev_{days}d", _rolling_count(as_of, text, days), "float64", "interest",
                    f"earlier rows with the same {col} in the previous {days} days",
                    f"{{value}} earlier rows with this {col} in {days} days")
            if spec.history:
                age, prior = _history(as_of, text)
                add(f"{base}_age_days", age, "float64", "interest", f"days since this {col} first appeared",
                    f"this {col} first seen {{value}} days earlier")
                add(f"{base}_n_prior", prior, "float64", "interest", f"earlier rows with this {col}",
                    f"{{value}} earlier rows with this {col}")
        else:
            ts = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
            for part in spec.parts:
                values = {"weekday": ts.dt.dayofweek, "day": ts.dt.day, "hour": ts.dt.hour}[part]
                add(f"{base}_{part}", values.astype("float64"), "float64", group, f"{part} of {col}",
                    f"{col} {part}: {{value}}")
    for days in mapping.volume_windows_days:
        if not real_time:
            raise MappingError("volume_windows_days needs a real time column (time.column)")
        add(f"rows_prev_{days}d", _rolling_count(as_of, pd.Series(["all"] * len(frame)), days), "float64",
            "interest", f"rows in the previous {days} days", f"{{value}} rows in the previous {days} days")

    known = {mapping.label, mapping.id, mapping.time.column, mapping.time.order_by, *mapping.columns}
    excluded = {c: "leakage (filled after the outcome)" for c in declared_leaky(list(frame.columns), mapping)}
    excluded.update({c: "role ignore" for c, s in mapping.columns.items() if s.role == "ignore" and c not in excluded})
    unlisted = [c for c in frame.columns if c not in known and c not in excluded]
    excluded.update({c: "not in the mapping" for c in unlisted})
    if unlisted:
        notes.append(f"column(s) not in the mapping, ignored: {', '.join(unlisted)}")
    features = pd.DataFrame(feats)
    return FlatData(
        features=features, schema=schema, y=y, as_of=as_of, lead_id=lead_id,
        rule_score=rule_score(frame, mapping.rule), real_time=real_time, notes=notes, excluded=excluded,
    )


def rule_score(frame: pd.DataFrame, rule: RuleSpec) -> np.ndarray:
    """The mapping's points rule: the sum of the points of every condition a row meets.

    This is the flat-table counterpart of the HubSpot/Mautic points score: hand-written points per
    attribute value or numeric threshold, compared with the model at the same follow-up volume.
    """
    total = np.zeros(len(frame), dtype=np.float64)
    for p in rule.points:
        if p.column not in frame.columns:
            raise MappingError(f"rule names column {p.column!r}, which is not in the flat file")
        s = frame[p.column]
        hit = np.ones(len(frame), dtype=bool)
        if p.values is not None:
            hit &= s.astype(str).isin(p.values).to_numpy() & s.notna().to_numpy()
        if p.min is not None or p.max is not None:
            num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
            if p.min is not None:
                hit &= np.nan_to_num(num, nan=-np.inf) >= p.min
            if p.max is not None:
                hit &= np.nan_to_num(num, nan=np.inf) <= p.max
        if p.missing is not None:
            hit &= s.isna().to_numpy() == p.missing
        total += np.where(hit, p.points, 0.0)
    return total


# --------------------------------------------------------------------------------------------------
# Leakage guard
# --------------------------------------------------------------------------------------------------


@dataclass
class LeakageReport:
    """Per used column: out-of-fold single-column AUC and any near-pure category; what was flagged."""

    auc: dict[str, float]
    pure_categories: dict[str, list[dict[str, Any]]]
    flagged: dict[str, str]
    allowed: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"auc": self.auc, "pure_categories": self.pure_categories, "flagged": self.flagged,
                "allowed": self.allowed}


def _oof_encoding(x: pd.Series, y: np.ndarray, numeric: bool, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold target mean per category (or per quantile bin of a number), missing as its own level."""
    from sklearn.model_selection import StratifiedKFold

    if numeric:
        ranks = x.rank(pct=True)
        key = np.where(ranks.isna(), -1, np.minimum((ranks.fillna(0) * 20).astype(int), 19))
    else:
        key = x.astype(str).where(x.notna(), "\0missing").to_numpy()
    key_s = pd.Series(key)
    out = np.empty(len(x))
    prior = float(y.mean())
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        stats = pd.DataFrame({"k": key_s.iloc[tr].to_numpy(), "y": y[tr]}).groupby("k")["y"].agg(["sum", "count"])
        means = (stats["sum"] + prior) / (stats["count"] + 1)
        out[te] = key_s.iloc[te].map(means).fillna(prior).to_numpy()
    return out


def check_leakage(data: FlatData, mapping: FlatMapping, folds: int = 5, seed: int = 0) -> LeakageReport:
    """Flag model inputs that alone nearly give the label away (thresholds in the module docstring)."""
    from sklearn.metrics import roc_auc_score

    y = data.y
    base = {1.0: float(y.mean()), 0.0: 1.0 - float(y.mean())}
    auc: dict[str, float] = {}
    pure: dict[str, list[dict[str, Any]]] = {}
    flagged: dict[str, str] = {}
    source = {s["name"]: s for s in data.schema}
    for name, spec in source.items():
        x = data.features[name]
        enc = _oof_encoding(x, y, spec["dtype"] != "str", folds, seed)
        a = float(roc_auc_score(y, enc))
        auc[name] = round(max(a, 1 - a), 4)
        reasons = []
        if auc[name] >= LEAK_AUC:
            reasons.append(f"out-of-fold AUC {auc[name]:.3f} on its own")
        if spec["dtype"] == "str":
            stats = pd.DataFrame({"v": x.to_numpy(), "y": y}).dropna().groupby("v")["y"].agg(["mean", "count"])
            for value, row in stats[stats["count"] >= LEAK_CATEGORY_ROWS].iterrows():
                for outcome, share in ((1.0, row["mean"]), (0.0, 1 - row["mean"])):
                    if share >= LEAK_CATEGORY_SHARE and base[outcome] < LEAK_MAX_BASE_SHARE:
                        pure.setdefault(name, []).append(
                            {"value": str(value), "rows": int(row["count"]), "outcome": int(outcome),
                             "share": round(float(share), 4)})
            if name in pure:
                top = pure[name][0]
                reasons.append(f"{len(pure[name])} value(s) with >= {LEAK_CATEGORY_SHARE:.0%} one outcome, e.g. "
                               f"{top['value']!r}: {top['share']:.1%} {'positive' if top['outcome'] else 'negative'} "
                               f"over {top['rows']} rows")
        if reasons:
            flagged[name] = "; ".join(reasons)
    columns = {_feature_name(c): c for c in mapping.columns}
    allowed = {n: r for n, r in flagged.items() if matches(columns.get(n, n), mapping.allow_leaky)
               or matches(n, mapping.allow_leaky)}
    blocked = {n: r for n, r in flagged.items() if n not in allowed}
    report = LeakageReport(auc=auc, pure_categories=pure, flagged=blocked, allowed=allowed)
    if blocked:
        lines = [f"  {columns.get(n, n)}: {r}" for n, r in blocked.items()]
        raise LeakageError(
            "possible target leakage — these columns alone nearly give the outcome away:\n" + "\n".join(lines)
            + "\nIf a column is filled after the outcome (sales-entered status, snapshot), set its role to ignore "
            "and list it under leakage; if it is truly known before the outcome, list it under allow_leaky.",
            report,
        )
    return report


# --------------------------------------------------------------------------------------------------
# Training through the event-log engine
# --------------------------------------------------------------------------------------------------


def flat_settings(settings: Settings, mapping: FlatMapping) -> Settings:
    """The settings for a flat run: its own model name, one horizon, the mapping's MQL threshold."""
    training = settings.training.model_copy(update={
        "registered_model_name": f"{settings.training.registered_model_name}-flat-{mapping.name}",
        "experiment_name": f"{settings.training.experiment_name}-flat-{mapping.name}",
    })
    horizons = settings.horizons.model_copy(update={"sql_days": mapping.horizon_days,
                                                    "opp_days": mapping.horizon_days})
    rules = settings.rules.model_copy(update={"mql_threshold": mapping.rule.mql_threshold})
    return settings.model_copy(update={"training": training, "horizons": horizons, "rules": rules})


def moments_dataset(data: FlatData) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The flat table as a moments dataset (one moment per lead at its time) and a cut-off that matures it.

    The label is ``y_sql`` (the target trained) and is repeated as ``y_opp``: not to train a second
    model, but because the stage policy's replay reads an outcome for each stage.

    Flat outcomes are final as exported, so the cut-off is put one horizon after the month following
    the last row: every month counts as matured. Censoring of recent rows, where it matters, is the
    job of whoever builds the flat file (see the Olist evaluation).
    """
    frame = data.features.copy()
    frame.insert(0, "as_of", data.as_of.to_numpy())
    frame.insert(0, "lead_id", data.lead_id.to_numpy())
    frame["rule_score"] = data.rule_score
    frame["y_sql"] = data.y
    frame["y_opp"] = data.y
    last = pd.Timestamp(data.as_of.max())
    next_month = (last.tz_convert("UTC").tz_localize(None).to_period("M") + 1).to_timestamp().tz_localize("UTC")
    return frame, next_month


def flat_dataset(flat_file: Path, mapping: FlatMapping) -> tuple[FlatData, pd.DataFrame, pd.Timestamp]:
    """A labelled flat file as prepared data, its moments dataset and the cut-off that matures every month
    (what training fits and what the promotion gate evaluates on)."""
    data = prepare_flat(read_flat(flat_file), mapping)
    dataset, next_month = moments_dataset(data)
    return data, dataset, next_month + pd.Timedelta(days=mapping.horizon_days)


def flat_schema_hash(data: FlatData, mapping: FlatMapping) -> str:
    import hashlib
    import json

    payload = {"flat": mapping.name, "columns": [[s["name"], s["dtype"], s["group"]] for s in data.schema]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_flat(
    flat_file: Path,
    mapping_file: Path,
    settings: Settings,
    trials: int | None = None,
    timeout: float | None = None,
    out_dir: Path | None = None,
) -> TrainResult:
    """``leadscore train --flat FILE --mapping FILE``: check leakage, then train, log and register.

    Raises :class:`MappingError` or :class:`LeakageError` (with the column names) before any training.
    One model is trained, for the ``sql`` target (``FLAT_TARGETS``); the bundle holds it alone. It is
    registered as ``<registered_model_name>-flat-<mapping name>`` (alias ``challenger``), so a flat model
    never replaces the event-log champion.
    """
    from leadscore.training.train import train_from_dataset

    mapping = load_mapping(mapping_file)
    data, dataset, cutoff = flat_dataset(flat_file, mapping)
    leak = check_leakage(data, mapping, seed=settings.training.seed)
    s = flat_settings(settings, mapping)
    result = train_from_dataset(
        dataset, data.schema, s, cutoff, schema_hash=flat_schema_hash(data, mapping), trials=trials,
        timeout=timeout, out_dir=out_dir, targets=FLAT_TARGETS,
        data_info={"flat_file": str(Path(flat_file).resolve()), "mapping": mapping.name, "rows": len(dataset),
                   "time": "real" if data.real_time else "ordinal", "leakage_allowed": ",".join(leak.allowed)},
    )
    if result.run_id is not None:
        from mlflow import MlflowClient

        # What the mapping decided and what the guard measured travel with the run, next to the model.
        MlflowClient().log_dict(result.run_id, {"mapping": mapping.model_dump(mode="json"), "notes": data.notes,
                                                "excluded": data.excluded, "leakage": leak.to_dict()},
                                "flat/flat_mapping.json")
    return result


__all__ = ["FLAT_TARGETS", "ColumnSpec", "FlatData", "FlatMapping", "LeakageError", "LeakageReport", "MappingError",
           "RulePoints", "RuleSpec", "TimeSpec", "check_leakage", "flat_dataset", "load_mapping", "moments_dataset",
           "prepare_flat", "read_flat", "rule_score", "train_flat"]
