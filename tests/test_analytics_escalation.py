"""The one definition of escalation, with each exclusion, on hand-built ledgers (both backends).

Every trail states by hand what it must count as; the SQL (:func:`task_facts`), the Python
reference (:func:`classify`) and the analytics built on them are held to those statements, and
to each other on generated trails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.analytics import AttemptFacts, Settings, analyze, classify, task_facts
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_trail
from tierwise.ledger.schema import attempts, tasks


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url) as book:
        yield book


@dataclass(frozen=True)
class Case:
    """A trail and what the definition must make of it."""

    name: str
    steps: tuple[Step, ...]
    counted: bool
    resolved: bool
    escalated: bool
    first_try: bool
    fallbacks: int = 0
    reason: str | None = None
    start: int = 0
    role: str = "live"
    outcome: str | None = None
    kind: str = "extract"


CASES = (
    Case("direct", (Step.of(0),), True, True, False, True),
    Case("climbed", (Step.of(0, "rejected"), Step.of(1)), True, True, True, False, reason="json"),
    Case(
        "failed on every tier",
        (Step.of(0, "rejected"), Step.of(1, "rejected"), Step.of(2, "rejected")),
        True,
        True,
        True,
        False,
        reason="json",
    ),
    Case(
        "errors on every tier",
        (Step.of(0, "error"), Step.of(1, "error"), Step.of(2, "error")),
        True,
        True,
        True,
        False,
        reason="ServerError",
    ),
    Case(
        "a validator's own call on a higher tier",
        (Step.of(0), Step.of(2, role="validator")),
        True,
        True,
        False,
        True,
    ),
    Case(
        "alternate-model fallback answers on the same tier",
        (Step.of(0, "error", model="haiku"), Step.of(0, model="haiku-alt")),
        True,
        True,
        False,
        False,
        fallbacks=1,
    ),
    Case(
        "fallback, then a climb: the alternate's failure is the reason",
        (
            Step.of(0, "error", model="haiku"),
            Step.of(0, "rejected", model="haiku-alt"),
            Step.of(1),
        ),
        True,
        True,
        True,
        False,
        fallbacks=1,
        reason="json",
    ),
    Case(
        "a failed probe below the routed tier",
        (Step.of(0, "rejected", role="probe"), Step.of(1)),
        True,
        True,
        False,
        True,
        start=1,
    ),
    Case(
        "a probe that passed",
        (Step.of(0, role="probe"),),
        True,
        True,
        False,
        True,
        start=1,
        outcome="accepted",
    ),
    Case(
        "a shadow call beside the live one",
        (Step.of(0), Step.of(2, "rejected", role="shadow")),
        True,
        True,
        False,
        True,
    ),
    Case(
        "a probe task",
        (Step.of(0, "rejected", role="probe"), Step.of(1, role="probe")),
        False,
        True,
        True,
        False,
        role="probe",
    ),
    Case(
        "a shadow task",
        (Step.of(2, "rejected", role="shadow"),),
        False,
        True,
        True,
        False,
        start=2,
        role="shadow",
    ),
    Case(
        "a replayed task",
        (Step.of(0, "rejected", role="replay"), Step.of(1, role="replay")),
        False,
        True,
        True,
        False,
        role="replay",
    ),
    Case("a concrete-model call", (Step.of(-1, "error"),), False, True, False, False, start=-1),
    Case(
        "stopped by a budget after a failure",
        (Step.of(0, "rejected"),),
        True,
        False,
        False,
        False,
        outcome="budget",
    ),
    Case("a broken stream", (Step.of(0, "partial"),), True, False, False, False, outcome="error"),
    Case("still running", (Step.of(0, "rejected"),), True, False, False, False, outcome="running"),
    Case(
        "no validator judges it",
        (Step.of(0, verdicts=()),),
        True,
        True,
        False,
        True,
        kind="chat",
    ),
)


def _write(book: Ledger, case: Case) -> str:
    task, _ = record_trail(
        book,
        case.steps,
        kind=case.kind,
        start_tier=case.start,
        role=case.role,  # type: ignore[arg-type]
        task_outcome=case.outcome,
    )
    return task.id


def _facts(book: Ledger) -> dict[str, dict[str, Any]]:
    with book.reading() as conn:
        rows = conn.execute(sa.select(task_facts())).mappings().all()
    return {r["task_id"]: dict(r) for r in rows}


def test_each_trail_counts_as_stated_in_sql_and_in_python(ledger: Ledger) -> None:
    ids = {case.name: _write(ledger, case) for case in CASES}
    facts = _facts(ledger)
    for case in CASES:
        row = facts[ids[case.name]]
        got = (row["counted"], row["resolved"], row["escalated"], row["first_try"])
        want = (int(case.counted), int(case.resolved), int(case.escalated), int(case.first_try))
        assert got == want, case.name
        assert row["fallbacks"] == case.fallbacks, case.name
        python = classify(
            role=case.role,
            start_index=case.start,
            outcome=row["outcome"],
            attempts=[AttemptFacts(s.role, s.tier, s.outcome) for s in case.steps],
        )
        assert (python.counted, python.resolved, python.escalated, python.first_try) == tuple(
            map(bool, want)
        ), case.name
        assert python.fallbacks == case.fallbacks, case.name


def test_the_analytics_count_only_what_the_definition_counts(ledger: Ledger) -> None:
    for case in CASES:
        _write(ledger, case)
    report = analyze(ledger, Settings(min_sample=1))
    counted = [c for c in CASES if c.counted]
    resolved = [c for c in counted if c.resolved]
    escalated = [c for c in resolved if c.escalated]
    assert report.fleet.tasks == len(counted) == 14
    assert report.fleet.resolved == len(resolved) == 11
    assert report.fleet.escalated == len(escalated) == 4
    assert report.fleet.escalation.value == pytest.approx(4 / 11)
    assert report.fleet.first_try == sum(c.first_try for c in resolved) == 6
    assert report.fleet.unresolved == {"budget": 1, "error": 1, "running": 1}
    assert report.fleet.fallbacks == 2
    # the reasons: the last attempt on the starting tier, never the fallback's error
    cheap = report.group("extract", "cheap")
    assert cheap is not None
    assert cheap.reasons == {"json": 3, "ServerError": 1}
    # the other roles and concrete-model calls on their own lines
    assert set(report.excluded) == {"probe", "shadow", "replay"}
    assert all(line.tasks == 1 for line in report.excluded.values())
    assert report.passthrough.tasks == 1
    # a kind whose outputs no validator judges is unmeasured, not healthy
    chat = report.kind("chat")
    assert chat is not None and chat.status == "unmeasured"
    assert chat.totals.escalation.value == 0
    extract = report.kind("extract")
    assert extract is not None and extract.status == "measured"


def test_the_red_line_is_the_same_rate_over_the_last_day(ledger: Ledger) -> None:
    for case in CASES:
        _write(ledger, case)
    report = analyze(ledger, Settings(red_line=0.09))
    line = report.red_line
    assert (line.resolved, line.escalated) == (11, 4)
    assert line.above


def test_money_is_read_from_the_stored_costs(ledger: Ledger) -> None:
    record_trail(
        ledger,
        (
            Step.of(0, "error", "0.000001", model="haiku"),
            Step.of(0, "rejected", "0.002", model="haiku-alt"),
            Step.of(0, "accepted", "0.0005", role="validator"),
            Step.of(1, "accepted", "0.03"),
        ),
    )
    record_trail(
        ledger, (Step.of(0, "accepted", "0.004"), Step.of(1, "rejected", "7", role="shadow"))
    )
    # a stored cost that no price list would give: it is what the analytics must sum
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.update(attempts)
            .where(attempts.c.cost_pusd == 4_000_000_000)
            .values(cost_pusd=4_000_000_001)
        )
        conn.execute(sa.update(tasks).values(cost_pusd=0))  # tasks' own totals are not read
    report = analyze(ledger, Settings())
    fleet = report.fleet
    assert fleet.cost_usd == Decimal("0.000001") + Decimal("0.002") + Decimal("0.0005") + Decimal(
        "0.03"
    ) + Decimal("0.004000000001") + Decimal(7)
    assert fleet.wasted_usd == Decimal("0.002001")  # the live error and rejection; not the shadow
    assert fleet.validator_usd == Decimal("0.0005")
    assert fleet.shadow_usd == Decimal(7)
    assert fleet.cost_per_accepted_usd == (fleet.cost_usd / 2).quantize(Decimal("1e-12"))


# -- the SQL and the Python reference agree on generated trails -------------------------------


@st.composite
def _trail(draw: st.DrawFn) -> tuple[str, int, str, list[Step]]:
    role = draw(st.sampled_from(["live", "live", "live", "probe", "replay", "shadow"]))
    start = draw(st.integers(min_value=-1, max_value=2))
    n = draw(st.integers(min_value=0, max_value=5))
    tier, steps = max(start, 0), []
    for _ in range(n):
        step_role = draw(st.sampled_from([role, role, role, "validator", "probe", "shadow"]))
        outcome = draw(st.sampled_from(["accepted", "rejected", "error", "partial"]))
        tier = min(2, tier + draw(st.integers(min_value=0, max_value=1)))
        steps.append(Step.of(-1 if start < 0 else tier, outcome, role=step_role))
    task_outcome = draw(st.sampled_from(["accepted", "exhausted", "budget", "error", "running"]))
    return role, start, task_outcome, steps


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(trails=st.lists(_trail(), min_size=1, max_size=8))
def test_sql_facts_equal_the_python_reference(
    ledger: Ledger, trails: list[tuple[str, int, str, list[Step]]]
) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(attempts.delete())
        conn.execute(tasks.delete())
    written = {}
    with ledger.batch():
        for role, start, outcome, steps in trails:
            task, _ = record_trail(
                ledger,
                steps,
                start_tier=start,
                role=role,
                task_outcome=outcome,  # type: ignore[arg-type]
            )
            written[task.id] = (role, start, outcome, steps)
    facts = _facts(ledger)
    for task_id, (role, start, outcome, steps) in written.items():
        want = classify(
            role=role,
            start_index=start,
            outcome=outcome,
            attempts=[
                AttemptFacts(s.role, s.tier, s.outcome, checked=s.role != "validator")
                for s in steps
            ],
        )
        row = facts[task_id]
        for name in ("counted", "resolved", "escalated", "direct", "first_try", "checked"):
            assert row[name] == int(getattr(want, name)), (name, role, start, outcome, steps)
        assert row["accepted_index"] == want.accepted_index
        assert row["own_attempts"] == want.own_attempts
        assert row["fallbacks"] == want.fallbacks
