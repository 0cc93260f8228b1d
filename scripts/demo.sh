#!/usr/bin/env bash
# The end-to-end demo on the embedded default: a generated CRM, validated; each stage of the
# pipeline appends its step here. Local state: $DEMO/ (CRM), mlruns.db + mlartifacts/ (MLflow),
# reports/ (SLA review), leadscore-events.db (event store).
set -euo pipefail
DEMO=${DEMO:-demo}
BIN=${BIN:-.venv/bin}
export BENTOML_DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

echo "== 1. generate a CRM history (20k leads, 18 months) =="
"$BIN/leadscore" generate --out "$DEMO/crm" --leads 20000 --months 18 --seed 3
echo "== 2. validate it =="
"$BIN/leadscore" validate "$DEMO/crm"
echo "== 3. train: tune, calibrate, backtest vs the rule score, register the challenger in MLflow =="
"$BIN/leadscore" train --crm "$DEMO/crm"
echo "== 4. promote the challenger if it passes the gate (first model: must beat the rule score) =="
"$BIN/leadscore" promote --crm "$DEMO/crm"
