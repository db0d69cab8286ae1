"""When the ledger's database blinks: a request that has not called upstream yet is refused with
a 503 in the caller's dialect and costs nothing; a paid call is answered and its rows (budget
settlement included) are spooled to a local file, then written when the database is back.

These stop and start the session's real PostgreSQL server (the ``postgres_cluster`` fixture):
that is what a database outage is. The spool itself, on both backends, is in
``test_ledger_spool.py``; several processes through an outage in ``test_gateway_replicas.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.spool import scan
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy
from tierwise.testing.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

_EXTRA = '\n[defaults]\ndoubt = "cheap"\nvalidators = []\n'


def _config(up: FakeUpstream, url: str, spool: Path, **kw: Any) -> GatewayConfig:
    return GatewayConfig(
        policy=upstream_policy(up, extra=_EXTRA),
        ledger_url=url,
        env={TEST_KEY_ENV: "test"},
        spool_dir=str(spool),
        **kw,
    )


@contextmanager
def _database_down(cluster: PostgresCluster) -> Iterator[None]:
    """The server stopped for the block (fast shutdown: every connection is cut), then back."""
    cluster.stop()
    try:
        yield
    finally:
        cluster.start()


def _ask(base: str, secret: str = "unused", prompt: str = "hello") -> Any:
    with anthropic.Anthropic(base_url=base, api_key=secret, max_retries=0) as client:
        return client.messages.with_raw_response.create(
            model="tierwise/x", max_tokens=20, messages=[{"role": "user", "content": prompt}]
        )


def _until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_a_database_down_before_the_call_is_a_503_in_each_dialect_and_costs_nothing(
    fake_upstream: FakeUpstream,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    tmp_path: Path,
) -> None:
    """No budget applies and no key is needed, so the request's first database write would
    come after the call: the gateway's ledger health (a ping, at most every ledger_check_s)
    refuses it first."""
    config = _config(fake_upstream, postgres_url, tmp_path / "spool", ledger_check_s=0.2)
    with GatewayServer(config) as server:
        assert _ask(server.base_url).status_code == 200
        fake_upstream.clear_requests()
        with _database_down(postgres_cluster):
            time.sleep(0.3)  # the last commit's verdict is no longer fresh
            with pytest.raises(anthropic.APIStatusError) as caught:
                _ask(server.base_url)
            error = caught.value
            assert error.status_code == 503
            assert error.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
            assert "ledger database cannot be reached" in error.message
            assert error.response.headers["x-should-retry"] == "true"
            assert error.response.headers["x-tierwise-task-id"]
            with (
                openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0) as oa,
                pytest.raises(openai.InternalServerError) as oa_caught,
            ):
                oa.chat.completions.create(
                    model="tierwise/x", messages=[{"role": "user", "content": "hello"}]
                )
            assert oa_caught.value.status_code == 503
            assert oa_caught.value.code == "ledger_unavailable"
            health = httpx2.get(f"{server.base_url}/healthz").json()
            assert health == {"status": "degraded", "ledger": "unreachable"}
            assert fake_upstream.requests == []  # nothing was called, so nothing was charged
        # Back: the writer thread notices by itself (no request needed), within a second or two.
        _until(lambda: httpx2.get(f"{server.base_url}/healthz").json() == {"status": "ok"})
        assert _ask(server.base_url).status_code == 200
    assert not list((tmp_path / "spool").glob("*.jsonl"))
    with open_ledger(postgres_url) as book:
        assert book.stats()["tasks"] == 2  # the two answered requests; the refused left none
        assert book.integrity_check() == []


def test_a_reservation_the_database_cannot_take_is_a_503_before_the_call(
    fake_upstream: FakeUpstream,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    tmp_path: Path,
) -> None:
    """With a key budget the reservation is the first write: it fails, the call is not made."""
    with open_ledger(postgres_url) as book:
        secret = book.create_api_key("agent", budget_usd_day=Decimal("1"))
    # The health verdict stays fresh for a minute and the key is cached: the reservation itself
    # is what finds the database down.
    config = _config(
        fake_upstream, postgres_url, tmp_path / "spool", ledger_check_s=60, key_cache_s=60
    )
    with GatewayServer(config) as server:
        assert _ask(server.base_url, secret).status_code == 200
        fake_upstream.clear_requests()
        with _database_down(postgres_cluster):
            with pytest.raises(anthropic.APIStatusError) as caught:
                _ask(server.base_url, secret)
            assert caught.value.status_code == 503
            assert fake_upstream.requests == []
        _until(lambda: httpx2.get(f"{server.base_url}/healthz").json() == {"status": "ok"})
        assert _ask(server.base_url, secret).status_code == 200
    with open_ledger(postgres_url) as book:
        assert book.integrity_check() == []
        held = book.stats()["held"]
        assert held["reservations"] == 0
        outcomes = sorted(t["outcome"] for t in _tasks(book))
        assert outcomes == ["accepted", "accepted", "error"]  # the refused one cost nothing
        assert all(t["cost_usd"] == 0 for t in _tasks(book) if t["outcome"] == "error")


def _tasks(book: Ledger) -> list[dict[str, Any]]:
    with book.engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM tasks")]
    found = [book.task(i) for i in ids]
    return [t for t in found if t is not None]


def _ask_streamed(base: str, secret: str) -> tuple[Any, str]:
    """A live-relayed stream, read to its end: (its response, the text it carried)."""
    with anthropic.Anthropic(base_url=base, api_key=secret, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="tierwise/x",
            max_tokens=20,
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
        )
        text = "".join(
            e.delta.text
            for e in raw.parse()
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )
        return raw, text


def _in_flight_when_the_database_stops(
    server: GatewayServer,
    up: FakeUpstream,
    cluster: PostgresCluster,
    secret: str,
    *,
    stream: bool = False,
) -> Any:
    """One request whose upstream call is under way when the server stops; its reply."""
    up.set_script("claude-haiku-4-5", ModelScript(latency_s=1.0))
    replies: list[Any] = []

    def ask() -> None:
        if stream:
            raw, text = _ask_streamed(server.base_url, secret)
            assert text, "the stream carried the answer to its end"
            replies.append(raw)
        else:
            replies.append(_ask(server.base_url, secret))

    asking = threading.Thread(target=ask)
    asking.start()
    _until(lambda: bool(up.requests))  # past the health check and the reservation
    cluster.stop()
    asking.join(timeout=30)
    assert replies, "the request did not finish"
    return replies[0]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "live-stream"])
def test_a_paid_call_is_answered_spooled_reported_and_written_when_the_database_returns(
    fake_upstream: FakeUpstream,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    tmp_path: Path,
    stream: bool,
) -> None:
    with open_ledger(postgres_url) as book:
        secret = book.create_api_key("agent", budget_usd_day=Decimal("1"))
        key_id = book.list_api_keys()[0].id
    spool = tmp_path / "spool"
    config = _config(fake_upstream, postgres_url, spool, key_cache_s=60)
    with GatewayServer(config) as server:
        try:
            reply = _in_flight_when_the_database_stops(
                server, fake_upstream, postgres_cluster, secret, stream=stream
            )
            assert reply.status_code == 200  # paid for, so answered: its rows are on local disk
            task_id = reply.headers["x-tierwise-task-id"]
            # a live stream's cost comes in its trailer, not its headers: read it from the ledger
            told = None if stream else Decimal(reply.headers["x-tierwise-cost-usd"])
            (spooled,) = scan(spool)
            assert spooled.live and spooled.tasks == 1 and spooled.rows >= 4
            health = httpx2.get(f"{server.base_url}/healthz").json()
            assert health == {"status": "degraded", "ledger": "unreachable", "spooled_tasks": 1}
            # ledger check reports the spooled rows even while the database is down
            result = _check(postgres_url, spool)
            assert result.exit_code == 2
            assert "1 task(s), " in result.output and "not in the ledger yet" in result.output
        finally:
            postgres_cluster.start()
        _until(lambda: not scan(spool) or scan(spool)[0].tasks == 0)
    assert not list(spool.glob("*.jsonl"))  # replayed, and released at shutdown
    with open_ledger(postgres_url) as book:
        task = book.task(task_id)
        assert task is not None and task["outcome"] == "accepted"
        cost = task["cost_usd"]
        assert cost > 0 and (told is None or cost == told)
        assert book.integrity_check() == []
        (state,) = [book.budget(s) for s in _scopes(book) if s.startswith(f"key-day:{key_id}:")]
        assert state is not None and state.held_usd == 0  # the settlement was replayed too
        assert state.spent_usd == sum((t["cost_usd"] for t in _tasks(book)), Decimal(0)) == cost
    result = _check(postgres_url, spool)
    assert result.exit_code == 0, result.output


def _check(url: str, spool: Path) -> Any:
    args = ["ledger", "check", "--ledger", url, "--spool-dir", str(spool)]
    return CliRunner().invoke(build_app(), args)


def _scopes(book: Ledger) -> list[str]:
    with book.engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT scope FROM budget_counters")]


def test_a_spool_left_by_a_stopped_gateway_is_written_by_the_next_one_once(
    fake_upstream: FakeUpstream,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    tmp_path: Path,
) -> None:
    """A gateway that stops while the database is down leaves its spool file; the next process
    with the same spool directory writes it at start — and writing it twice changes nothing."""
    with open_ledger(postgres_url) as book:
        secret = book.create_api_key("agent", budget_usd_day=Decimal("1"))
    spool = tmp_path / "spool"
    config = _config(fake_upstream, postgres_url, spool, key_cache_s=60)
    try:
        with GatewayServer(config) as server:
            reply = _in_flight_when_the_database_stops(
                server, fake_upstream, postgres_cluster, secret
            )
            assert reply.status_code == 200
        (left,) = scan(spool)
        assert not left.live and left.tasks == 1
        copy = left.path.read_bytes()
    finally:
        postgres_cluster.start()
    fake_upstream.reset()
    with GatewayServer(config) as server:
        _until(lambda: not scan(spool))
    with open_ledger(postgres_url) as book:
        task = book.task(reply.headers["x-tierwise-task-id"])
        assert task is not None and task["outcome"] == "accepted"
        before = book.stats(), [book.budget(s) for s in _scopes(book)]
        # the same file once more (a crash between the commit and the delete): no change
        (spool / "again.jsonl").write_bytes(copy)
        from tierwise.ledger.spool import replay_orphans

        again = replay_orphans(spool, book)
        assert again.tasks == 1 and again.rejected == 0
        after = book.stats(), [book.budget(s) for s in _scopes(book)]
        assert _comparable(after) == _comparable(before)
        assert book.integrity_check() == []


def _comparable(state: tuple[dict[str, Any], list[Any]]) -> tuple[Any, ...]:
    stats, budgets = state
    return (
        stats["tasks"],
        stats["attempts"],
        stats["spend_usd"],
        stats["held"]["reservations"],
        budgets,
    )
