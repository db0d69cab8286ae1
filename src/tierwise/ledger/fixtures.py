"""Builders for ledger rows in tests and examples: tasks, decisions and attempt records.

Shipped with the package so other test suites (and scripts that run in child processes, which
cannot import test modules) can fill a ledger without a model::

    from tierwise.ledger import open_ledger
    from tierwise.ledger.fixtures import record_task

    with open_ledger(tmp_path / "ledger.db") as ledger:
        record_task(ledger, outcomes=["rejected", "accepted"], costs=["0.01", "0.1"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.pricing.usage import Usage
from tierwise.records import AttemptRecord, Outcome, Role, Verdict
from tierwise.task import Decision, Task

if TYPE_CHECKING:
    from tierwise.ledger.store import Ledger

TIERS: tuple[str, ...] = ("cheap", "mid", "strong")
POLICY_REVISION = "fixture-policy"


def make_decision(kind: str, tier_index: int = 0, tiers: Sequence[str] = TIERS) -> Decision:
    """A rule decision for *kind* starting at ``tiers[tier_index]``."""
    return Decision(
        tier=tiers[tier_index], tier_index=tier_index, step="rule", kind=kind, rule_index=0
    )


def make_attempt(
    task: Task,
    attempt_no: int,
    *,
    tier_index: int = 0,
    outcome: Outcome = "accepted",
    cost_usd: Decimal | str = "0.001",
    role: Role = "live",
    tiers: Sequence[str] = TIERS,
    started_at: datetime | None = None,
    **overrides: Any,
) -> AttemptRecord:
    """An attempt record of *task* with plausible usage; *overrides* replace any field."""
    failed = outcome in ("rejected", "error")
    record = AttemptRecord(
        task_id=task.id,
        attempt_no=attempt_no,
        kind=task.kind,
        tier=tiers[tier_index],
        tier_index=tier_index,
        model=f"{tiers[tier_index]}-model",
        provider="anthropic",
        usage=Usage(input_tokens=120, cache_read_tokens=40, output_tokens=30),
        cost_usd=Decimal(cost_usd),
        latency_s=0.25,
        outcome=outcome,
        started_at=started_at or datetime.now(UTC),
        role=role,
        verdicts=(Verdict("json", not failed, "not JSON" if failed else ""),),
        failure="json: not JSON" if failed else None,
        error_class="ServerError" if outcome == "error" else None,
        escalated_from=attempt_no - 1 if attempt_no > 0 else None,
        stop_reason="end",
        output=f"output {attempt_no}",
        session=task.session,
    )
    return replace(record, **overrides) if overrides else record


def record_task(
    ledger: Ledger,
    *,
    kind: str = "extract",
    outcomes: Sequence[Outcome] = ("accepted",),
    costs: Sequence[Decimal | str] | None = None,
    start_tier: int = 0,
    role: Role = "live",
    session: str | None = None,
    prompt: str = "Invoice 42 from ACME, total 10 EUR",
    store_content: bool = False,
    task_outcome: str | None = None,
    latency_s: float = 0.5,
    started_at: datetime | None = None,
) -> tuple[Task, list[AttemptRecord]]:
    """Write one whole task the way the cascade does: begin, one attempt per tier, finish.

    The i-th attempt runs on tier ``start_tier + i``. The task outcome defaults to
    ``accepted`` when the last attempt was accepted, else ``exhausted``.
    """
    task = Task.create(kind, prompt, session=session)
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    ledger.begin_task(
        task,
        make_decision(kind, start_tier),
        policy_revision=POLICY_REVISION,
        role=role,
        store_content=store_content,
    )
    records: list[AttemptRecord] = []
    for i, outcome in enumerate(outcomes):
        cost = costs[i] if costs is not None else "0.001"
        record = make_attempt(
            task,
            i,
            tier_index=start_tier + i,
            outcome=outcome,
            cost_usd=cost,
            role=role,
            started_at=started_at,
        )
        ledger.record_attempt(record, store_content=store_content)
        records.append(record)
    last = records[-1] if records else None
    final = task_outcome or ("accepted" if last and last.outcome == "accepted" else "exhausted")
    ledger.finish_task(
        task.id,
        outcome=final,
        final_tier=last.tier if last and final == "accepted" else None,
        cost_usd=sum((r.cost_usd for r in records), Decimal(0)),
        latency_s=latency_s,
        attempts=len(records),
        output=last.output if last and final == "accepted" else None,
        store_content=store_content,
    )
    return task, records


@dataclass(frozen=True, slots=True)
class Step:
    """One attempt of a hand-built trail (:func:`record_trail`): its tier index, outcome and
    cost, the role it was made in, and any :class:`AttemptRecord` field to override (``model``,
    ``failure``, ``error_class``, ``verdicts``, ``latency_s``)."""

    tier: int
    outcome: Outcome = "accepted"
    cost: Decimal | str = "0.001"
    role: Role = "live"
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(
        cls,
        tier: int,
        outcome: Outcome = "accepted",
        cost: Decimal | str = "0.001",
        role: Role = "live",
        **overrides: Any,
    ) -> Step:
        return cls(tier, outcome, cost, role, tuple(sorted(overrides.items())))


def record_trail(
    ledger: Ledger,
    steps: Sequence[Step],
    *,
    kind: str = "extract",
    start_tier: int = 0,
    role: Role = "live",
    task_outcome: str | None = None,
    latency_s: float = 0.5,
    session: str | None = None,
    key_id: int | None = None,
    tiers: Sequence[str] = TIERS,
) -> tuple[Task, list[AttemptRecord]]:
    """Write one task whose attempts are exactly *steps*, in order (any tier, role, outcome).

    For trails :func:`record_task` cannot express: validator calls, probes or shadow calls
    inside a live task, an alternate model after a provider error on the same tier, a
    concrete-model call (``start_tier=-1``, recorded under ``passthrough``). The task outcome
    defaults to ``accepted`` when an attempt in the task's own role was accepted, else
    ``exhausted``; ``final_tier`` is the accepted attempt's tier.
    """
    task = Task.create(kind, "x", session=session).with_(key_id=key_id)
    ledger.record_policy_revision(POLICY_REVISION, "{}", None)
    decision = (
        Decision("passthrough", -1, "passthrough", kind)
        if start_tier < 0
        else make_decision(kind, start_tier, tiers)
    )
    ledger.begin_task(
        task, decision, policy_revision=POLICY_REVISION, role=role, store_content=False
    )
    records = []
    for no, step in enumerate(steps):
        label = "passthrough" if step.tier < 0 else tiers[step.tier]
        failed = step.outcome in ("rejected", "error", "partial")
        fields: dict[str, Any] = {
            "tier": label,
            "model": f"{label}-model",
            "escalated_from": None,
            "verdicts": (Verdict("json", not failed, "not JSON" if failed else ""),)
            if step.outcome in ("accepted", "rejected") and step.role != "validator"
            else (),
        }
        fields.update(step.overrides)
        record = make_attempt(
            task,
            no,
            tier_index=step.tier,
            outcome=step.outcome,
            cost_usd=step.cost,
            role=step.role,
            tiers=tiers,
            **fields,
        )
        ledger.record_attempt(record, store_content=False)
        records.append(record)
    own = [r for r in records if r.role == role and r.outcome == "accepted"]
    final = task_outcome or ("accepted" if own else "exhausted")
    ledger.finish_task(
        task.id,
        outcome=final,
        final_tier=own[-1].tier if own and final == "accepted" else None,
        cost_usd=sum((r.cost_usd for r in records), Decimal(0)),
        latency_s=latency_s,
        attempts=len(records),
        output=None,
        store_content=False,
    )
    return task, records
