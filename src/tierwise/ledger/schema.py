"""The ledger's tables, as one SQLAlchemy Core ``MetaData``, and the column types they share.

Money is stored as ``BigInteger`` **pico-USD** (1 USD = 10**12). Integers sum exactly in SQL on
every backend (SQLite has no exact decimal type: its NUMERIC affinity turns values into floats),
so ``SUM(cost_pusd)`` is the exact total. Costs computed from per-million-token prices with up to
six decimal places are exact at this resolution; anything finer is rounded half-even to the
pico-dollar. A 64-bit column holds up to about 9.2 million USD per value.

Times are stored as naive UTC and come back as aware UTC datetimes. Nothing here is
SQLite-specific: the same metadata targets Postgres.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

PICO = Decimal(10) ** 12

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def to_pico(amount: Decimal | int | str) -> int:
    """USD as a Decimal (or anything Decimal accepts) to integer pico-USD, rounded half-even."""
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"amount must be a finite number of USD, got {amount!r}")
    return int((value * PICO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_pico(pico: int | None) -> Decimal:
    """Integer pico-USD to USD as an exact Decimal (``None`` reads as zero)."""
    if pico is None:
        return Decimal(0)
    value = Decimal(int(pico)).scaleb(-12).normalize()
    # normalize() turns 10 into 1E+1; keep whole amounts whole
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC, read back as an aware UTC datetime."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"ledger timestamps must be timezone-aware, got {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, one step straight to the text SQLAlchemy stores (a hot path).

        ``YYYY-MM-DD HH:MM:SS.ffffff``, exactly SQLAlchemy's SQLite ``DATETIME`` storage format,
        so rows compare and sort with those written by any other path. Other dialects keep the
        default: :meth:`process_bind_param`, then the driver's own datetime handling.
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_utc_text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a raw SQLite value read without type processing
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"ledger timestamps must be timezone-aware, got {value!r}")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _pk(name: str = "id") -> sa.Column[Any]:
    return sa.Column(name, sa.Integer, primary_key=True, autoincrement=True)


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def _money(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(
        name, sa.BigInteger, nullable=nullable, server_default=None if nullable else "0"
    )


def _plan_columns() -> list[sa.Column[Any]]:
    """Where a task or attempt sits in a plan's cost tree (``tierwise.records.PlanRef``)."""
    return [
        sa.Column("plan_id", sa.String(64), nullable=True),
        sa.Column("subtask_id", sa.String(64), nullable=True),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("plan_role", sa.String(16), nullable=True),  # planner|executor|reviewer|judge
    ]


