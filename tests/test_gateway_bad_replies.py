"""An upstream 200 that is not a valid answer is a failed attempt: the cascade climbs past it.

A real HTTP server on loopback plays a broken bottom tier, answering every request with one
canned body; the tier above is the fake upstream and answers well. Every broken reply must end
in a 200 from the next tier (never a 500, never the broken body passed on), with the broken
attempt in the ledger as an error; with no tier above, the caller gets a 502 in its dialect.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer, bind_socket
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream

GOOD_TEXT = {"type": "text", "text": "fine"}
USAGE = {"input_tokens": 3, "output_tokens": 2}
OPENAI_USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
#: What a reply reporting 3 input and 2 output tokens costs at the policy's $1 / $5 per million.
BILLED = Decimal("0.000013")


def message(**changes: Any) -> bytes:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "broken-model",
        "content": [GOOD_TEXT],
        "stop_reason": "end_turn",
        "usage": USAGE,
    }
    body.update(changes)
    return json.dumps(body).encode()


def choice(**message_changes: Any) -> list[dict[str, Any]]:
    msg = {"role": "assistant", "content": "fine", **message_changes}
    return [{"index": 0, "message": msg, "finish_reason": "stop"}]


def completion(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion",
        "model": "broken-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "fine"},
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }
    body.update(changes)
    return json.dumps(body).encode()


ANTHROPIC_REPLIES = {
    "not json": b"{",
    "empty": b"",
    "null": b"null",
    "a list": b"[]",
    "a string": b'"hello"',
    "no content": json.dumps({"type": "message", "role": "assistant", "usage": USAGE}).encode(),
    "content a string": message(content="fine"),
    "content of numbers": message(content=[1, 2]),
    "block without type": message(content=[{"text": "x"}]),
    "text not a string": message(content=[{"type": "text", "text": 5}]),
    "tool call without name": message(content=[{"type": "tool_use", "id": "t", "input": {}}]),
    "tool input not an object": message(
        content=[{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]
    ),
    "usage a string": message(usage="lots"),
    "negative tokens": message(usage={"input_tokens": -1, "output_tokens": 2}),
    "tokens as text": message(usage={"input_tokens": "3", "output_tokens": 2}),
    "stop reason a number": message(stop_reason=5),
    "model a number": message(model=5),
    "role user": message(role="user"),
    "an error object": json.dumps(
        {"type": "error", "error": {"type": "x", "message": "y"}}
    ).encode(),
}
OPENAI_REPLIES = {
    "no choices": completion(choices=[]),
    "choices a string": completion(choices="x"),
    "choice a number": completion(choices=[1]),
    "no message": completion(choices=[{"index": 0, "finish_reason": "stop"}]),
    "content a number": completion(choices=choice(content=5)),
    "tool calls a string": completion(choices=choice(tool_calls="x")),
    "tool call without name": completion(
        choices=choice(tool_calls=[{"id": "t", "type": "function", "function": {}}])
    ),
    "arguments an object": completion(
        choices=choice(
            tool_calls=[{"id": "t", "type": "function", "function": {"name": "f", "arguments": {}}}]
        )
    ),
    "usage a string": completion(usage="x"),
    "negative usage": completion(usage={"prompt_tokens": -3, "completion_tokens": 1}),
    "refusal a number": completion(choices=choice(refusal=5)),
    "finish reason a number": completion(
        choices=[{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": 7}]
    ),
}


class BrokenUpstream:
    """A loopback server answering every call with ``self.body`` (status 200)."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.calls = 0

        async def answer(request: Request) -> Response:
            self.calls += 1
            return Response(self.body, media_type="application/json")

        app = Starlette(
            routes=[
                Route("/v1/messages", answer, methods=["POST"]),
                Route("/v1/chat/completions", answer, methods=["POST"]),
            ]
        )
        self._sock = bind_socket("127.0.0.1", 0)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> BrokenUpstream:
        self._thread.start()
        while not self._server.started:
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenUpstream]:
    with BrokenUpstream() as server:
        yield server


def policy_text(broken: BrokenUpstream, up: FakeUpstream, provider: str, *, climb: bool) -> str:
    base = f"http://127.0.0.1:{broken.port}" + ("/v1" if provider == "openai" else "")
    text = f"""
version = 1
[[tiers]]
name = "cheap"
provider = "{provider}"
model = "broken-model"
base_url = "{base}"
api_key_env = "TW_KEY"
[prices.broken-model]
input = 1
output = 5
[retry]
attempts = 2
backoff_s = 0.0
max_backoff_s = 0.0
[defaults]
doubt = "cheap"
"""
    if climb:
        text += f"""
[[tiers]]
name = "mid"
provider = "anthropic"
model = "claude-sonnet-4-6"
base_url = "{up.base_url}"
api_key_env = "TW_KEY"
"""
    return text


