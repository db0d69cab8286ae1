"""Shadow mode's agreement verdicts: one row per pair of tiers that answered a shadowed task.

Revision ID: 0006
Revises: 0005 (0004 is being merged beside it; the lead re-chains if needed)
Create Date: 2026-12-02

Self-contained (one table and its indexes), so it can be renumbered or re-chained. Shadow
calls themselves are ordinary attempts (role ``shadow``) on their task; this table keeps only
how each pair of answers compared, never the answers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _side(side: str) -> list[sa.Column[object]]:
    return [
        sa.Column(f"{side}_tier", sa.String(64), nullable=False),
        sa.Column(f"{side}_tier_index", sa.Integer, nullable=False),
        sa.Column(f"{side}_model", sa.String(255), nullable=False),
        sa.Column(f"{side}_attempt_no", sa.Integer, nullable=False),
        sa.Column(f"{side}_role", sa.String(16), nullable=False),
        sa.Column(f"{side}_passed", sa.Boolean, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "shadow_agreements",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        *_side("low"),
        *_side("high"),
        sa.Column("agree", sa.Boolean, nullable=True),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("similarity", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shadow_agreements"),
        sa.UniqueConstraint(
            "task_id",
            "low_attempt_no",
            "high_attempt_no",
            name="uq_shadow_agreements_task_id_low_attempt_no_high_attempt_no",
        ),
    )
    op.create_index(
        "ix_shadow_agreements_kind_created_at", "shadow_agreements", ["kind", "created_at"]
    )
    op.create_index("ix_shadow_agreements_task_id", "shadow_agreements", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_shadow_agreements_task_id", "shadow_agreements")
    op.drop_index("ix_shadow_agreements_kind_created_at", "shadow_agreements")
    op.drop_table("shadow_agreements")
