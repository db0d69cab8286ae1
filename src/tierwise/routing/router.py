"""The rules router: task in, :class:`~tierwise.task.Decision` out. Pure, deterministic, no I/O.

Order of a decision:

1. **Frontier.** Every must-stay-frontier constraint the task meets pins a minimum tier; the
   highest pin holds (the first constraint among equals names it). Nothing below can lower it.
2. **Rules.** The first rule whose conditions all hold gives the tier.
3. **Floor.** The kind's floor (from the file, or learned) raises the tier; it never lowers it.
4. **Doubt.** When no rule matched, the kind's doubt direction gives the tier: ``cheap`` the
   bottom tier, ``up`` one above the kind's floor (or above the bottom tier), a tier name that tier.
   ``judge`` routes as the kind's ``judge_fallback``; the cascade then asks the layer-2 judge (a
   model call, so never here) and :meth:`Router.judged` binds its pick by floors and pins.

A condition on an attribute the task does not carry (``None``) does not match; a list means any
of its values; a range is inclusive.

The policy is compiled once into tuples of small predicates, indexed by task kind, so a decision
only looks at the rules and constraints that can apply to the task's kind. Rules naming kinds are
bucketed per kind; rules naming none are kept once and shared by every kind (a decision takes
the first match of either list, whichever comes first in the file), so compiling a policy with
thousands of kinds and rules stays linear in its size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tierwise.policy import Condition, Policy
from tierwise.policy.schema import Range
from tierwise.task import Decision, Task

Check = Callable[[Task], bool]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule or a frontier constraint, ready to test."""

    index: int
    name: str | None
    tier: int
    kinds: frozenset[str] | None  # None: any kind
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class _KindPlan:
    """Everything a decision needs for one kind, precomputed.

    ``rules`` and ``constraints`` are those that name this kind; the ones that name no kind
    are the router's shared ``_any_rules`` and ``_any_constraints``.
    """

    kind_known: bool
    constraints: tuple[_Compiled, ...]
    rules: tuple[_Compiled, ...]
    floor: int  # -1: none
    floor_name: str | None
    floor_source: str | None
    doubt: str
    doubt_tier: int


