"""account_versions: a per-account counter of membership changes, kept by triggers (SQLite).

The activity cache (``serving.cache``) must know, on every scoring read, whether an account's leads
(which leads, their creation times) changed since it last read them, whichever process wrote. Reading
the members to compare them costs a scan of the account's leads (4,000 rows for the largest
accounts, milliseconds per request); this counter, bumped by triggers on ``leads`` for every insert,
delete, account move or creation-time change, is one indexed row. Existing accounts start at 1.

PostgreSQL gets the table (the schema is one for both backends) but no triggers: its stores have no
activity cache and never read it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BUMP = ("INSERT INTO account_versions (account_id, version) SELECT {row}.account_id, 1 "
         "WHERE {row}.account_id IS NOT NULL ON CONFLICT (account_id) DO UPDATE SET version = version + 1;")
_TRIGGERS = {
    "tr_leads_members_insert": f"AFTER INSERT ON leads BEGIN {_BUMP.format(row='NEW')} END",
    "tr_leads_members_delete": f"AFTER DELETE ON leads BEGIN {_BUMP.format(row='OLD')} END",
    "tr_leads_members_update": ("AFTER UPDATE OF account_id, created_at ON leads "
                                "WHEN OLD.account_id IS NOT NEW.account_id OR OLD.created_at IS NOT NEW.created_at "
                                f"BEGIN {_BUMP.format(row='OLD')} {_BUMP.format(row='NEW')} END"),
}


def upgrade() -> None:
    op.create_table("account_versions",
                    sa.Column("account_id", sa.String(128), nullable=False),
                    sa.Column("version", sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint("account_id"))
    op.execute("INSERT INTO account_versions (account_id, version) "
               "SELECT DISTINCT account_id, 1 FROM leads WHERE account_id IS NOT NULL")
    if op.get_bind().dialect.name == "sqlite":
        for name, body in _TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("account_versions")