@pytest.fixture(scope="module", params=["anthropic", "openai"])
def climbing(
    request: pytest.FixtureRequest,
    broken: BrokenUpstream,
    fake_upstream_server: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, GatewayServer]]:
    provider = str(request.param)
    policy = loads_policy(policy_text(broken, fake_upstream_server, provider, climb=True))
    ledger = tmp_path_factory.mktemp(f"bad-{provider}") / "ledger.db"
    config = GatewayConfig(policy=policy, ledger_url=str(ledger), env={"TW_KEY": "bad-reply-key"})
    with GatewayServer(config) as server:
        yield provider, server


def _reports_usage(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("usage") in (USAGE, OPENAI_USAGE)


def _cases(provider: str) -> dict[str, bytes]:
    return ANTHROPIC_REPLIES if provider == "anthropic" else OPENAI_REPLIES


def test_every_broken_reply_climbs_to_the_next_tier(
    climbing: tuple[str, GatewayServer], broken: BrokenUpstream, fake_upstream: FakeUpstream
) -> None:
    provider, gateway = climbing
    assert gateway.config.ledger_url is not None
    with (
        anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude,
        open_ledger(gateway.config.ledger_url, create=False) as ledger,
    ):
        for name, body in _cases(provider).items():
            broken.body, broken.calls = body, 0
            raw = claude.messages.with_raw_response.create(
                model="tierwise/auto",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
            )
            assert raw.status_code == 200, name
            assert raw.headers["x-tierwise-tier"] == "mid", name
            rows = ledger.attempts_of(raw.headers["x-tierwise-task-id"])
            outcomes = [(r["tier"], r["outcome"], r["error_class"]) for r in rows]
            assert broken.calls == 2, name  # retried once, as a bad response is retryable
            # A reply that said what it used was billed: each such call has its row and cost.
            billed = _reports_usage(body)
            tries = [("cheap", "error", "BadResponseError")] * (2 if billed else 1)
            assert outcomes == [*tries, ("mid", "accepted", None)], name
            costs = [Decimal(r["cost_usd"]) for r in rows[:-1]]
            assert costs == [BILLED if billed else Decimal(0)] * len(tries), name


def test_with_nowhere_to_climb_a_broken_reply_is_a_502_in_the_callers_shape(
    broken: BrokenUpstream, fake_upstream_server: FakeUpstream, tmp_path: Any
) -> None:
    policy = loads_policy(policy_text(broken, fake_upstream_server, "anthropic", climb=False))
    config = GatewayConfig(
        policy=policy, ledger_url=str(tmp_path / "l.db"), env={"TW_KEY": "bad-reply-key"}
    )
    broken.body = message(content="fine")
    with (
        GatewayServer(config) as gateway,
        anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        claude.messages.create(
            model="tierwise/auto", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    body = caught.value.response.json()
    assert body["type"] == "error" and "not a valid answer" in body["error"]["message"]


def test_an_answer_that_cannot_be_stored_as_text_is_recorded_escaped(
    fake_upstream: FakeUpstream, tmp_path: Any
) -> None:
    """A lone surrogate or a NUL in a paid answer once failed the commit and lost its rows."""
    from tierwise.testing import ModelScript
    from tierwise.testing.policies import DEFAULT_MODELS, TEST_KEY_ENV, upstream_policy_text

    odd = "odd \ud800 and \x00 end"
    for _, model in DEFAULT_MODELS:
        fake_upstream.set_script(model, ModelScript(reply=odd))
    text = "store_content = true\n" + upstream_policy_text(
        fake_upstream, extra="\n[budgets]\ntask_usd = 1\n"
    )
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(tmp_path / "l.db"), env={TEST_KEY_ENV: "k-12345"}
    )
    with (
        GatewayServer(config) as gateway,
        anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude,
    ):
        raw = claude.messages.with_raw_response.create(
            model="tierwise/auto", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.status_code == 200
    with open_ledger(config.ledger_url or "", create=False) as ledger:
        task_id = raw.headers["x-tierwise-task-id"]
        rows = ledger.attempts_of(task_id)
        assert [r["outcome"] for r in rows] == ["accepted"]
        assert rows[0]["output"] == "odd \\ud800 and \x00 end"  # NUL is valid text
        assert Decimal(rows[0]["cost_usd"]) > 0
        assert (ledger.task(task_id) or {})["outcome"] == "accepted"
        assert ledger.integrity_check() == []
