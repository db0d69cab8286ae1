"""Tasks carry the gateway key that created them (its id, never the secret).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Spend per key, budgets per key and "flag only the tasks your key created" read this column.
Tasks made without a key (the library, an anonymous gateway) leave it empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("key_id", sa.Integer, nullable=True))
        batch.create_index("ix_tasks_key_id_created_at", ["key_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_key_id_created_at")
        batch.drop_column("key_id")