policy_revisions = sa.Table(
    "policy_revisions",
    metadata,
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("policy_json", sa.Text, nullable=True),
    sa.Column("source", sa.Text, nullable=True),
    _ts("created_at"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    _ts("created_at"),
    _ts("last_seen_at"),
)

#: Partial indexes on ``plan_id`` (migration 0009): most tasks belong to no plan, and indexing
#: their NULLs cost every gateway request two more B-tree inserts (about 15% of its ledger
#: page writes). Lookups by a plan (``plan_id = ?``, a join on it) imply NOT NULL and use them.
_ONLY_IN_A_PLAN: dict[str, Any] = {
    "sqlite_where": sa.text("plan_id IS NOT NULL"),
    "postgresql_where": sa.text("plan_id IS NOT NULL"),
}

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("session_id", sa.String(255), sa.ForeignKey("sessions.id"), nullable=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("policy_revision", sa.String(64), sa.ForeignKey("policy_revisions.revision")),
    # the routing decision
    sa.Column("decision_tier", sa.String(64), nullable=False),
    sa.Column("decision_tier_index", sa.Integer, nullable=False),
    sa.Column("decision_step", sa.String(16), nullable=False),
    sa.Column("decision_rule", sa.String(255), nullable=True),
    sa.Column("decision_floor", sa.String(64), nullable=True),
    sa.Column("decision_json", sa.Text, nullable=False),
    # the prompt: hash and size always, text only when the policy says store_content
    sa.Column("prompt_sha256", sa.String(64), nullable=False),
    sa.Column("prompt_chars", sa.Integer, nullable=False),
    sa.Column("prompt_text", sa.Text, nullable=True),
    # the outcome, filled by finish_task
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("final_tier", sa.String(64), nullable=True),
    _money("cost_pusd"),
    sa.Column("latency_s", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_sha256", sa.String(64), nullable=True),
    sa.Column("output_chars", sa.Integer, nullable=True),
    sa.Column("output_text", sa.Text, nullable=True),
    _ts("created_at"),
    _ts("finished_at", nullable=True),
    # the gateway key that created the task (its id; never the secret); empty without one
    sa.Column("key_id", sa.Integer, nullable=True),
    # the plan-execute-review cost tree (migration 0005); NULL outside a plan
    *_plan_columns(),
    sa.Index(None, "kind", "created_at"),
    sa.Index(None, "created_at"),
    sa.Index(None, "session_id"),
    sa.Index("ix_tasks_key_id_created_at", "key_id", "created_at"),
    sa.Index(None, "plan_id", **_ONLY_IN_A_PLAN),
)

#: An attempt's usage columns, one per billing bucket (as in :class:`tierwise.records.Usage`).
TOKEN_COLUMNS: tuple[str, ...] = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)

attempts = sa.Table(
    "attempts",
    metadata,
    _pk(),
    sa.Column("task_id", sa.String(64), sa.ForeignKey("tasks.id"), nullable=False),
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
    _ts("started_at"),
    _ts("recorded_at"),
    # the plan-execute-review cost tree (migration 0005); NULL outside a plan
    *_plan_columns(),
    sa.UniqueConstraint("task_id", "attempt_no"),
    sa.Index(None, "kind", "started_at"),
    sa.Index(None, "started_at"),
    sa.Index(None, "plan_id", **_ONLY_IN_A_PLAN),
)

budget_counters = sa.Table(
    "budget_counters",
    metadata,
    sa.Column("scope", sa.String(255), primary_key=True),
    _money("spent_pusd"),
    _money("held_pusd"),
    _money("limit_pusd", nullable=True),  # the last limit a reservation was checked against
    _ts("updated_at"),
)

reservations = sa.Table(
    "reservations",
    metadata,
    _pk(),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("scopes_json", sa.Text, nullable=False),
    _money("amount_pusd"),
    _money("actual_pusd", nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # held | settled | released
    _ts("created_at"),
    _ts("closed_at", nullable=True),
    sa.Index(None, "state", "created_at"),
    sa.Index(None, "task_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _pk(),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    _money("budget_pusd_day", nullable=True),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
    sa.Index(None, "prefix"),
)

#: A signed-in dashboard session (migration 0008): the browser holds a random secret in an
#: HttpOnly cookie; only its SHA-256 is kept here, with the admin key that signed in (its id,
#: never the key). A session ends at ``expires_at``, when signed out (the row is deleted) or when
#: its key is revoked. Kept in the ledger so every gateway worker and replica accepts it.
dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
    _ts("created_at"),
    _ts("expires_at"),
    sa.Index(None, "expires_at"),
)

policy_changes = sa.Table(
    "policy_changes",
    metadata,
    _pk(),
    _ts("created_at"),
    sa.Column("kind", sa.String(128), nullable=True),
    sa.Column("change_json", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # proposed | applied | rejected | reverted
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("policy_revision_before", sa.String(64), nullable=True),
    sa.Column("policy_revision_after", sa.String(64), nullable=True),
    _ts("decided_at", nullable=True),
    sa.Index(None, "created_at"),
)


#: One plan-execute-review run: its goal (hash and size; text only with ``store_content``), who
#: planned and reviewed, and how it ended. Its cost is the sum of the attempts carrying its id.
plans = sa.Table(
    "plans",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("goal_sha256", sa.String(64), nullable=False),
    sa.Column("goal_chars", sa.Integer, nullable=False),
    sa.Column("goal_text", sa.Text, nullable=True),
    sa.Column("prompt_version", sa.String(32), nullable=False),
    sa.Column("policy_revision", sa.String(64), nullable=True),
    sa.Column("planner_tier", sa.String(64), nullable=False),
    sa.Column("planner_model", sa.String(255), nullable=True),
    sa.Column("planner_provider", sa.String(64), nullable=True),
    sa.Column("reviewer_tier", sa.String(64), nullable=True),
    # running | accepted | failed | refused | budget | error
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("failure", sa.Text, nullable=True),
    sa.Column("subtasks", sa.Integer, nullable=False, server_default="0"),
    _money("cost_pusd"),
    _ts("created_at"),
    _ts("finished_at", nullable=True),
    sa.Index(None, "created_at"),
)

#: One subtask of a plan: what the planner assigned (and why), what it came to. The rows planner
#: calibration counts: accepted as assigned, sent up by validators or the reviewer, flagged
#: wrong later, or passed on a cheaper tier when probed.
plan_subtasks = sa.Table(
    "plan_subtasks",
    metadata,
    sa.Column("plan_id", sa.String(64), primary_key=True),
    sa.Column("subtask_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("depends_on", sa.Text, nullable=False),  # JSON list of subtask ids
    sa.Column("planned_tier", sa.String(64), nullable=False),  # as the planner wrote it
    sa.Column("assigned_tier", sa.String(64), nullable=False),  # raised to floors and pins
    sa.Column("assigned_tier_index", sa.Integer, nullable=False),
    sa.Column("raised", sa.Text, nullable=True),  # why it was raised, when it was
    sa.Column("justification", sa.Text, nullable=True),  # only with store_content
    sa.Column("prompt_sha256", sa.String(64), nullable=False),
    sa.Column("prompt_chars", sa.Integer, nullable=False),
    sa.Column("prompt_text", sa.Text, nullable=True),
    # pending | accepted | rejected | failed | budget | skipped
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("final_tier", sa.String(64), nullable=True),
    sa.Column("final_tier_index", sa.Integer, nullable=True),
    sa.Column("validator_climbs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reviewer_climbs", sa.Integer, nullable=False, server_default="0"),
    # accepted | sent_up | rejected | skipped | off (no review asked)
    sa.Column("review", sa.String(16), nullable=True),
    sa.Column("review_note", sa.Text, nullable=True),
    _ts("flagged_at", nullable=True),
    sa.Column("flag_reason", sa.Text, nullable=True),
    _ts("finished_at", nullable=True),
    sa.Index(None, "assigned_tier"),
)


#: Flags people put on outputs after the fact (``tierwise feedback``, ``POST
#: /v1/tierwise/feedback``). One row per (task, author): a later flag by the same author replaces
#: the earlier one, so the latest flag per task and author stands. ``key_id`` is the gateway key
#: that flagged it (its id, never the secret); empty from the CLI, the library or a keyless
#: gateway. ``flag`` is ``wrong``, ``needed_frontier`` or ``cheaper_would_do``.
feedback = sa.Table(
    "feedback",
    metadata,
    _pk(),
    sa.Column("task_id", sa.String(64), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("flag", sa.String(32), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("key_id", sa.Integer, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    sa.UniqueConstraint("task_id", "author"),
)


def _answer_columns(side: str) -> list[sa.Column[Any]]:
    """One side of a compared pair: which tier, model and attempt answered, and its verdict."""
    return [
        sa.Column(f"{side}_tier", sa.String(64), nullable=False),
        sa.Column(f"{side}_tier_index", sa.Integer, nullable=False),
        sa.Column(f"{side}_model", sa.String(255), nullable=False),
        sa.Column(f"{side}_attempt_no", sa.Integer, nullable=False),
        sa.Column(f"{side}_role", sa.String(16), nullable=False),  # live | shadow
        sa.Column(f"{side}_passed", sa.Boolean, nullable=False),
    ]


#: Shadow mode's verdicts (migration 0006): for a shadowed task, every pair of tiers that
#: answered it, compared when the shadow answer arrived by the kind's answer format — only the
#: verdict, never the answers, so it exists under ``store_content = false``. ``low`` is the
#: cheaper tier. ``agree`` is NULL when neither answer had a value of the format. Rows hold no
#: content and are kept when their task is pruned, so agreement rates outlive pruning.
shadow_agreements = sa.Table(
    "shadow_agreements",
    metadata,
    _pk(),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    *_answer_columns("low"),
    *_answer_columns("high"),
    sa.Column("agree", sa.Boolean, nullable=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("similarity", sa.Float, nullable=True),
    _ts("created_at"),
    sa.Index(None, "kind", "created_at"),
    sa.Index(None, "task_id"),
    # a spooled row replayed after a crash is written once
    sa.UniqueConstraint("task_id", "low_attempt_no", "high_attempt_no"),
)


def _count(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


#: Exact daily totals of pruned rows (see :mod:`tierwise.ledger.rollups`). Rows are additive:
#: a (day, kind, tier, role) group may have several rows until ``prune`` compacts the day, and
#: readers always SUM. Task columns (escalation included) count tasks by the tier the router
#: chose for them; attempt columns count attempts by the tier they ran on. Every task and
#: attempt is counted on the UTC day its task was created.
daily_rollups = sa.Table(
    "daily_rollups",
    metadata,
    _pk(),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("tier_index", sa.Integer, nullable=False),
    # tasks, by the router's tier
    _count("tasks"),
    _count("tasks_accepted"),
    _count("tasks_exhausted"),
    _count("tasks_budget"),
    _count("tasks_error"),
    _count("tasks_running"),
    _count("tasks_escalated"),
    _money("task_cost_pusd"),
    _count("tasks_timed"),
    sa.Column("task_latency_s_sum", sa.Float, nullable=False, server_default="0"),
    # attempts, by the tier they ran on (validator calls included, as in stats)
    _count("attempts"),
    _count("accepted"),
    _count("rejected"),
    _count("errors"),
    _money("cost_pusd"),
    _money("wasted_pusd"),
    _count("validator_attempts"),
    _money("validator_cost_pusd"),
    _count("input_tokens"),
    _count("cache_write_5m_tokens"),
    _count("cache_write_1h_tokens"),
    _count("cache_read_tokens"),
    _count("output_tokens"),
    # escalation (tierwise.ledger.escalation): resolved tasks that started on this tier, and of
    # those, the ones that escalated
    _count("tier_tasks"),
    _count("tier_escalated"),
    sa.Index(None, "day", "kind"),
)


# -- the kept summary the weekly report reads (tierwise.ledger.summary) ----------------------------
#
# One UTC hour at a time, of the tasks *created* in it that had finished when it was summarised:
# exact integer sums (pico-USD money) per group, so that a week's report adds up a few thousand
# rows instead of classifying a million attempts. Rows are additive (readers SUM). An hour is
# summarised once it has ended; ``report_hours`` says which are, how many tasks they held then
# (a later count that differs — rows replayed from a gateway's spool — makes the hour stale),
# which of them were still running (computed from the rows at every read) and the latencies the
# percentiles need, sorted, as little-endian float64 arrays.

#: The summed columns of ``report_facts``, in the order :mod:`tierwise.ledger.summary` keeps them.
REPORT_FACT_SUMS: tuple[str, ...] = (
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
    # a task's own work, for estimates: the input buckets of its first own attempt and the
    # output of its accepted one (else of that first attempt)
    "work_input_tokens",
    "work_cache_write_5m_tokens",
    "work_cache_write_1h_tokens",
    "work_cache_read_tokens",
    "work_output_tokens",
)
#: The summed columns of ``report_tiers``.
REPORT_TIER_SUMS: tuple[str, ...] = (
    "calls",
    "accepted",
    "rejected",
    "errors",
    "cost_pusd",
    "wasted_pusd",
    *TOKEN_COLUMNS,
)

report_hours = sa.Table(
    "report_hours",
    metadata,
    sa.Column("hour", UTCDateTime(), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    _count("tasks"),
    sa.Column("pending_json", sa.Text, nullable=False),
    _count("direct_n"),
    sa.Column("direct_latency", sa.LargeBinary, nullable=False),
    _count("escalated_n"),
    sa.Column("escalated_latency", sa.LargeBinary, nullable=False),
    _ts("summarised_at"),
)

#: Tasks per (hour, kind, task role, starting tier), classified by
#: :func:`tierwise.ledger.escalation.task_facts`.
report_facts = sa.Table(
    "report_facts",
    metadata,
    _pk(),
    _ts("hour"),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("start_tier", sa.String(64), nullable=False),
    sa.Column("start_index", sa.Integer, nullable=False),
    *(_count(name) for name in REPORT_FACT_SUMS),
    sa.Index(None, "hour"),
)

#: Attempts per (hour, kind, task role, attempt role, the tier they ran on).
report_tiers = sa.Table(
    "report_tiers",
    metadata,
    _pk(),
    _ts("hour"),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("task_role", sa.String(16), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("tier_index", sa.Integer, nullable=False),
    *(_count(name) for name in REPORT_TIER_SUMS),
    sa.Index(None, "hour"),
)

#: Tasks and their cost per (hour, session), replayed tasks left out.
report_sessions = sa.Table(
    "report_sessions",
    metadata,
    _pk(),
    _ts("hour"),
    sa.Column("session_id", sa.String(255), nullable=False),
    _count("tasks"),
    _count("cost_pusd"),
    sa.Index(None, "hour"),
)

#: Tasks and their cost per (hour, gateway key id; empty without a key), replayed tasks left out.
report_keys = sa.Table(
    "report_keys",
    metadata,
    _pk(),
    _ts("hour"),
    sa.Column("key_id", sa.Integer, nullable=True),
    _count("tasks"),
    _count("cost_pusd"),
    sa.Index(None, "hour"),
)
