"""Report facts: the kept hourly summary of finished tasks that ``tierwise report`` reads.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-10

Self-contained (five new tables and their indexes, nothing else changed). The tables
are a cache of what the rows say: dropping them loses nothing, the next report rebuilds them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FACT_SUMS = (
    "tasks",
    "accepted",
    "exhausted",
    "budget",
    "error",
    "running",
    "resolved",
    "escalated",
    "direct",
    "first_try",
    "checked",
    "fallbacks",
    "attempts",
    "own_attempts",
    "validator_attempts",
    "cost_pusd",
    "wasted_pusd",
    "validator_pusd",
    "probe_pusd",
    "shadow_pusd",
    "work_input_tokens",
    "work_cache_write_5m_tokens",
    "work_cache_write_1h_tokens",
    "work_cache_read_tokens",
    "work_output_tokens",
)
_TIER_SUMS = (
    "calls",
    "accepted",
    "rejected",
    "errors",
    "cost_pusd",
    "wasted_pusd",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)


def _total(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", sa.Integer, autoincrement=True, nullable=False)


def _hour() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("hour", sa.DateTime, nullable=False)


def upgrade() -> None:
    op.create_table(
        "report_hours",
        _hour(),
        sa.Column("version", sa.Integer, nullable=False),
        _total("tasks"),
        sa.Column("pending_json", sa.Text, nullable=False),
        _total("direct_n"),
        sa.Column("direct_latency", sa.LargeBinary, nullable=False),
        _total("escalated_n"),
        sa.Column("escalated_latency", sa.LargeBinary, nullable=False),
        sa.Column("summarised_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("hour", name="pk_report_hours"),
    )
    op.create_table(
        "report_facts",
        _id(),
        _hour(),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("start_tier", sa.String(64), nullable=False),
        sa.Column("start_index", sa.Integer, nullable=False),
        *(_total(name) for name in _FACT_SUMS),
        sa.PrimaryKeyConstraint("id", name="pk_report_facts"),
    )
    op.create_index("ix_report_facts_hour", "report_facts", ["hour"])
    op.create_table(
        "report_tiers",
        _id(),
        _hour(),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("task_role", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("tier_index", sa.Integer, nullable=False),
        *(_total(name) for name in _TIER_SUMS),
        sa.PrimaryKeyConstraint("id", name="pk_report_tiers"),
    )
    op.create_index("ix_report_tiers_hour", "report_tiers", ["hour"])
    op.create_table(
        "report_sessions",
        _id(),
        _hour(),
        sa.Column("session_id", sa.String(255), nullable=False),
        _total("tasks"),
        _total("cost_pusd"),
        sa.PrimaryKeyConstraint("id", name="pk_report_sessions"),
    )
    op.create_index("ix_report_sessions_hour", "report_sessions", ["hour"])
    op.create_table(
        "report_keys",
        _id(),
        _hour(),
        sa.Column("key_id", sa.Integer, nullable=True),
        _total("tasks"),
        _total("cost_pusd"),
        sa.PrimaryKeyConstraint("id", name="pk_report_keys"),
    )
    op.create_index("ix_report_keys_hour", "report_keys", ["hour"])


def downgrade() -> None:
    for table in ("report_keys", "report_sessions", "report_tiers", "report_facts"):
        op.drop_index(f"ix_{table}_hour", table_name=table)
        op.drop_table(table)
    op.drop_table("report_hours")
