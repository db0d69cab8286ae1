"""Budgets that cannot be dodged: an upstream billing ten times the estimate, and the climb.

The estimate a reservation holds is a bound from the request (input ≤ its bytes, output ≤
``max_tokens``); images, PDFs, server tools and provider-side prompts can break it. The
damage stays bounded: one request at a time overshoots by at most one attempt's bill, many at
once by at most the in-flight attempts' excess over their reservations, and once a scope is at
its limit no further attempt starts.
"""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest

from tierwise.cascade import Cascade
from tierwise.errors import BudgetExceededError
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
LIMIT = Decimal("0.01")
#: What the inflated upstream reports for every call: about ten times what is reserved.
BILLED_USAGE = {"input_tokens": 2700, "output_tokens": 160}
BILL = Decimal("0.0027") + Decimal("0.0008")  # at Haiku 4.5's $1 / $5 per million


def _gateway(up: FakeUpstream, db: Path) -> tuple[GatewayConfig, str]:
    text = upstream_policy_text(up, extra='\n[defaults]\ndoubt = "cheap"\nvalidators = []\n')
    with open_ledger(db) as book:
        secret = book.create_api_key("agent", budget_usd_day=LIMIT)
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(db), env={TEST_KEY_ENV: "k-budget-test"}
    )
    return config, secret


def _ask(gateway: GatewayServer, secret: str) -> int:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key=secret, max_retries=0) as claude:
        try:
            claude.messages.create(
                model="tierwise/auto",
                max_tokens=16,
                messages=[{"role": "user", "content": "what does this cost?"}],
            )
        except anthropic.RateLimitError:
            return 429
    return 200


def _spent(db: Path) -> tuple[Decimal, Decimal]:
    """(total cost in the ledger, the largest single attempt's cost)."""
    with open_ledger(db) as book:
        rows = [a for a in book.tail(10_000)]
    costs = [Decimal(r["cost_usd"]) for r in rows]
    return sum(costs, Decimal(0)), max(costs)


