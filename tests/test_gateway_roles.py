"""Access decided at start, roles, passthrough models and invented kinds.

The gateway under test is bound to ``0.0.0.0`` (as a team would serve it) and probed only over
loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.config import is_loopback
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

HI = [{"role": "user", "content": "hi"}]


def _policy(up: FakeUpstream, extra: str = "") -> GatewayConfig:
    text = upstream_policy_text(up, extra=extra)
    return GatewayConfig(policy=loads_policy(text), env={TEST_KEY_ENV: "roles-test-key"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("127.0.0.1.nip.io", False),  # a public name that only starts like loopback
    ],
)
def test_loopback_is_decided_by_the_addresses_a_host_resolves_to(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_on_a_name_that_merely_looks_like_loopback_needs_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["serve", "--host", "127.0.0.1.nip.io", "--ledger", str(tmp_path / "l.db")]
    )
    assert result.exit_code == 2
    assert "refusing to serve on 127.0.0.1.nip.io" in result.stderr


@pytest.fixture
def public(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[GatewayServer, str, str]]:
    """A gateway on 0.0.0.0 with one client key and one admin key at start."""
    db = tmp_path / "ledger.db"
    with open_ledger(db) as book:
        client = book.create_api_key("agent")
        admin = book.create_api_key("ops", role="admin")
    config = _policy(fake_upstream)
    config = GatewayConfig(**{**_fields(config), "ledger_url": str(db), "key_cache_s": 0})
    with GatewayServer(config, host="0.0.0.0") as server:
        yield server, client, admin


def _fields(config: GatewayConfig) -> dict[str, object]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _get(server: GatewayServer, path: str, key: str | None = None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx2.get(f"http://127.0.0.1:{server.port}{path}", headers=headers).status_code


def _ask(server: GatewayServer, key: str) -> int:
    with anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{server.port}", api_key=key, max_retries=0
    ) as claude:
        try:
            claude.messages.create(model="tierwise/auto", max_tokens=8, messages=HI)  # type: ignore[arg-type]
        except anthropic.APIStatusError as exc:
            return exc.status_code
    return 200


def test_revoking_every_key_does_not_open_the_gateway(
    public: tuple[GatewayServer, str, str],
) -> None:
    server, client, admin = public
    assert _ask(server, client) == 200
    assert server.config.ledger_url is not None
    with open_ledger(server.config.ledger_url) as book:
        assert book.revoke_api_key("agent") and book.revoke_api_key("ops")
        assert not book.has_api_keys()
    assert _ask(server, client) == 401  # the revoked key
    assert _ask(server, "unused") == 401  # no real key
    assert _get(server, "/v1/messages") == 405 or _get(server, "/v1/models") == 401
    assert _get(server, "/v1/models") == 401
    assert _get(server, "/metrics") == 401
    assert _get(server, "/metrics", admin) == 401  # revoked admin too


def test_admin_routes_and_metrics_off_loopback_need_an_admin_key(
    public: tuple[GatewayServer, str, str],
) -> None:
    server, client, admin = public
    for path in ("/v1/tierwise/admin/status", "/metrics"):
        assert _get(server, path) == 401
        assert _get(server, path, client) == 403
        assert _get(server, path, admin) == 200
    status = httpx2.get(
        f"http://127.0.0.1:{server.port}/v1/tierwise/admin/status",
        headers={"authorization": f"Bearer {admin}"},
    ).json()
    assert status["anonymous"] is False and status["ladder"] == ["cheap", "mid", "strong"]


def test_an_anonymous_loopback_gateway_still_checks_tierwise_keys(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Placeholder keys SDKs insist on pass; a tierwise key that is unknown never does."""
    config = GatewayConfig(**{**_fields(_policy(fake_upstream)), "ledger_url": str(tmp_path / "l")})
    with GatewayServer(config) as server:
        assert _ask(server, "unused") == 200
        assert _ask(server, "tw_" + "x" * 43) == 401


