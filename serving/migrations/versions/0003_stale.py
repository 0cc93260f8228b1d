"""stale_marks: the durable queue of leads whose latest score a late or concurrent activity made stale.

Marked in the transaction that made them stale, so a ``kill -9`` loses no mark; the service's
background worker rescores them and clears the marks (``serving/stale.py``). Self-contained: creates
and drops only its own table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stale_marks",
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=True),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.Column("score_mark", sa.BigInteger(), nullable=False),
        sa.Column("colleagues", sa.Boolean(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id"),
    )
    op.create_index("ix_stale_marks_account_id", "stale_marks", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_stale_marks_account_id", table_name="stale_marks")
    op.drop_table("stale_marks")
