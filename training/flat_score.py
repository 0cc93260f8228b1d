"""``leadscore score --flat NEW.csv --model models:/leadscore-flat-<name>@champion``: score new rows of a flat table.

A flat model (:mod:`training.flat`) is trained on one export of a "one row per lead" table; scoring it
means reading a newer export of the same table, turning it into the same features with the same
mapping, and answering what ``leadscore score`` answers for event-log leads (calibrated P(SQL), the
stage policy, worded reasons, trend ``new``: a flat table has no score trail).

The mapping comes with the model: training logged it next to the model (``flat/flat_mapping.json`` in
the run), so the file is read exactly as the model's training file was; ``--mapping`` overrides it.
The new file is checked against the mapping before anything is scored: a mapped column that is missing,
or a column the mapping does not know, is named in the error (a renamed column in the export would
otherwise score every lead as if the value were missing). The label may be there (it is ignored) or not.
Point-in-time counts (``rolling_counts``, ``history``) read the earlier rows of the new file itself.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from leadscore.errors import LeadscoreError
from leadscore.training.flat import flat_schema_hash, prepare_flat, read_flat
from leadscore.training.mapping import FlatMapping, matches

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.training.batch_score import BatchSummary


class FlatScoreError(LeadscoreError):
    """The new file does not fit the model's mapping (columns named), or the model has no mapping."""


def check_columns(columns: list[str], mapping: FlatMapping) -> None:
    """Refuse a file missing a mapped column (the id and time included) or holding a column the mapping
    does not know; both lists are named."""
    needed = [c for c in (mapping.id, mapping.time.column) if c] + list(mapping.used())
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    known = {mapping.label, mapping.id, mapping.time.column, mapping.time.order_by, *mapping.columns}
    unexpected = [c for c in columns if c not in known and not matches(c, mapping.leakage)]
    problems = []
    if missing:
        problems.append(f"missing column(s) the mapping uses: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s) the mapping does not know: {', '.join(unexpected)} "
                        "(add them to the mapping with role ignore, or drop them)")
    if problems:
        raise FlatScoreError(f"the file does not fit mapping {mapping.name!r}: " + "; ".join(problems))


def model_mapping(model_uri: str, settings: Settings) -> FlatMapping:
    """The mapping the flat model at ``model_uri`` was trained with (logged by :func:`train_flat`)."""
    from mlflow import MlflowClient

    from leadscore.training.registry import run_id_of
    from leadscore.training.tracking import configure_mlflow

    configure_mlflow(settings)
    try:
        run_id = run_id_of(model_uri, settings)
        with tempfile.TemporaryDirectory(prefix="leadscore-mapping-") as tmp:
            path = MlflowClient().download_artifacts(run_id, "flat/flat_mapping.json", tmp)
            logged = json.loads(Path(path).read_text())
    except Exception as exc:  # no such model, or not a flat model's run: say which
        raise FlatScoreError(f"{model_uri}: no flat mapping logged with the model ({exc}); give --mapping") from exc
    return FlatMapping.model_validate(logged["mapping"])


def score_flat(flat_file: Path, settings: Settings, out: Path, model_uri: str,
               mapping: FlatMapping | None = None, reasons: bool = True) -> BatchSummary:
    """Score every row of ``flat_file`` with the flat model at ``model_uri`` into ``out`` (.parquet/.csv)."""
    from leadscore.serving.scoring import ModelLoadError, Scorer
    from leadscore.training.batch_score import COLUMNS, BatchSummary, score_frame
    from leadscore.training.bundle import SchemaMismatchError
    from leadscore.training.registry import load_bundle
    from leadscore.training.score_files import ScoreWriter

    started = time.perf_counter()
    mapping = mapping or model_mapping(model_uri, settings)
    frame = read_flat(flat_file)
    check_columns([str(c) for c in frame.columns], mapping)
    data = prepare_flat(frame, mapping, labelled=False)
    try:
        bundle = load_bundle(model_uri, settings, schema_hash=flat_schema_hash(data, mapping))
    except SchemaMismatchError as exc:
        raise FlatScoreError(f"{model_uri} was not trained on mapping {mapping.name!r} as this file reads: {exc}") \
            from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot load model {model_uri}: {exc}") from exc
    scorer = Scorer(bundle, settings, model_uri)
    features = data.features.copy()
    features.insert(0, "as_of", data.as_of.to_numpy())
    features.insert(0, "lead_id", data.lead_id.to_numpy())
    scores = score_frame(scorer, features, reasons)
    writer = ScoreWriter(out, COLUMNS)
    try:
        writer.write(scores)
    finally:
        writer.close()
    return BatchSummary(rows=writer.rows, closed=0, not_created=0, as_of=pd.Timestamp(data.as_of.max()), out=out,
                        seconds=time.perf_counter() - started, model_version=scorer.version)
