"""The promotion gate and rollback: who becomes ``champion``, on what evidence, and how to undo it.

A challenger is judged on the latest *fully matured* month that neither it nor the champion was
fitted, tuned or calibrated on — the only fair out-of-time comparison. It is promoted when its
P(SQL) ROC AUC is not lower than the champion's by more than ``auc_tolerance`` and its ECE is within
``max_ece``; a first model must beat the rule-based score instead (otherwise the rule stays in force).
Every decision, yes or no, is logged as an MLflow run with its numbers, and the registered model
keeps the chain of previous champions so ``leadscore rollback`` can restore the last one.
Both models are loaded bound to the current feature code (:meth:`ScoringBundle.bind`): a model whose
feature schema differs is refused before anything is scored or any alias moves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.errors import DataError, ModelError
from leadscore.training.bundle import BoundBundle, SchemaMismatchError
from leadscore.training.metrics import evaluate_metrics
from leadscore.training.pyfunc import CHALLENGER, CHAMPION
from leadscore.training.registry import ModelNotFoundError, load_bundle
from leadscore.training.split import last_matured_month_end
from leadscore.training.tracking import configure_mlflow, ensure_experiment

HISTORY_TAG = "leadscore.champion_history"


@dataclass
class PromotionDecision:
    """What the gate decided and why (``numbers`` holds every metric it looked at)."""

    action: str  # "promote" | "refuse" | "rollback"
    promoted: bool
    challenger: str | None
    champion: str | None
    month: str | None
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def _alias_version(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _history(name: str) -> list[str]:
    tags = _client().get_registered_model(name).tags
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def evaluation_month(
    bundles: list[BoundBundle], cutoff: pd.Timestamp, horizon_days: int
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of the latest fully matured month after everything any bundle was fitted on.

    Raises :class:`DataError` naming the month one has to wait for when there is none yet.
    """
    end = last_matured_month_end(cutoff, horizon_days)
    start = end - pd.DateOffset(months=1)
    windows = [b.window for b in bundles]
    if any(w is None for w in windows):
        raise DataError("a model without its training window cannot be compared on unseen months; retrain it")
    # a refit model saw every matured month up to its fitted_end (older bundles: up to the test start)
    fitted_end = max(pd.Timestamp(w["sql"].get("fitted_end", w["sql"]["test_start"])) for w in windows if w is not None)
    if start < fitted_end:
        raise DataError(
            f"no fully matured month after the models' fitting periods (which end {fitted_end:%Y-%m-%d}); "
            f"the latest matured month at cut-off {cutoff:%Y-%m-%d} is {start:%Y-%m}"
        )
    return start, end


