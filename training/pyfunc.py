"""The scoring bundle as an MLflow pyfunc model, so ``mlflow.pyfunc.load_model`` can score with it.

The bundle directory travels as a model artifact; the wrapper only loads it and delegates, so the
pyfunc, serving and batch scoring all run the same :meth:`ScoringBundle.predict`. The signature is
written explicitly from the feature schema (string/double, optional) rather than inferred from an
example, because an example with a missing value would otherwise decide a column's type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, Schema

from leadscore.config import Settings
from leadscore.training.bundle import OUTPUT_COLUMNS, ScoringBundle

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_NAME_IN_RUN = "model"


class LeadscoreModel(PythonModel):  # type: ignore[misc]
    """``predict(features_df) -> DataFrame[p_sql, p_opportunity]`` backed by a :class:`ScoringBundle`."""

    def load_context(self, context: Any) -> None:
        self.bundle = ScoringBundle.load(context.artifacts["bundle"])

    # No type hints here on purpose: MLflow would turn them into its own input validation, while the
    # signature (from the feature schema) already describes the input.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.bundle.predict(frame)


def bundle_signature(bundle: ScoringBundle) -> ModelSignature:
    """Input columns from the feature schema (all optional: a feature may be unknown), outputs two doubles."""
    inputs = Schema([ColSpec("string" if s["dtype"] == "str" else "double", s["name"], required=False)
                     for s in bundle.schema])
    outputs = Schema([ColSpec("double", c) for c in OUTPUT_COLUMNS.values()])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_for_mlflow(bundle: ScoringBundle, example: pd.DataFrame) -> pd.DataFrame:
    """Plain object/float64 columns (MLflow's schema enforcement does not know pandas' ``str`` dtype)."""
    cols = {}
    for s in bundle.schema:
        col = example[s["name"]]
        cols[s["name"]] = col.astype(object).where(col.notna(), None) if s["dtype"] == "str" else col.astype("float64")
    return pd.DataFrame(cols, index=example.index)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("lightgbm", "numpy", "pandas", "scikit-learn", "pydantic", "mlflow")]


def log_bundle_model(
    bundle: ScoringBundle, bundle_dir: Path, example: pd.DataFrame, settings: Settings
) -> tuple[str, str]:
    """Log the bundle as a pyfunc model in the active run, register it, alias it ``challenger``.

    Returns ``(run_id, model version)``. Requirements are pinned explicitly so MLflow does not spawn
    a process to infer them.
    """
    from mlflow import MlflowClient

    name = settings.training.registered_model_name
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=LeadscoreModel(),
        artifacts={"bundle": str(bundle_dir)},
        signature=bundle_signature(bundle),
        input_example=example_for_mlflow(bundle, example) if len(example) else None,
        pip_requirements=_requirements(),
        registered_model_name=name,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "schema_hash", bundle.schema_hash)
    client.set_model_version_tag(name, version, "config_hash", bundle.config_hash)
    run = mlflow.active_run()
    return (run.info.run_id if run else str(info.run_id)), version
