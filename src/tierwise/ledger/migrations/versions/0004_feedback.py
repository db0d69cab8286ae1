"""Feedback: the flags people put on outputs after the fact, the latest per task and author.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Self-contained (one table and its constraints), so it can be renumbered when other migrations
land beside it. ``tierwise ledger prune`` deletes a pruned task's feedback with it.
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
        "feedback",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("flag", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("key_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_feedback_task_id_tasks"),
        sa.UniqueConstraint("task_id", "author", name="uq_feedback_task_id_author"),
    )


def downgrade() -> None:
    op.drop_table("feedback")
