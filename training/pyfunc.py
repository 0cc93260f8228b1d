"""The scoring bundle as an MLflow pyfunc model, so ``mlflow.pyfunc.load_model`` can score with it.

Logged as *code* (:mod:`training.mlflow_model`, MLflow's models-from-code) rather than a cloudpickled
object, with ``leadscore==<version>`` in its requirements: it loads wherever the leadscore wheel is
installed, without a checkout and across cloudpickle versions. The bundle directory travels as a model
artifact and is loaded and bound through the contract module (:mod:`training.bundle`), so the pyfunc,
serving and batch scoring all run the same :meth:`BoundBundle.predict`.

Which feature schema does a pyfunc caller's frame follow? The model cannot know the code that
computed it, so ``model_config["schema_hash"]`` declares it: logged as the bundle's own hash, and a
caller that knows its feature code's hash passes it (``load_model(uri, model_config={"schema_hash":
...})``) to have a mismatching model refused at load. The signature is written explicitly from the
feature schema (string/double, optional) rather than inferred from an example, because an example
with a missing value would otherwise decide a column's type.
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
from leadscore.training.bundle import OUTPUT_COLUMNS, BoundBundle, ScoringBundle

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_NAME_IN_RUN = "model"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
SCHEMA_HASH_KEY = "schema_hash"


class LeadscoreModel(PythonModel):  # type: ignore[misc]
    """``predict(features_df) -> DataFrame[p_sql, p_opportunity]`` backed by a :class:`BoundBundle`."""

    bundle: BoundBundle

    def load_context(self, context: Any) -> None:
        bundle = ScoringBundle.load(context.artifacts["bundle"])
        declared = (context.model_config or {}).get(SCHEMA_HASH_KEY, bundle.schema_hash)
        self.bundle = bundle.bind(schema_hash=str(declared))

    # ``pd.DataFrame`` hints: MLflow takes them as "no schema from type hints" (the explicit signature
    # from the feature schema describes the input) and does not wrap predict in its own validation.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.bundle.predict(frame)


def bundle_signature(bundle: ScoringBundle) -> ModelSignature:
    """Input columns from the feature schema (all optional: a feature may be unknown); one double output per
    target the bundle holds (two for the event-log models, ``p_sql`` alone for a one-label flat table)."""
    inputs = Schema([ColSpec("string" if s["dtype"] == "str" else "double", s["name"], required=False)
                     for s in bundle.schema])
    outputs = Schema([ColSpec("double", c) for t, c in OUTPUT_COLUMNS.items() if t in bundle.models])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_for_mlflow(bundle: ScoringBundle, example: pd.DataFrame) -> pd.DataFrame:
    """Plain object/float64 columns (MLflow's schema enforcement does not know pandas' ``str`` dtype)."""
    cols = {}
    for s in bundle.schema:
        col = example[s["name"]]
        cols[s["name"]] = col.astype(object).where(col.notna(), None) if s["dtype"] == "str" else col.astype("float64")
    return pd.DataFrame(cols, index=example.index)


def requirements() -> list[str]:
    """Pinned requirements of the logged model: leadscore itself (the model's code) and what it runs on."""
    from importlib.metadata import version

    packages = ("leadscore", "lightgbm", "numpy", "pandas", "scikit-learn", "pydantic", "mlflow")
    return [f"{pkg}=={version(pkg)}" for pkg in packages]


def log_bundle_model(
    bundle: ScoringBundle, bundle_dir: Path, example: pd.DataFrame, settings: Settings
) -> tuple[str, str]:
    """Log the bundle as a pyfunc model in the active run, register it, alias it ``challenger``.

    Returns ``(run_id, model version)``. Requirements are pinned explicitly so MLflow does not spawn
    a process to infer them (and would not find leadscore, which it cannot see as a requirement).
    """
    from mlflow import MlflowClient

    name = settings.training.registered_model_name
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=str(MODEL_CODE),
        artifacts={"bundle": str(bundle_dir)},
        model_config={SCHEMA_HASH_KEY: bundle.schema_hash},
        signature=bundle_signature(bundle),
        input_example=example_for_mlflow(bundle, example) if len(example) else None,
        pip_requirements=requirements(),
        registered_model_name=name,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "schema_hash", bundle.schema_hash)
    client.set_model_version_tag(name, version, "config_hash", bundle.config_hash)
    run = mlflow.active_run()
    return (run.info.run_id if run else str(info.run_id)), version
