"""Nothing a request does holds the event loop: `/healthz` answers while each blocker is in flight.

Each blocker is sized to take seconds and the check is one of order, not of speed: ``/healthz``
must answer *while* the blocked request is still waiting.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

BODY = {"model": "tierwise/auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    # A budget applies (so reservations are written) and is large enough for a 10 MB prompt.
    text = upstream_policy_text(fake_upstream_server, extra="\n[budgets]\ntask_usd = 100\n")
    ledger = tmp_path_factory.mktemp("loop") / "ledger.db"
    config = GatewayConfig(
        policy=loads_policy(text),
        ledger_url=str(ledger),
        env={TEST_KEY_ENV: "loop-test-key"},
        body_timeout_s=3.0,
    )
    with GatewayServer(config) as server:
        yield server


class Background:
    """One request sent from a thread; ``done`` is set when its answer arrived."""

    def __init__(self, send: object) -> None:
        self.done = threading.Event()
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self.thread.start()

    def _run(self, send: object) -> None:
        try:
            self.status = send()  # type: ignore[operator]
        finally:
            self.done.set()


def healthz(gateway: GatewayServer) -> int:
    return httpx2.get(f"{gateway.base_url}/healthz", timeout=10).status_code


def test_healthz_answers_while_a_budgeted_request_waits_for_a_locked_ledger(
    gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    assert gateway.config.ledger_url is not None
    lock = sqlite3.connect(Path(gateway.config.ledger_url), isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        request = Background(
            lambda: (
                httpx2.post(f"{gateway.base_url}/v1/messages", json=BODY, timeout=60).status_code
            )
        )
        assert not request.done.wait(1.0), "the budgeted request did not wait for the lock"
        assert healthz(gateway) == 200
        assert not request.done.is_set()  # answered while the reservation was still waiting
        assert fake_upstream.requests == []  # nothing is sent before the budget is held
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert request.done.wait(30)
    assert request.status == 200


def test_healthz_answers_while_a_body_trickles_and_the_slow_body_gets_408(
    gateway: GatewayServer,
) -> None:
    payload = json.dumps(BODY).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as slow:
        slow.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload[:10]  # and then nothing more
        )
        assert healthz(gateway) == 200
        answer = b""
        while chunk := slow.recv(65536):  # the 408 closes the connection when it is sent
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within 3 s" in body


def test_a_body_of_almost_ten_megabytes_is_served(
    gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    """Big bodies are decoded off the event loop; they are still answered normally."""
    big = {**BODY, "messages": [{"role": "user", "content": "word " * 1_900_000}]}
    response = httpx2.post(f"{gateway.base_url}/v1/messages", json=big, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert len(fake_upstream.requests) == 1