def test_one_at_a_time_a_budget_is_overshot_by_at_most_one_bill(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_script(CHEAP, ModelScript(usage=BILLED_USAGE))
    db = tmp_path / "ledger.db"
    config, secret = _gateway(fake_upstream, db)
    with GatewayServer(config) as gateway:
        statuses = [_ask(gateway, secret) for _ in range(12)]
        calls = len(fake_upstream.requests)
        assert [_ask(gateway, secret) for _ in range(5)] == [429] * 5
        assert len(fake_upstream.requests) == calls  # at its limit, no further attempt starts
    assert statuses[0] == 200 and 429 in statuses
    assert statuses == [200] * statuses.index(429) + [429] * (12 - statuses.index(429))
    total, largest = _spent(db)
    assert largest == BILL  # the upstream really billed about ten times the reservation
    assert LIMIT < total <= LIMIT + BILL


def test_many_at_once_overshoot_by_at_most_the_in_flight_excess(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_script(CHEAP, ModelScript(usage=BILLED_USAGE, latency_s=0.2))
    db = tmp_path / "ledger.db"
    config, secret = _gateway(fake_upstream, db)
    statuses: list[int] = []
    with GatewayServer(config) as gateway:
        threads = [
            threading.Thread(target=lambda: statuses.append(_ask(gateway, secret)))
            for _ in range(32)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        calls = len(fake_upstream.requests)
        assert _ask(gateway, secret) == 429
        assert len(fake_upstream.requests) == calls
    total, _ = _spent(db)
    holds = _reservations(db)
    assert len(holds) == calls and all(
        actual > 10 * held * Decimal("0.9") for held, actual in holds
    )
    # Every attempt held its estimate before it started, so no more than the limit was ever
    # held at once; what went over is the excess of the attempts in flight together.
    assert total <= LIMIT + sum((actual - held for held, actual in holds), Decimal(0))
    assert statuses.count(200) == calls and statuses.count(429) == 32 - calls


def _reservations(db: Path) -> list[tuple[Decimal, Decimal]]:
    """(held, actual) USD of every settled reservation, read straight from the ledger file."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT amount_pusd, actual_pusd FROM reservations WHERE state = 'settled'"
        ).fetchall()
    pico = Decimal(10) ** 12
    return [(Decimal(a) / pico, Decimal(b) / pico) for a, b in rows]


def _climbing_policy(up: FakeUpstream, task_usd: str, climb: str) -> str:
    extra = f"""
[budgets]
task_usd = {task_usd}
climb = "{climb}"

[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = ["json"]
"""
    return upstream_policy_text(up, extra=extra)


@pytest.fixture
def cheap_fails(fake_upstream: FakeUpstream) -> FakeUpstream:
    fake_upstream.set_script(CHEAP, ModelScript(reply="not json"))
    for model in (MID, STRONG):
        fake_upstream.set_script(model, ModelScript(reply='{"ok": true}'))
    return fake_upstream


def _worst(up: FakeUpstream, *, carry: bool = True) -> list[Decimal]:
    """The worst case of each tier's attempt for the task below, climbing from the bottom
    (without *carry*: as if nothing were handed up, a bound below any climbed request's)."""
    from tierwise.cascade.budget import input_token_bound
    from tierwise.cascade.handoff import HANDOFF_MAX_BYTES
    from tierwise.cascade.seams import default_request_builder
    from tierwise.pricing import PriceCatalog, max_cost

    policy = loads_policy(_climbing_policy(up, "1", "per_attempt"))
    catalog, carried, out = PriceCatalog(), 0, []
    for name in policy.ladder:
        tier = policy.tier(name)
        request = default_request_builder(TASK, tier, tier.model, 100, None)
        bound = input_token_bound(request) + carried
        out.append(max_cost(catalog.prices_for(tier.model), input_tokens=bound, max_tokens=100))
        if carry:
            carried += 100 + HANDOFF_MAX_BYTES + 8  # the answer, the handoff note, its framing
    return out


TASK = Task.create("extract", "Invoice 42 from ACME, total 10 EUR", max_tokens=100)


def _run(up: FakeUpstream, budget: Decimal, climb: str) -> tuple[Cascade, object]:
    policy = loads_policy(_climbing_policy(up, str(budget), climb))
    cascade = Cascade(policy, env={TEST_KEY_ENV: "k"})
    try:
        return cascade, cascade.run(TASK.with_(id=f"{climb}-{budget}"))
    except BudgetExceededError as exc:
        return cascade, exc
    finally:
        cascade.close()


def test_per_attempt_pays_for_cheap_attempts_then_refuses_the_climb(
    cheap_fails: FakeUpstream,
) -> None:
    """The old behaviour, kept as the default: the money can buy nothing."""
    worst = _worst(cheap_fails, carry=False)
    _, outcome = _run(cheap_fails, worst[0] + worst[1] / 2, "per_attempt")
    assert isinstance(outcome, BudgetExceededError)
    assert [a.tier for a in outcome.attempts] == ["cheap"]  # paid for, then refused


def test_reserve_ladder_refuses_before_any_call(cheap_fails: FakeUpstream) -> None:
    worst = _worst(cheap_fails)
    _, outcome = _run(cheap_fails, sum(worst) - Decimal("0.000001"), "reserve_ladder")
    assert isinstance(outcome, BudgetExceededError) and outcome.attempts == ()
    assert cheap_fails.requests == []
    _, done = _run(cheap_fails, sum(worst), "reserve_ladder")
    assert not isinstance(done, BudgetExceededError)


def test_fit_starts_where_the_rest_of_the_climb_fits_and_says_so(cheap_fails: FakeUpstream) -> None:
    worst = _worst(cheap_fails)
    cascade, result = _run(cheap_fails, worst[1] + worst[2], "fit")
    assert not isinstance(result, BudgetExceededError)
    assert [a.tier for a in result.attempts] == ["mid"]  # type: ignore[attr-defined]
    decision = result.decision  # type: ignore[attr-defined]
    assert decision.tier == "mid" and "could not cover the climb from cheap" in decision.explain()
    assert cascade.budget_moves["extract"] == 1
    _, refused = _run(cheap_fails, worst[2] - Decimal("0.000001"), "fit")
    assert isinstance(refused, BudgetExceededError) and refused.attempts == ()
