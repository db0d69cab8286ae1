"""Budget scopes and the worst-case cost of an attempt, used to reserve spend before it starts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from tierwise.providers.base import CompletionRequest

if TYPE_CHECKING:
    from tierwise.policy import Policy
    from tierwise.task import Task

# Per-message framing tokens a provider adds around content (role markers, separators). Generous:
# the bound below must never be smaller than what the provider will bill.
_FRAMING_TOKENS_PER_MESSAGE = 8
_FRAMING_TOKENS_FIXED = 32


def input_token_bound(request: CompletionRequest) -> int:
    """An upper bound on the input tokens a request can be billed for.

    Byte-level BPE tokenizers emit at least one byte per token, so the UTF-8 size of the text is
    an upper bound on its token count; framing adds a few tokens per message. Tool definitions
    or images in ``extra`` are bounded by their JSON size the same way.
    """
    size = sum(len(m.content.encode()) + _FRAMING_TOKENS_PER_MESSAGE for m in request.messages)
    if request.system:
        size += len(request.system.encode()) + _FRAMING_TOKENS_PER_MESSAGE
    raw = request.extra.get("raw_body_bytes") if request.extra else None
    if isinstance(raw, int):
        size = max(size, raw)
    return size + _FRAMING_TOKENS_FIXED


def budget_limits(
    policy: Policy,
    task: Task,
    now: datetime,
    extra: Mapping[str, Decimal] | None = None,
) -> dict[str, Decimal]:
    """The budget scopes a task's attempts are reserved against, with their USD limits.

    Scopes: ``task:<id>`` (the task's own budget or the policy's ``budgets.task_usd``),
    ``session:<id>`` (``budgets.session_usd``, when the task has a session), and
    ``kind-day:<kind>:<UTC date>`` (the kind's ``budget_usd_day`` or ``budgets.kind_day_usd``;
    kinds the policy does not list share ``kind-day:undeclared:<date>``).
    ``extra`` adds caller scopes, e.g. a gateway key's daily budget.
    """
    budgets = policy.model.budgets
    limits: dict[str, Decimal] = {}
    task_limit = task.budget_usd if task.budget_usd is not None else budgets.task_usd
    if task_limit is not None:
        limits[f"task:{task.id}"] = Decimal(task_limit)
    if task.session and budgets.session_usd is not None:
        limits[f"session:{task.session}"] = budgets.session_usd
    kind_limit = policy.kind(task.kind).budget_usd_day or budgets.kind_day_usd
    if kind_limit is not None:
        label = policy.kind_label(task.kind)  # invented kind names share one budget
        limits[f"kind-day:{label}:{now.date().isoformat()}"] = kind_limit
    if extra:
        limits.update(extra)
    return limits


class MemoryBudgets:
    """In-process budget accounting for a cascade without a ledger (one process only).

    Same reserve/settle/release contract as :class:`tierwise.ledger.Ledger`; a ledger is what
    makes budgets hold across processes.
    """

    def __init__(self) -> None:
        self._spent: dict[str, Decimal] = {}
        self._held: dict[int, tuple[tuple[str, ...], Decimal]] = {}
        self._next = 0

    def reserve(self, task_id: str, limits: Mapping[str, Decimal], amount_usd: Decimal) -> int:
        from tierwise.errors import BudgetExceededError

        for scope in sorted(limits):  # same order as the ledger: the first scope name reports
            limit = limits[scope]
            used = self._spent.get(scope, Decimal(0))
            if used + amount_usd > limit:
                raise BudgetExceededError(scope, limit, used, amount_usd)
        for scope in limits:
            self._spent[scope] = self._spent.get(scope, Decimal(0)) + amount_usd
        self._next += 1
        self._held[self._next] = (tuple(limits), amount_usd)
        return self._next

    def settle(self, reservation: int, actual_usd: Decimal) -> None:
        scopes, amount = self._held.pop(reservation)
        for scope in scopes:
            self._spent[scope] += actual_usd - amount

    def release(self, reservation: int) -> None:
        self.settle(reservation, Decimal(0))

    def spent(self, scope: str) -> Decimal:
        return self._spent.get(scope, Decimal(0))