def test_a_catalog_model_the_policy_does_not_list_is_refused(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    config = GatewayConfig(**{**_fields(_policy(fake_upstream)), "ledger_url": str(tmp_path / "l")})
    with (
        GatewayServer(config) as server,
        anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as claude,
        pytest.raises(anthropic.NotFoundError, match=r"\[passthrough\]"),
    ):
        claude.messages.create(model="claude-opus-4-1", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    assert fake_upstream.requests == []


def test_an_allowed_passthrough_model_is_recorded_under_its_own_label(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    extra = '\n[passthrough]\nmodels = ["claude-opus-4-1"]\n'
    db = tmp_path / "l.db"
    config = GatewayConfig(**{**_fields(_policy(fake_upstream, extra)), "ledger_url": str(db)})
    with (
        GatewayServer(config) as server,
        anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as claude,
    ):
        raw = claude.messages.with_raw_response.create(
            model="claude-opus-4-1",
            max_tokens=8,
            messages=HI,  # type: ignore[arg-type]
        )
    assert raw.headers["x-tierwise-tier"] == "passthrough"
    with open_ledger(db) as book:
        rows = book.attempts_of(raw.headers["x-tierwise-task-id"])
    assert [(r["tier"], r["tier_index"], r["model"]) for r in rows] == [
        ("passthrough", -1, "claude-opus-4-1")
    ]


def test_invented_kinds_share_one_budget_and_one_metrics_label(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    extra = "\n[budgets]\nkind_day_usd = 0.003\n\n[kinds.declared]\n"
    db = tmp_path / "l.db"
    config = GatewayConfig(**{**_fields(_policy(fake_upstream, extra)), "ledger_url": str(db)})
    statuses = []
    with (
        GatewayServer(config) as server,
        anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as claude,
    ):
        for i in range(60):
            try:
                claude.messages.create(
                    model=f"tierwise/invented-{i}",
                    max_tokens=16,
                    messages=[{"role": "user", "content": "spend " * 40}],
                )
                statuses.append(200)
            except anthropic.RateLimitError:
                statuses.append(429)
        metrics = httpx2.get(f"{server.base_url}/metrics").text
    # a fresh name earns no fresh budget: the shared one runs out and stays out
    assert 200 in statuses and statuses[-1] == 429
    assert statuses.index(429) < 60 and 200 not in statuses[statuses.index(429) :]
    assert 'kind="undeclared"' in metrics and "invented-" not in metrics
    with open_ledger(db) as book:  # the ledger keeps the names as sent
        kinds = {row["kind"] for row in book.tail(100)}
    assert "invented-0" in kinds


def test_tasks_carry_their_key_and_ledger_stats_shows_spend_per_key(
    public: tuple[GatewayServer, str, str],
) -> None:
    server, client, admin = public
    assert [_ask(server, client) for _ in range(3)] + [_ask(server, admin)] == [200] * 4
    url = server.config.ledger_url
    assert url is not None
    with open_ledger(url) as book:
        keys = {k.name: k.id for k in book.list_api_keys()}
        tasks = [book.task(r["task_id"]) for r in book.tail(100)]
    by_name: dict[str, list[object]] = {}
    for task in tasks:
        assert task is not None and task["key_id"] in keys.values()
        by_name.setdefault(task["key_id"], []).append(task["cost_usd"])
    runner = CliRunner()
    result = runner.invoke(build_app(), ["ledger", "stats", "-l", url, "--json"])
    assert result.exit_code == 0, result.output
    import json
    from decimal import Decimal

    rows = {r["key"]: r for r in json.loads(result.stdout)["by_key"]}
    assert rows["agent"]["tasks"] == 3 and rows["ops"]["tasks"] == 1
    expected = sum((Decimal(str(c)) for c in by_name[keys["agent"]]), Decimal(0))
    assert Decimal(rows["agent"]["spend_usd"]) == expected > 0
    text = runner.invoke(build_app(), ["ledger", "stats", "-l", url]).stdout
    assert "spend per key: agent" in text
