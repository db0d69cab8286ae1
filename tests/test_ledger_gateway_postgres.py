"""The gateway on a PostgreSQL ledger: concurrent requests through the official SDK against one
key budget, every acknowledged request in the ledger at the cost it was told, no overshoot;
revocations seen at once. (Several gateway processes on one database come with the gateway's
own Postgres tests.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import anthropic
import pytest

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy

pytestmark = pytest.mark.postgres


def _config(up: FakeUpstream, url: str) -> GatewayConfig:
    policy = upstream_policy(up, extra='\n[defaults]\ndoubt = "cheap"\nvalidators = []\n')
    return GatewayConfig(policy=policy, ledger_url=url, env={TEST_KEY_ENV: "test"}, key_cache_s=0)


def test_concurrent_requests_on_one_key_budget_never_overshoot(
    fake_upstream: FakeUpstream, postgres_url: str
) -> None:
    limit = Decimal("0.0015")  # room for some of the 48 requests, not all
    with open_ledger(postgres_url) as book:
        secret = book.create_api_key("agent", budget_usd_day=limit)
        key_id = book.list_api_keys()[0].id

    def ask(i: int) -> tuple[str, str | None, Decimal]:
        with anthropic.Anthropic(base_url=base, api_key=secret, max_retries=0) as client:
            try:
                raw = client.messages.with_raw_response.create(
                    model="tierwise/x",
                    max_tokens=20,
                    messages=[{"role": "user", "content": f"request {i} " + "x" * 200}],
                )
            except anthropic.RateLimitError as exc:
                assert "key-day:" in str(exc)
                return "refused", exc.response.headers.get("x-tierwise-task-id"), Decimal(0)
            headers = raw.headers
            return "ok", headers["x-tierwise-task-id"], Decimal(headers["x-tierwise-cost-usd"])

    with GatewayServer(_config(fake_upstream, postgres_url)) as server:
        base = server.base_url
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(ask, range(48)))
    answered = [(task_id, cost) for status, task_id, cost in results if status == "ok"]
    refused = [r for r in results if r[0] == "refused"]
    assert answered and refused, "the budget should admit some requests and refuse others"
    with open_ledger(postgres_url) as book:
        for task_id, cost in answered:  # every acknowledged request is in the ledger, as told
            assert task_id is not None
            task = book.task(task_id)
            assert task is not None and task["outcome"] == "accepted"
            assert task["cost_usd"] == cost
        scope = next(s for s in _scopes(book) if s.startswith(f"key-day:{key_id}:"))
        state = book.budget(scope)
        assert state is not None and state.held_usd == 0
        assert state.spent_usd == sum((c for _, c in answered), Decimal(0)) <= limit
        assert book.integrity_check() == []


def _scopes(book: object) -> list[str]:
    from tierwise.ledger import Ledger

    assert isinstance(book, Ledger)
    with book.engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT scope FROM budget_counters")]


def test_a_revoked_key_stops_working_at_once(
    fake_upstream: FakeUpstream, postgres_url: str
) -> None:
    with open_ledger(postgres_url) as book:
        secret = book.create_api_key("agent")
        book.create_api_key("other-agent")  # the gateway stays keyed after the revocation
    with (
        GatewayServer(_config(fake_upstream, postgres_url)) as server,
        anthropic.Anthropic(base_url=server.base_url, api_key=secret, max_retries=0) as c,
    ):
        c.messages.create(
            model="tierwise/x", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        with open_ledger(postgres_url) as other:  # another host's CLI, say
            assert other.revoke_api_key("agent")
        with pytest.raises(anthropic.AuthenticationError, match="revoked"):
            c.messages.create(
                model="tierwise/x", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
