"""The request-path writes, compiled once per engine's dialect (see :mod:`.prepared`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tierwise.ledger.prepared import Prepared, prepare
from tierwise.ledger.schema import attempts, sessions, tasks
from tierwise.ledger.sql import upsert_statement

#: The cost tree's columns, on tasks and attempts alike (NULL outside a plan).
_PLAN_COLUMNS = ("plan_id", "subtask_id", "parent_id", "plan_role")
_TASK_COLUMNS = (
    "id",
    "kind",
    "session_id",
    "role",
    "policy_revision",
    "decision_tier",
    "decision_tier_index",
    "decision_step",
    "decision_rule",
    "decision_floor",
    "decision_json",
    "prompt_sha256",
    "prompt_chars",
    "prompt_text",
    "outcome",
    "created_at",
    "key_id",
    *_PLAN_COLUMNS,
)
_ATTEMPT_KEYS = ("task_id", "attempt_no")
_ATTEMPT_COLUMNS = (
    *_ATTEMPT_KEYS,
    "kind",
    "session_id",
    "role",
    "tier",
    "tier_index",
    "model",
    "provider",
    "outcome",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "cost_pusd",
    "latency_s",
    "verdicts_json",
    "failure",
    "error_class",
    "escalated_from",
    "stop_reason",
    "output_sha256",
    "output_chars",
    "output_text",
    "started_at",
    "recorded_at",
    *_PLAN_COLUMNS,
)
_FINISH_COLUMNS = (
    "outcome",
    "final_tier",
    "cost_pusd",
    "latency_s",
    "attempts",
    "output_sha256",
    "output_chars",
    "output_text",
    "finished_at",
)


def core_statements(dialect_name: str) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """The request-path writes as Core statements with the columns they bind, by name.

    :class:`WriteStatements` compiles these; the equivalence tests also run them through
    ``Connection.execute`` and compare what the driver receives.
    """
    return {
        "insert_task": (tasks.insert(), _TASK_COLUMNS),
        "touch_session": (
            upsert_statement(dialect_name, sessions, ("id",), ("last_seen_at",)),
            ("id", "created_at", "last_seen_at"),
        ),
        "upsert_attempt": (
            upsert_statement(
                dialect_name,
                attempts,
                _ATTEMPT_KEYS,
                _ATTEMPT_COLUMNS[len(_ATTEMPT_KEYS) :],
                "id",
            ),
            _ATTEMPT_COLUMNS,
        ),
        "finish_task": (
            tasks.update().where(tasks.c.id == sa.bindparam("b_id")),
            _FINISH_COLUMNS,
        ),
    }


@dataclass(frozen=True, slots=True)
class WriteStatements:
    """The request-path writes, compiled once for one engine's dialect."""

    insert_task: Prepared
    touch_session: Prepared
    upsert_attempt: Prepared
    finish_task: Prepared

    @classmethod
    def build(cls, dialect: sa.Dialect) -> WriteStatements:
        built = {
            name: prepare(stmt, dialect, keys)
            for name, (stmt, keys) in core_statements(dialect.name).items()
        }
        return cls(**built)
