"""Plan-execute-review: the cost tree's columns on tasks and attempts, plans and their subtasks.

Revision ID: 0005
Revises: 0004 (0004 is being written beside it; the merge re-chains them)
Create Date: 2025-08-01

Self-contained (adds four nullable columns and an index to ``tasks`` and ``attempts``, creates
two tables), so it can be renumbered or re-chained. Existing rows are no plan's: the new
columns stay NULL. Money is BigInteger pico-USD; times are naive UTC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PLAN_COLUMNS = (
    ("plan_id", 64),
    ("subtask_id", 64),
    ("parent_id", 64),
    ("plan_role", 16),
)


def upgrade() -> None:
    for table in ("tasks", "attempts"):
        with op.batch_alter_table(table) as batch:
            for name, size in _PLAN_COLUMNS:
                batch.add_column(sa.Column(name, sa.String(size), nullable=True))
        op.create_index(f"ix_{table}_plan_id", table, ["plan_id"])
    op.create_table(
        "plans",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("goal_sha256", sa.String(64), nullable=False),
        sa.Column("goal_chars", sa.Integer, nullable=False),
        sa.Column("goal_text", sa.Text, nullable=True),
        sa.Column("prompt_version", sa.String(32), nullable=False),
        sa.Column("policy_revision", sa.String(64), nullable=True),
        sa.Column("planner_tier", sa.String(64), nullable=False),
        sa.Column("planner_model", sa.String(255), nullable=True),
        sa.Column("planner_provider", sa.String(64), nullable=True),
        sa.Column("reviewer_tier", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure", sa.Text, nullable=True),
        sa.Column("subtasks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cost_pusd", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
    )
    op.create_index("ix_plans_created_at", "plans", ["created_at"])
    op.create_table(
        "plan_subtasks",
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("subtask_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("depends_on", sa.Text, nullable=False),
        sa.Column("planned_tier", sa.String(64), nullable=False),
        sa.Column("assigned_tier", sa.String(64), nullable=False),
        sa.Column("assigned_tier_index", sa.Integer, nullable=False),
        sa.Column("raised", sa.Text, nullable=True),
        sa.Column("justification", sa.Text, nullable=True),
        sa.Column("prompt_sha256", sa.String(64), nullable=False),
        sa.Column("prompt_chars", sa.Integer, nullable=False),
        sa.Column("prompt_text", sa.Text, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("final_tier", sa.String(64), nullable=True),
        sa.Column("final_tier_index", sa.Integer, nullable=True),
        sa.Column("validator_climbs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reviewer_climbs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("review", sa.String(16), nullable=True),
        sa.Column("review_note", sa.Text, nullable=True),
        sa.Column("flagged_at", sa.DateTime, nullable=True),
        sa.Column("flag_reason", sa.Text, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("plan_id", "subtask_id", name="pk_plan_subtasks"),
    )
    op.create_index("ix_plan_subtasks_assigned_tier", "plan_subtasks", ["assigned_tier"])


def downgrade() -> None:
    op.drop_index("ix_plan_subtasks_assigned_tier", table_name="plan_subtasks")
    op.drop_table("plan_subtasks")
    op.drop_index("ix_plans_created_at", table_name="plans")
    op.drop_table("plans")
    for table in ("attempts", "tasks"):
        op.drop_index(f"ix_{table}_plan_id", table_name=table)
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(_PLAN_COLUMNS):
                batch.drop_column(name)