def _month_rows(dataset: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    as_of = dataset["as_of"]
    return dataset[(as_of >= start) & (as_of < end) & dataset["y_sql"].notna()]


def decide(
    challenger: BoundBundle,
    champion: BoundBundle | None,
    rows: pd.DataFrame,
    settings: Settings,
) -> tuple[bool, str, dict[str, float]]:
    """The gate itself, on the evaluation month's moments (pure: no registry access)."""
    cfg = settings.training
    y = rows["y_sql"].to_numpy(dtype=np.float64)
    if len(rows) == 0 or y.min() == y.max():
        return False, f"the evaluation month has {len(rows)} matured moments and {int(y.sum())} positives; " \
                      "both outcomes are needed to compare models", {"rows": float(len(rows))}

    def m(p: np.ndarray) -> dict[str, Any]:
        return evaluate_metrics(y, p, n_boot=cfg.bootstrap_samples, n_bins=cfg.ece_bins, seed=cfg.seed)

    ch = m(challenger.predict(rows)["p_sql"].to_numpy())
    rule = m(rows["rule_score"].to_numpy(dtype=np.float64))
    numbers = {"rows": float(len(rows)), "positives": float(y.sum()),
               "challenger.roc_auc": ch["roc_auc"].value, "challenger.roc_auc.ci_lo": ch["roc_auc"].lo,
               "challenger.roc_auc.ci_hi": ch["roc_auc"].hi, "challenger.ece": ch["ece"].value,
               "challenger.brier": ch["brier"].value, "rule.roc_auc": rule["roc_auc"].value,
               "auc_tolerance": cfg.promotion.auc_tolerance, "max_ece": cfg.promotion.max_ece}
    ece_ok = ch["ece"].value <= cfg.promotion.max_ece
    ece_txt = f"ECE {ch['ece'].value:.4f} {'<=' if ece_ok else '>'} bound {cfg.promotion.max_ece}"
    if champion is None:
        beats = ch["roc_auc"].value > rule["roc_auc"].value
        reason = (f"first model: AUC {ch['roc_auc'].value:.4f} {'beats' if beats else 'does not beat'} the rule "
                  f"score's {rule['roc_auc'].value:.4f}; {ece_txt}")
        return beats and ece_ok, reason, numbers
    cp = m(champion.predict(rows)["p_sql"].to_numpy())
    numbers.update({"champion.roc_auc": cp["roc_auc"].value, "champion.ece": cp["ece"].value,
                    "champion.brier": cp["brier"].value,
                    "auc_difference": ch["roc_auc"].value - cp["roc_auc"].value})
    auc_ok = ch["roc_auc"].value >= cp["roc_auc"].value - cfg.promotion.auc_tolerance
    reason = (f"challenger AUC {ch['roc_auc'].value:.4f} vs champion {cp['roc_auc'].value:.4f} "
              f"({'within' if auc_ok else 'below'} tolerance {cfg.promotion.auc_tolerance}); {ece_txt}")
    return auc_ok and ece_ok, reason, numbers


def _log_decision(decision: PromotionDecision, settings: Settings) -> None:
    import mlflow

    exp = ensure_experiment(settings.training.promotion_experiment_name, settings)
    with mlflow.start_run(experiment_id=exp, run_name=f"{decision.action} v{decision.challenger}"):
        mlflow.set_tags({"leadscore.kind": decision.action, "promoted": str(decision.promoted),
                         "reason": decision.reason[:5000]})
        mlflow.log_params({"challenger_version": decision.challenger, "champion_version": decision.champion,
                           "evaluation_month": decision.month})
        finite = {k: v for k, v in decision.numbers.items() if np.isfinite(v)}
        if finite:
            mlflow.log_metrics(finite)
        mlflow.log_dict(decision.to_dict(), "decision.json")
    if decision.challenger is not None:
        stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S")
        _client().set_model_version_tag(settings.training.registered_model_name, decision.challenger,
                                        f"{decision.action}.{stamp}", decision.reason[:5000])


def _load_bound(name: str, version: str, role: str, settings: Settings, schema_hash: str | None = None) -> BoundBundle:
    """A registered version bound to the current feature code (or to a flat mapping's ``schema_hash``);
    the error names the role and version."""
    try:
        return load_bundle(f"models:/{name}/{version}", settings, schema_hash=schema_hash)
    except SchemaMismatchError as exc:
        raise SchemaMismatchError(f"cannot compare the {role} models:/{name}/{version}: {exc}") from exc


def promote(
    settings: Settings,
    crm_dir: Path | str | None = None,
    *,
    dataset: pd.DataFrame | None = None,
    cutoff: str | pd.Timestamp | None = None,
    schema_hash: str | None = None,
) -> PromotionDecision:
    """Compare ``challenger`` with ``champion`` and move the alias if the gate passes.

    Give either ``crm_dir`` (history is loaded and moments built) or an already built ``dataset``
    with ``cutoff``; ``schema_hash`` binds models whose features are not the feature code's (a flat
    mapping's, :func:`promote_flat`). The decision is logged whatever it is.
    """
    configure_mlflow(settings)
    name = settings.training.registered_model_name
    challenger_v = _alias_version(name, CHALLENGER)
    if challenger_v is None:
        raise ModelNotFoundError(f"no model has alias {CHALLENGER!r} in {name!r}: run `leadscore train` first")
    champion_v = _alias_version(name, CHAMPION)
    if challenger_v == champion_v:
        raise ModelError(f"version {challenger_v} already is the champion")
    challenger = _load_bound(name, challenger_v, CHALLENGER, settings, schema_hash)
    champion = _load_bound(name, champion_v, CHAMPION, settings, schema_hash) if champion_v else None
    if dataset is None:
        if crm_dir is None:
            raise DataError("promote needs the CRM history (crm_dir) or a moments dataset")
        from leadscore.features.build import build_dataset
        from leadscore.history import load_history

        history, _ = load_history(crm_dir, settings, cutoff=cutoff)
        dataset, _ = build_dataset(history, settings)
        cut = history.cutoff
    else:
        if cutoff is None:
            raise DataError("with a dataset, promote needs its cutoff")
        cut = pd.Timestamp(cutoff)
    bundles = [challenger] + ([champion] if champion is not None else [])
    try:
        start, end = evaluation_month(bundles, cut, settings.horizons.sql_days)
    except DataError as exc:
        decision = PromotionDecision("refuse", False, challenger_v, champion_v, None, str(exc))
        _log_decision(decision, settings)
        return decision
    ok, reason, numbers = decide(challenger, champion, _month_rows(dataset, start, end), settings)
    decision = PromotionDecision("promote" if ok else "refuse", ok, challenger_v, champion_v, f"{start:%Y-%m}",
                                 ("promoted: " if ok else "refused: ") + reason, numbers)
    if ok:
        client = _client()
        if champion_v is not None:
            client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*_history(name), champion_v]))
        client.set_registered_model_alias(name, CHAMPION, challenger_v)
        client.delete_registered_model_alias(name, CHALLENGER)
    _log_decision(decision, settings)
    return decision


def promote_flat(settings: Settings, flat_file: Path, mapping_file: Path) -> PromotionDecision:
    """``leadscore promote --flat FILE --mapping M``: the same gate for ``leadscore-flat-<mapping name>``,
    judged on the latest matured month of ``FILE`` after the models' fitting periods (a newer export of
    the table the challenger was trained on)."""
    from leadscore.training.flat import flat_dataset, flat_schema_hash, flat_settings, load_mapping

    mapping = load_mapping(mapping_file)
    data, dataset, cutoff = flat_dataset(flat_file, mapping)
    return promote(flat_settings(settings, mapping), dataset=dataset, cutoff=cutoff,
                   schema_hash=flat_schema_hash(data, mapping))


def rollback(settings: Settings) -> PromotionDecision:
    """Restore the previous champion (the one the last promotion replaced) and log it."""
    configure_mlflow(settings)
    name = settings.training.registered_model_name
    current = _alias_version(name, CHAMPION)
    if current is None:
        raise ModelNotFoundError(f"{name!r} has no champion to roll back")
    history = _history(name)
    if not history:
        raise ModelError(f"champion v{current} has no predecessor to roll back to")
    previous = history.pop()
    client = _client()
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    client.set_model_version_tag(name, current, "rolled_back", "true")
    decision = PromotionDecision("rollback", False, current, previous, None,
                                 f"rolled back: champion v{current} replaced by previous champion v{previous}")
    _log_decision(decision, settings)
    return decision
