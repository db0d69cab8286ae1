"""A ledger write as data: the values of one row, built once, written now or spooled for later.

:class:`~tierwise.ledger.Ledger`'s request-path writes (a task's start, an attempt, its end, a
budget settlement) each build the values of their row here and then write them. The gateway
builds the same :class:`Row` values up front (:meth:`~tierwise.ledger.Ledger.row_of_task` and
friends) and hands them to :meth:`~tierwise.ledger.Ledger.write_rows` in one group commit; when
the database cannot be reached they go to a spool file as JSON (:mod:`tierwise.ledger.spool`)
and are written by the same method later, in *replay* mode, which is idempotent.

What a row holds is what the ledger would store — prompt and output as SHA-256 and size, text
only when the policy stores content, and then with secrets masked — so a spool file reveals no
more than the ledger itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tierwise.ledger.schema import to_pico

if TYPE_CHECKING:
    from tierwise.ledger.budgets import Reservation
    from tierwise.records import AttemptRecord, PlanRef
    from tierwise.task import Decision, Task

__all__ = ["ROW_OPS", "Row", "RowOp"]

RowOp = Literal["task", "attempt", "finish", "settle", "release", "agreement"]
#: Every kind of row, in the order a task's rows are written (a shadowed task's agreement
#: verdicts come after its end).
ROW_OPS: tuple[str, ...] = ("task", "attempt", "finish", "settle", "release", "agreement")

#: Columns holding an aware UTC datetime (encoded as ISO 8601 text in JSON).
_TIMES = frozenset({"created_at", "started_at", "recorded_at", "finished_at"})

Redact = Callable[[str | None], str | None]


@dataclass(frozen=True, slots=True)
class Row:
    """One write: which (``op``) and its column values, as :meth:`Ledger.write_rows` takes them.

    ``task_id`` names the task the row belongs to (every row belongs to one).
    """

    op: RowOp
    task_id: str
    values: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (datetimes as ISO 8601 text); :meth:`from_json` reverses it."""
        values = {
            k: (v.isoformat() if k in _TIMES and isinstance(v, datetime) else v)
            for k, v in self.values.items()
        }
        return {"op": self.op, "task_id": self.task_id, "values": values}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        """The row :meth:`to_json` wrote.

        Raises:
            ValueError: *data* is not a row (unknown op, missing fields, a bad timestamp).
        """
        op = data.get("op")
        task_id = data.get("task_id")
        raw = data.get("values")
        if op not in ROW_OPS or not isinstance(task_id, str) or not isinstance(raw, dict):
            raise ValueError(f"not a ledger row: {json.dumps(data)[:200]}")
        values = {
            k: (datetime.fromisoformat(v) if k in _TIMES and isinstance(v, str) else v)
            for k, v in raw.items()
        }
        return cls(op, task_id, values)


def sha256(text: str) -> str:
    """The hex SHA-256 of *text* (a lone surrogate from an upstream must not stop a write)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def task_values(
    task: Task,
    decision: Decision,
    *,
    policy_revision: str,
    role: str,
    store_content: bool,
    now: datetime,
    redact: Redact,
) -> dict[str, Any]:
    """The ``tasks`` row of a task that starts (outcome ``running``)."""
    rule = decision.rule_name or (
        None if decision.rule_index is None else f"#{decision.rule_index}"
    )
    if decision.step == "frontier":
        rule = decision.constraint_name or f"frontier#{decision.constraint_index}"
    return {
        "id": task.id,
        "kind": task.kind,
        "session_id": task.session,
        "role": role,
        "policy_revision": policy_revision,
        "decision_tier": decision.tier,
        "decision_tier_index": decision.tier_index,
        "decision_step": decision.step,
        "decision_rule": rule,
        "decision_floor": decision.floor,
        "decision_json": json.dumps(decision.as_dict()),
        "prompt_sha256": sha256(task.prompt),
        "prompt_chars": len(task.prompt),
        "prompt_text": redact(task.prompt) if store_content else None,
        "outcome": "running",
        "created_at": now,
        "key_id": task.key_id,
        **plan_values(task.plan),
    }


def attempt_values(
    attempt: AttemptRecord,
    *,
    store_content: bool,
    now: datetime,
    redact: Redact,
    storable: Callable[[str], str],
) -> dict[str, Any]:
    """The ``attempts`` row of one attempt."""
    output = attempt.output
    verdicts = [
        {"validator": v.validator, "ok": v.ok, "reason": redact(v.reason), "score": v.score}
        for v in attempt.verdicts
    ]
    return {
        "task_id": attempt.task_id,
        "attempt_no": attempt.attempt_no,
        "kind": attempt.kind,
        "session_id": attempt.session,
        "role": attempt.role,
        "tier": attempt.tier,
        "tier_index": attempt.tier_index,
        "model": storable(attempt.model) if isinstance(attempt.model, str) else attempt.model,
        "provider": attempt.provider,
        "outcome": attempt.outcome,
        **attempt.usage.as_dict(),
        "cost_pusd": to_pico(attempt.cost_usd),
        "latency_s": float(attempt.latency_s),
        "verdicts_json": json.dumps(verdicts),
        "failure": redact(attempt.failure),
        "error_class": attempt.error_class,
        "escalated_from": attempt.escalated_from,
        "stop_reason": attempt.stop_reason,
        "output_sha256": None if output is None else sha256(output),
        "output_chars": None if output is None else len(output),
        "output_text": redact(output) if store_content else None,
        "started_at": attempt.started_at,
        "recorded_at": now,
        "plan_id": attempt.plan_id,
        "subtask_id": attempt.subtask_id,
        "parent_id": attempt.parent_id,
        "plan_role": attempt.plan_role,
    }


def finish_values(
    task_id: str,
    *,
    outcome: str,
    final_tier: str | None,
    cost_usd: Decimal,
    latency_s: float,
    attempts: int,
    output: str | None,
    store_content: bool,
    now: datetime,
    redact: Redact,
) -> dict[str, Any]:
    """The columns a task's end fills in (``b_id`` names the task)."""
    return {
        "b_id": task_id,
        "outcome": outcome,
        "final_tier": final_tier,
        "cost_pusd": to_pico(cost_usd),
        "latency_s": float(latency_s),
        "attempts": attempts,
        "output_sha256": None if output is None else sha256(output),
        "output_chars": None if output is None else len(output),
        "output_text": redact(output) if store_content and output else None,
        "finished_at": now,
    }


def closing_values(reservation: Reservation, actual_usd: Decimal) -> dict[str, Any]:
    """What settling (or releasing) a reservation needs to know, the reservation included."""
    return {
        "id": reservation.id,
        "scopes": list(reservation.scopes),
        "amount_pusd": to_pico(reservation.amount_usd),
        "actual_pusd": to_pico(actual_usd),
    }


def plan_values(ref: PlanRef | None) -> dict[str, str | None]:
    """A task's cost-tree columns (all NULL outside a plan)."""
    if ref is None:
        return dict.fromkeys(("plan_id", "subtask_id", "parent_id", "plan_role"))
    return {
        "plan_id": ref.plan_id,
        "subtask_id": ref.subtask_id,
        "parent_id": ref.parent_id,
        "plan_role": ref.plan_role,
    }