class Router:
    """Decide the tier of a task from a policy (and optional learned floors).

    Args:
        policy: the routing policy.
        floors: learned floors, kind → tier; they replace the file's floors for those kinds
            (the decision reports their source as ``learned``).
    """

    __slots__ = (
        "_any_constraints",
        "_any_rules",
        "_default_plan",
        "_ladder",
        "_plans",
        "policy",
    )

    def __init__(self, policy: Policy, floors: Mapping[str, str] | None = None) -> None:
        self.policy = policy.with_floors(floors) if floors else policy
        self._ladder = self.policy.ladder
        constraints = tuple(
            _compile(c.index, c.name, self.policy.tier_index(c.tier), c.when)
            for c in self.policy.frontier_constraints
        )
        rules = tuple(
            _compile(i, r.name, self.policy.tier_index(r.tier), r.when)
            for i, r in enumerate(self.policy.model.rules)
        )
        self._any_constraints = tuple(c for c in constraints if c.kinds is None)
        self._any_rules = tuple(r for r in rules if r.kinds is None)
        by_kind_constraints = _by_kind(constraints)
        by_kind_rules = _by_kind(rules)
        named = set(by_kind_constraints) | set(by_kind_rules)
        named |= set(self.policy.model.kinds)  # listed kinds, and kinds with learned floors
        self._plans = {
            k: self._plan(k, by_kind_constraints.get(k, ()), by_kind_rules.get(k, ()))
            for k in named
        }
        self._default_plan = self._plan("\0unlisted", (), ())

    def _plan(
        self, kind: str, constraints: tuple[_Compiled, ...], rules: tuple[_Compiled, ...]
    ) -> _KindPlan:
        config = self.policy.kind(kind)
        floor = self.policy.tier_index(config.floor) if config.floor is not None else -1
        doubt_tier = self.policy.tier_index(
            self.policy.doubt_tier(config.doubt, config.floor, config.judge_fallback)
        )
        return _KindPlan(
            kind_known=config.known,
            constraints=constraints,
            rules=rules,
            floor=floor,
            floor_name=config.floor,
            floor_source=config.floor_source,
            doubt=config.doubt,
            doubt_tier=doubt_tier,
        )

    # -- decisions ---------------------------------------------------------------------------

    def route(self, task: Task) -> Decision:
        """Decide where *task* goes, with the structured reason."""
        plan = self._plans.get(task.kind) or self._default_plan
        pin = self._pin(plan, task)
        rule = _first(plan.rules, task, None)
        any_rule = _first(self._any_rules, task, rule.index if rule is not None else None)
        if any_rule is not None:  # it comes before the kind's own first match
            rule = any_rule

        if rule is not None:
            base, step, doubt = rule.tier, "rule", None
        else:
            base, step, doubt = plan.doubt_tier, "doubt", plan.doubt
        floor: str | None = None
        floor_source: str | None = None
        if plan.floor > base:
            base = plan.floor
            floor, floor_source = plan.floor_name, plan.floor_source
        if pin is not None and pin.tier >= base:
            base, step = pin.tier, "frontier"
            floor = floor_source = None

        return Decision(
            tier=self._ladder[base],
            tier_index=base,
            step=step,  # type: ignore[arg-type]
            kind=task.kind,
            rule_index=rule.index if rule is not None else None,
            rule_name=rule.name if rule is not None else None,
            constraint_index=pin.index if pin is not None else None,
            constraint_name=pin.name if pin is not None else None,
            floor=floor,
            floor_source=floor_source,
            doubt=doubt,
            kind_known=plan.kind_known,
        )

    def start_at(self, task: Task, tier: str) -> Decision:
        """Start *task* at an explicit *tier* — but never below a frontier pin.

        The step is ``start``, or ``frontier`` when a must-stay-frontier constraint raised the
        tier. Floors do not apply (an explicit start is how probes test a lower tier).

        Raises:
            UnknownTierError: *tier* is not on the ladder.
        """
        plan = self._plans.get(task.kind) or self._default_plan
        index = self.policy.tier_index(tier)
        pin = self._pin(plan, task)
        raised = pin is not None and pin.tier > index
        if raised and pin is not None:
            index = pin.tier
        return Decision(
            tier=self._ladder[index],
            tier_index=index,
            step="frontier" if raised else "start",
            kind=task.kind,
            constraint_index=pin.index if pin is not None else None,
            constraint_name=pin.name if pin is not None else None,
            kind_known=plan.kind_known,
        )

    def judged(self, task: Task, tier: str, note: str) -> Decision:
        """The decision for a tier the layer-2 judge picked for *task* (no rule matched).

        Bound as any doubt decision is: the kind's floor raises the pick and a frontier pin at
        or above it takes over (the decision then says ``frontier``); nothing lowers either.
        The step is ``judge`` and ``judge`` holds *note* (the judge's reason).

        Raises:
            UnknownTierError: *tier* is not on the ladder.
        """
        return self._bounded(task, tier, "judge", note)

    def assigned(self, task: Task, tier: str) -> Decision:
        """The decision for a tier a plan's planner assigned to *task*: raised, like a judge's
        pick, to the kind's floor and to every frontier pin (step ``start`` when neither did).

        Raises:
            UnknownTierError: *tier* is not on the ladder.
        """
        return self._bounded(task, tier, "start", None)

    def _bounded(self, task: Task, tier: str, step: str, note: str | None) -> Decision:
        plan = self._plans.get(task.kind) or self._default_plan
        base = self.policy.tier_index(tier)
        pin = self._pin(plan, task)
        floor: str | None = None
        floor_source: str | None = None
        if plan.floor > base:
            base = plan.floor
            floor, floor_source = plan.floor_name, plan.floor_source
        if pin is not None and pin.tier >= base:
            base, step = pin.tier, "frontier"
            floor = floor_source = None
        return Decision(
            tier=self._ladder[base],
            tier_index=base,
            step=step,  # type: ignore[arg-type]
            kind=task.kind,
            constraint_index=pin.index if pin is not None else None,
            constraint_name=pin.name if pin is not None else None,
            floor=floor,
            floor_source=floor_source,
            doubt=plan.doubt if step == "judge" else None,
            kind_known=plan.kind_known,
            judge=note,
        )

    def _pin(self, plan: _KindPlan, task: Task) -> _Compiled | None:
        """The matching constraint with the highest pin (the first one among equals)."""
        own = _pin(plan.constraints, task)
        shared = _pin(self._any_constraints, task)
        if own is None or shared is None:
            return own or shared
        if own.tier != shared.tier:
            return own if own.tier > shared.tier else shared
        return own if own.index < shared.index else shared


