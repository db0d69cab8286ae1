"""Gateway access and lifecycle: keys (CLI and requests), key budgets, graceful shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import anthropic
import openai
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def _config(up: FakeUpstream, ledger: Path) -> GatewayConfig:
    policy = upstream_policy(up, extra='\n[defaults]\ndoubt = "cheap"\nvalidators = []\n')
    return GatewayConfig(
        policy=policy, ledger_url=str(ledger), env={TEST_KEY_ENV: "test"}, key_cache_s=0
    )


# -- keys CLI ----------------------------------------------------------------------------------


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    code, out, err = _cli("keys", "create", "--name", "ci", "--budget-usd-day", "2.5", "-l", db)
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("tw_") and "shown this once" in err
    code, out, _ = _cli("keys", "list", "--json", "-l", db)
    assert code == 0
    listed = json.loads(out)
    assert [(k["name"], k["role"], k["budget_usd_day"]) for k in listed] == [
        ("ci", "client", "2.5")
    ]
    assert secret not in out  # only a prefix is ever shown again
    with open_ledger(db) as book:
        key = book.verify_api_key(secret)
    assert key is not None and key.budget_usd_day == Decimal("2.5")
    assert _cli("keys", "revoke", "ci", "-l", db)[0] == 0
    assert json.loads(_cli("keys", "list", "--json", "-l", db)[1]) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "create", "--name", "x", "--role", "root"), "--role"),
        (("keys", "create", "--name", "x", "--budget-usd-day", "lots"), "--budget-usd-day"),
        (("keys", "create", "--name", "x", "--budget-usd-day", "-1"), "positive"),
        (("keys", "revoke", "nobody"), "no active key"),
    ],
)
def test_keys_cli_invalid_input_exits_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    db = str(tmp_path / "ledger.db")
    _cli("keys", "create", "--name", "existing", "-l", db)
    code, _, err = _cli(*args, "-l", db)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_duplicate_key_name_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    assert _cli("keys", "create", "--name", "a", "-l", db)[0] == 0
    code, _, err = _cli("keys", "create", "--name", "a", "-l", db)
    assert code == 2 and "already exists" in err


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    code, _, err = _cli("serve", "--host", "0.0.0.0", "--ledger", str(tmp_path / "l.db"))
    assert code == 2
    assert "refusing to serve on 0.0.0.0" in err and "keys create" in err


# -- keys on requests -------------------------------------------------------------------------


@pytest.fixture
def keyed(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[GatewayServer, str, str]]:
    db = tmp_path / "ledger.db"
    with open_ledger(db) as book:
        client = book.create_api_key("agent")
        broke = book.create_api_key("broke", budget_usd_day=Decimal("0.0000001"))
    with GatewayServer(_config(fake_upstream, db)) as server:
        yield server, client, broke


def test_requests_need_a_valid_key_once_keys_exist(keyed: tuple[GatewayServer, str, str]) -> None:
    server, secret, _ = keyed
    with anthropic.Anthropic(base_url=server.base_url, api_key="tw_wrong", max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as info:
            c.messages.create(
                model="tierwise/x", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with openai.OpenAI(base_url=server.openai_base_url, api_key="tw_wrong", max_retries=0) as o:
        with pytest.raises(openai.AuthenticationError) as other:
            o.chat.completions.create(
                model="tierwise/x", messages=[{"role": "user", "content": "x"}]
            )
        assert other.value.code == "invalid_api_key"
    with anthropic.Anthropic(base_url=server.base_url, api_key=secret, max_retries=0) as c:
        reply = c.messages.create(
            model="tierwise/x", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.content[0].text == "hi"  # type: ignore[union-attr]
    with openai.OpenAI(base_url=server.openai_base_url, api_key=secret, max_retries=0) as o:
        done = o.chat.completions.create(
            model="tierwise/x", messages=[{"role": "user", "content": "hi"}]
        )
        assert done.choices[0].message.content == "hi"
        assert next(m.id for m in o.models.list()) == "tierwise/auto"


def test_a_keys_daily_budget_is_enforced(
    keyed: tuple[GatewayServer, str, str], fake_upstream: FakeUpstream
) -> None:
    server, _, broke = keyed
    with (
        anthropic.Anthropic(base_url=server.base_url, api_key=broke, max_retries=2) as c,
        pytest.raises(anthropic.RateLimitError, match="key-day:") as info,
    ):
        c.messages.create(
            model="tierwise/x", max_tokens=50, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "x-tierwise-task-id" in info.value.response.headers
    assert fake_upstream.requests == []  # refused before any upstream call, and not retried


def test_revoked_key_stops_working(keyed: tuple[GatewayServer, str, str]) -> None:
    server, secret, _ = keyed
    assert server.config.ledger_url is not None
    with open_ledger(server.config.ledger_url) as book:
        assert book.revoke_api_key("agent")
    with (
        anthropic.Anthropic(base_url=server.base_url, api_key=secret, max_retries=0) as c,
        pytest.raises(anthropic.AuthenticationError, match="revoked"),
    ):
        c.messages.create(
            model="tierwise/x", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


# -- lifecycle -----------------------------------------------------------------------------------


def test_graceful_shutdown_finishes_requests_in_flight(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(latency_s=1.0))
    db = tmp_path / "ledger.db"
    server = GatewayServer(_config(fake_upstream, db)).start()
    results: dict[str, object] = {}

    def call() -> None:
        with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as c:
            try:
                raw = c.messages.with_raw_response.create(
                    model="tierwise/x",
                    max_tokens=20,
                    messages=[{"role": "user", "content": "slow one"}],
                )
                results["text"] = raw.parse().content[0].text  # type: ignore[union-attr]
                results["task"] = raw.headers["x-tierwise-task-id"]
            except Exception as exc:  # recorded for the assertion below
                results["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 10
    while not fake_upstream.requests_for("claude-haiku-4-5"):
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.01)
    server.stop()  # what SIGTERM does: stop accepting, finish in-flight work, run shutdown
    worker.join(timeout=15)
    assert "error" not in results, results.get("error")
    assert results["text"] == "slow one"
    with open_ledger(db) as book:  # the lifespan shutdown flushed the ledger
        task = book.task(str(results["task"]))
        assert task is not None and task["outcome"] == "accepted"
        assert len(book.attempts_of(str(results["task"]))) == 1


def test_not_waiting_for_the_ledger_still_records_every_request(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    config = replace(_config(fake_upstream, db), wait_for_ledger=False)
    with (
        GatewayServer(config) as server,
        anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0) as c,
    ):
        ids = [
            c.messages.with_raw_response.create(
                model="tierwise/x", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            ).headers["x-tierwise-task-id"]
            for _ in range(5)
        ]
    # the server has shut down: whatever was queued is committed by now
    with open_ledger(db) as book:
        assert all((book.task(i) or {}).get("outcome") == "accepted" for i in ids)
