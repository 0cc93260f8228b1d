"""Baseline: the event store as release 0.1 created it (``create_all`` plus its hand-kept index).

Frozen on purpose: this is what existing stores hold, whatever the table specs say today. A store
without an ``alembic_version`` table that matches it is stamped with this revision, then upgraded.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("domain", sa.Text()),
        sa.Column("industry", sa.Text()),
        sa.Column("employees", sa.BigInteger()),
        sa.Column("annual_revenue", sa.Float()),
        sa.Column("country", sa.Text()),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128)),
        sa.Column("email_domain", sa.Text()),
        sa.Column("job_title", sa.Text()),
        sa.Column("seniority", sa.Text()),
        sa.Column("department", sa.Text()),
        sa.Column("country", sa.Text()),
        sa.Column("source", sa.Text()),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at_explicit", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id"),
    )
    op.create_index("ix_leads_account_id", "leads", ["account_id"])
    op.create_index("ix_leads_account_lead_created", "leads", ["account_id", "lead_id", "created_at"])
    op.create_table(
        "activities",
        sa.Column("activity_id", sa.String(256), nullable=False),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("properties", sa.Text()),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("activity_id"),
    )
    op.create_index("ix_activities_lead_time", "activities", ["lead_id", "occurred_at"])
    op.create_table(
        "stage_changes",
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("changed_at", sa.BigInteger(), nullable=False),
        sa.Column("set_by", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("lead_id", "changed_at", "stage"),
    )
    op.create_table(
        "opportunities",
        sa.Column("opportunity_id", sa.String(128), nullable=False),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128)),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.Text()),
        sa.Column("amount", sa.Float()),
        sa.Column("closed_at", sa.BigInteger()),
        sa.Column("is_won", sa.Boolean()),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_index("ix_opportunities_lead_id", "opportunities", ["lead_id"])
    op.create_index("ix_opportunities_account_id", "opportunities", ["account_id"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("scored_at", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.BigInteger(), nullable=False),
        sa.Column("p_sql", sa.Float(), nullable=False),
        sa.Column("p_opportunity", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("previous_stage", sa.String(32)),
        sa.Column("stage_since", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scores_lead_time", "scores", ["lead_id", "scored_at", "id"])


def downgrade() -> None:
    for table in ("scores", "opportunities", "stage_changes", "activities", "leads", "accounts"):
        op.drop_table(table)
