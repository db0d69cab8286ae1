"""Each bad request once seen answered with a 500, or forwarded upstream and paid for, is a 400.

Every case is sent raw (the SDKs refuse to build most of them) to a gateway with a budget, and
must come back as a 400 in the caller's dialect naming what is wrong, with nothing sent
upstream and nothing reserved.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

USER = '[{"role": "user", "content": "hi"}]'


def a(max_tokens: str = "16", messages: str = USER, extra: str = "") -> str:
    """An Anthropic body with these raw JSON parts."""
    return (
        f'{{"model": "tierwise/auto", "max_tokens": {max_tokens}, "messages": {messages}{extra}}}'
    )


def o(messages: str = USER, extra: str = "") -> str:
    """An OpenAI body with these raw JSON parts."""
    return f'{{"model": "tierwise/auto", "messages": {messages}{extra}}}'


def blocks(content: str) -> str:
    return f'[{{"role": "user", "content": [{content}]}}]'


CASES = [
    # (endpoint, body, words in the message)
    ("/v1/messages", "[" * 5000 + "]" * 5000, "nests deeper"),
    ("/v1/messages", a("1" + "0" * 5000, USER, ""), "4300 digits"),
    ("/v1/messages", a("16", '[{"role": "user", "content": "\\ud800"}]', ""), "surrogate"),
    ("/v1/messages", a("16", blocks('{"type": "image", "source": "x"}'), ""), "source"),
    ("/v1/messages", a("16", blocks('{"type": "document", "source": 5}'), ""), "source"),
    (
        "/v1/messages",
        a("16", blocks('{"type": "tool_result", "tool_use_id": "t", "content": 5}'), ""),
        "content[0].content",
    ),
    ("/v1/messages", a("1e12", USER, ""), "max_tokens"),
    ("/v1/messages", a("1000000000000", USER, ""), "max_tokens"),
    ("/v1/messages", a("1e30", USER, ""), "max_tokens"),
    ("/v1/messages", a(str(2**63), USER, ""), "max_tokens"),
    ("/v1/messages", a("16", "[]", ""), "messages"),
    ("/v1/messages", a("16", USER, ', "temperature": NaN'), "NaN"),
    ("/v1/messages", a("16", USER, ', "temperature": Infinity'), "Infinity"),
    ("/v1/messages", a("16", USER, ', "temperature": 3'), "temperature"),
    ("/v1/messages", a("16", USER, ', "tool_choice": "auto"'), "tool_choice"),
    ("/v1/messages", a("16", USER, ', "metadata": "x"'), "metadata"),
    ("/v1/messages", a("16", USER, ', "stop_sequences": "STOP"'), "stop_sequences"),
    ("/v1/chat/completions", o(USER, ', "stop": 5'), "stop"),
    ("/v1/chat/completions", o(blocks('{"type": "file", "file": "x"}'), ""), "file"),
    ("/v1/chat/completions", o(USER, ', "temperature": NaN'), "NaN"),
    ("/v1/chat/completions", o(USER, ', "max_tokens": 0'), "max_tokens"),
    ("/v1/chat/completions", o(USER, ', "max_tokens": 1e30'), "max_tokens"),
    ("/v1/chat/completions", o(USER, f', "max_completion_tokens": {2**63}'), "max_comp"),
    ("/v1/chat/completions", o("[]", ""), "messages"),
    ("/v1/chat/completions", o(USER, ', "tool_choice": 5'), "tool_choice"),
    ("/v1/chat/completions", o(USER, ', "metadata": [1]'), "metadata"),
    ("/v1/chat/completions", o(USER, ', "user": 5'), "user"),
    ("/v1/chat/completions", o(USER, ', "n": 3'), "n"),
]


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    text = upstream_policy_text(fake_upstream_server, extra="\n[budgets]\ntask_usd = 5\n")
    ledger = tmp_path_factory.mktemp("bad") / "ledger.db"
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(ledger), env={TEST_KEY_ENV: "bad-req-key"}
    )
    with GatewayServer(config) as server:
        yield server


@pytest.mark.parametrize(("path", "body", "words"), CASES)
def test_bad_request_is_a_400_in_the_callers_shape(
    gateway: GatewayServer, fake_upstream: FakeUpstream, path: str, body: str, words: str
) -> None:
    response = httpx2.post(
        f"{gateway.base_url}{path}",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    data = response.json()
    message = data["error"]["message"]
    if path == "/v1/messages":
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    else:
        assert set(data["error"]) == {"message", "type", "param", "code"}
    assert words in message
    assert fake_upstream.requests == []  # nothing was sent, so nothing was paid for


def test_nothing_was_reserved_or_recorded(gateway: GatewayServer) -> None:
    assert gateway.config.ledger_url is not None
    with open_ledger(gateway.config.ledger_url, create=False) as ledger:
        assert ledger.tail(10) == []
