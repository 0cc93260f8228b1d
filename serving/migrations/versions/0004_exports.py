"""score_exports and export_outbox: what batch exports and CRM syncs last sent, and batches not yet accepted.

``leadscore score --changed-only`` and ``leadscore sync hubspot`` keep per (target, lead) the stage and
score band last exported; ``export_outbox`` holds a CRM batch from before its first try until the CRM
accepts it. Self-contained (two new tables, nothing else touched), so it re-chains onto any head.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "score_exports",
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("band", sa.String(8), nullable=False),
        sa.Column("p_sql", sa.Float(), nullable=False),
        sa.Column("exported_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("target", "lead_id"),
    )
    op.create_table(
        "export_outbox",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("export_outbox")
    op.drop_table("score_exports")
