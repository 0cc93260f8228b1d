"""One CRM schema: the history validation, the store's tables and the API's request models all come
from the table specs, so they agree on every constraint and a new column reaches all of them."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import ValidationError, create_model

from leadscore.config import Settings
from leadscore.history import _validate_table
from leadscore.serving.schemas import ActivityIn, LeadProperties, _Strict, spec_fields
from leadscore.serving.store_tables import metadata, sql_table
from leadscore.serving.wire import _pick, traits_to_props
from leadscore.tables import ACTIVITIES, LEADS, SERVICE_TABLES, TABLES, Column

CUTOFF = pd.Timestamp("2026-06-01", tz="UTC")


def test_every_spec_is_a_store_table_with_the_same_columns_and_key() -> None:
    for name, spec in {**TABLES, **SERVICE_TABLES}.items():
        table = metadata.tables[name]
        assert [c.name for c in table.columns] == [c.name for c in spec.fields]
        assert tuple(c.name for c in table.primary_key.columns) == spec.key
        for column in spec.fields:
            assert table.c[column.name].nullable == (column.nullable and column.name not in spec.key)


def test_a_column_added_to_a_spec_reaches_validation_store_api_and_wire(settings: Settings) -> None:
    """Adding a column end to end is one edit to the spec (plus a migration for existing stores)."""
    spec = dataclasses.replace(LEADS, fields=(*LEADS.fields, Column("linkedin_handle", "str", max_length=30)))
    assert spec.columns["linkedin_handle"] == "str" and "linkedin_handle" in spec.nullable

    table = sql_table(spec, sa.MetaData())
    assert isinstance(table.c.linkedin_handle.type, sa.String) and table.c.linkedin_handle.type.length == 30

    model = create_model("Props", __base__=_Strict, **spec_fields(spec, exclude=("lead_id",)))
    assert model(linkedin_handle="ana").linkedin_handle == "ana"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="at most 30 characters"):
        model(linkedin_handle="x" * 31)

    raw = pd.DataFrame([{"lead_id": "L1", "created_at": "2026-01-01", "linkedin_handle": "ana"},
                        {"lead_id": "L2", "created_at": "2026-01-01", "linkedin_handle": "y" * 31}])
    valid, rejected, _ = _validate_table(raw, spec, settings, CUTOFF, {"account_id": set()})
    assert valid["linkedin_handle"].tolist() == ["ana"]
    assert rejected["reason"].tolist() == ["linkedin_handle longer than 30 characters"]

    traits = {"linkedin_handle": "ana", "title": "CTO"}
    assert _pick(traits, spec) == {"linkedin_handle": "ana", "job_title": "CTO"}
    lead, _ = traits_to_props(traits, "traits")  # today's spec has no such column: the trait is not kept
    assert lead == {"job_title": "CTO"}


@pytest.mark.parametrize(
    ("activity_id", "reason"),
    [("a\nb", "control characters in activity_id"), ("x" * 257, "activity_id longer than 256 characters")],
)
def test_history_and_api_refuse_the_same_bad_ids(settings: Settings, activity_id: str, reason: str) -> None:
    raw = pd.DataFrame([
        {"activity_id": "ok-1", "lead_id": "L1", "occurred_at": "2026-01-01T00:00:00Z", "type": "page_view"},
        {"activity_id": activity_id, "lead_id": "L1", "occurred_at": "2026-01-01T00:00:00Z", "type": "page_view"},
    ])
    valid, rejected, _ = _validate_table(raw, ACTIVITIES, settings, CUTOFF, {"lead_id": {"L1"}})
    assert valid["activity_id"].tolist() == ["ok-1"]
    assert rejected["reason"].tolist() == [reason]
    with pytest.raises(ValidationError, match="activity_id"):
        ActivityIn(activity_id=activity_id, lead_id="L1", occurred_at="2026-01-01T00:00:00Z", type="page_view")


def test_request_models_keep_their_published_shape() -> None:
    schema = ActivityIn.model_json_schema()
    assert schema["title"] == "ActivityIn"
    assert schema["required"] == ["activity_id", "lead_id", "occurred_at", "type"]
    assert list(schema["properties"]) == ["activity_id", "lead_id", "occurred_at", "type", "properties", "actor",
                                          "lead", "account"]
    assert schema["properties"]["lead_id"]["maxLength"] == 128
    # issue 16: who acted (a rep's touch is never interest); the lead's own activity is the default
    sent = ActivityIn(activity_id="a", lead_id="l", occurred_at="2026-01-01T00:00:00Z", type="sales_call", actor="sales")
    assert sent.actor == "sales"
    assert ACTIVITIES.column("actor").default == "lead"  # left out: the store fills in the lead's own
    assert set(schema["$defs"]) == {"LeadProperties", "AccountProperties"}
    lead = LeadProperties.model_json_schema()
    assert "required" not in lead and "lead_id" not in lead["properties"]
    assert lead["additionalProperties"] is False
    with pytest.raises(ValidationError, match="occured_at"):
        ActivityIn.model_validate({"activity_id": "a", "lead_id": "l", "occurred_at": "2026-01-01", "type": "x",
                                   "occured_at": "2026-01-01"})
