"""SLA operations: leads.owner, activities.actor, stage_changes.reason (issue 16, ARCHITECTURE §1).

* ``leads.owner`` (nullable): the rep or team owning the lead;
* ``activities.actor`` (``lead`` or ``sales``, not null): rows stored before it were all sent as the
  lead's own activities, so they are filled with ``lead`` (the server default) and nothing changes for
  the features they feed;
* ``stage_changes.reason`` (nullable): the reason code sales gave (``returned_not_ready``,
  ``disqualified:<code>``); older rows have none.

Self-contained on purpose: it only adds columns, so it applies on top of any revision that leaves these
three tables alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
    with op.batch_alter_table("activities") as batch:
        batch.add_column(sa.Column("actor", sa.String(16), nullable=False, server_default="lead"))
    with op.batch_alter_table("stage_changes") as batch:
        batch.add_column(sa.Column("reason", sa.String(64), nullable=True))


def downgrade() -> None:
    for table, name in (("stage_changes", "reason"), ("activities", "actor"), ("leads", "owner")):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(name)