def _by_kind(compiled: tuple[_Compiled, ...]) -> dict[str, tuple[_Compiled, ...]]:
    """The rules (or constraints) naming each kind, in file order."""
    out: dict[str, list[_Compiled]] = {}
    for c in compiled:
        for kind in c.kinds or ():
            out.setdefault(kind, []).append(c)
    return {k: tuple(v) for k, v in out.items()}


def _first(candidates: tuple[_Compiled, ...], task: Task, before: int | None) -> _Compiled | None:
    """The first candidate whose checks all hold, among those with an index below *before*."""
    for candidate in candidates:
        if before is not None and candidate.index >= before:
            return None
        for check in candidate.checks:
            if not check(task):
                break
        else:
            return candidate
    return None


def _pin(constraints: tuple[_Compiled, ...], task: Task) -> _Compiled | None:
    """The matching constraint with the highest pin (the first one among equals)."""
    best: _Compiled | None = None
    for c in constraints:
        if best is not None and c.tier <= best.tier:
            continue
        for check in c.checks:
            if not check(task):
                break
        else:
            best = c
    return best


# -- compiling conditions -------------------------------------------------------------------------


def _compile(index: int, name: str | None, tier: int, when: Condition) -> _Compiled:
    kinds: frozenset[str] | None = None
    checks: list[Check] = []
    for attr, value in when.fields_set().items():
        if attr == "kind":
            kinds = frozenset([value] if isinstance(value, str) else value)
            continue  # kinds are matched by indexing the plans, not per decision
        checks.append(_check(attr, value))
    return _Compiled(index, name, tier, kinds, tuple(checks))


def _check(attr: str, value: object) -> Check:
    """A predicate for one condition; ``None`` (attribute not carried) never matches."""
    if isinstance(value, bool):
        flag = value

        def is_flag(task: Task) -> bool:
            v = getattr(task, attr)
            return v is not None and bool(v) is flag

        return is_flag
    if isinstance(value, str | list):
        allowed = frozenset([value] if isinstance(value, str) else value)

        def one_of(task: Task) -> bool:
            return getattr(task, attr) in allowed

        return one_of
    if isinstance(value, int):
        exact = value

        def equals(task: Task) -> bool:
            v = getattr(task, attr)
            return v is not None and v == exact

        return equals
    assert isinstance(value, Range)
    lo, hi = value.min, value.max
    if lo is None:
        top = hi

        def at_most(task: Task) -> bool:
            v = getattr(task, attr)
            return v is not None and v <= top

        return at_most
    if hi is None:
        bottom = lo

        def at_least(task: Task) -> bool:
            v = getattr(task, attr)
            return v is not None and v >= bottom

        return at_least
    low, high = lo, hi

    def between(task: Task) -> bool:
        v = getattr(task, attr)
        return v is not None and low <= v <= high

    return between
