"""The initial ledger schema: policy revisions, sessions, tasks, attempts, budgets, keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full (not derived from ``tierwise.ledger.schema``) so that later changes to the
live metadata never change what this step creates; a test checks that head matches the metadata.
Money is BigInteger pico-USD; times are naive UTC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _money(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.BigInteger, nullable=nullable, server_default=None if nullable else "0"
    )


def upgrade() -> None:
    op.create_table(
        "policy_revisions",
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("policy_json", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("revision", name="pk_policy_revisions"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_seen_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("policy_revision", sa.String(64), nullable=True),
        sa.Column("decision_tier", sa.String(64), nullable=False),
        sa.Column("decision_tier_index", sa.Integer, nullable=False),
        sa.Column("decision_step", sa.String(16), nullable=False),
        sa.Column("decision_rule", sa.String(255), nullable=True),
        sa.Column("decision_floor", sa.String(64), nullable=True),
        sa.Column("decision_json", sa.Text, nullable=False),
        sa.Column("prompt_sha256", sa.String(64), nullable=False),
        sa.Column("prompt_chars", sa.Integer, nullable=False),
        sa.Column("prompt_text", sa.Text, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("final_tier", sa.String(64), nullable=True),
        _money("cost_pusd"),
        sa.Column("latency_s", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_sha256", sa.String(64), nullable=True),
        sa.Column("output_chars", sa.Integer, nullable=True),
        sa.Column("output_text", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_tasks_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(
            ["policy_revision"],
            ["policy_revisions.revision"],
            name="fk_tasks_policy_revision_policy_revisions",
        ),
    )
    op.create_index("ix_tasks_kind_created_at", "tasks", ["kind", "created_at"])
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"])
    op.create_index("ix_tasks_session_id", "tasks", ["session_id"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("tier_index", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_5m_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_1h_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        _money("cost_pusd"),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("verdicts_json", sa.Text, nullable=False),
        sa.Column("failure", sa.Text, nullable=True),
        sa.Column("error_class", sa.String(128), nullable=True),
        sa.Column("escalated_from", sa.Integer, nullable=True),
        sa.Column("stop_reason", sa.String(32), nullable=True),
        sa.Column("output_sha256", sa.String(64), nullable=True),
        sa.Column("output_chars", sa.Integer, nullable=True),
        sa.Column("output_text", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_attempts_task_id_tasks"),
        sa.UniqueConstraint("task_id", "attempt_no", name="uq_attempts_task_id_attempt_no"),
    )
    op.create_index("ix_attempts_kind_started_at", "attempts", ["kind", "started_at"])
    op.create_index("ix_attempts_started_at", "attempts", ["started_at"])
    op.create_table(
        "budget_counters",
        sa.Column("scope", sa.String(255), nullable=False),
        _money("spent_pusd"),
        _money("held_pusd"),
        _money("limit_pusd", nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("scope", name="pk_budget_counters"),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("scopes_json", sa.Text, nullable=False),
        _money("amount_pusd"),
        _money("actual_pusd", nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("closed_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reservations"),
    )
    op.create_index("ix_reservations_state_created_at", "reservations", ["state", "created_at"])
    op.create_index("ix_reservations_task_id", "reservations", ["task_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _money("budget_pusd_day", nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("secret_sha256", name="uq_api_keys_secret_sha256"),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(128), nullable=True),
        sa.Column("change_json", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("policy_revision_before", sa.String(64), nullable=True),
        sa.Column("policy_revision_after", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_changes"),
    )
    op.create_index("ix_policy_changes_created_at", "policy_changes", ["created_at"])


def downgrade() -> None:
    for table in (
        "policy_changes",
        "api_keys",
        "reservations",
        "budget_counters",
        "attempts",
        "tasks",
        "sessions",
        "policy_revisions",
    ):
        op.drop_table(table)
