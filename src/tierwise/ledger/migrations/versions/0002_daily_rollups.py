"""Daily rollups: exact per-day totals that ``tierwise ledger prune`` keeps for deleted rows.

Revision ID: 0002
Revises: 0001
Create Date: 2025-07-01

Self-contained (creates one table and its index, nothing else), so it can be renumbered when
other migrations land beside it. Every column is a dimension or an additive total; a later
dimension (a gateway key, say) is one ``add_column`` here and one more GROUP BY term in
``tierwise.ledger.rollups``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _total(name: str, type_: type[sa.types.TypeEngine] = sa.BigInteger) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, type_, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "daily_rollups",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tier_index", sa.Integer, nullable=False),
        _total("tasks"),
        _total("tasks_accepted"),
        _total("tasks_exhausted"),
        _total("tasks_budget"),
        _total("tasks_error"),
        _total("tasks_running"),
        _total("tasks_escalated"),
        _total("task_cost_pusd"),
        _total("tasks_timed"),
        _total("task_latency_s_sum", sa.Float),
        _total("attempts"),
        _total("accepted"),
        _total("rejected"),
        _total("errors"),
        _total("cost_pusd"),
        _total("wasted_pusd"),
        _total("validator_attempts"),
        _total("validator_cost_pusd"),
        _total("input_tokens"),
        _total("cache_write_5m_tokens"),
        _total("cache_write_1h_tokens"),
        _total("cache_read_tokens"),
        _total("output_tokens"),
        _total("tier_tasks"),
        _total("tier_escalated"),
        sa.PrimaryKeyConstraint("id", name="pk_daily_rollups"),
    )
    op.create_index("ix_daily_rollups_day_kind", "daily_rollups", ["day", "kind"])


def downgrade() -> None:
    op.drop_index("ix_daily_rollups_day_kind", table_name="daily_rollups")
    op.drop_table("daily_rollups")
