"""An upstream that reflects the gateway's upstream key never gets it to a caller, a log or a row.

A loopback server plays an upstream that echoes the key it receives in every field it returns:
the request-id header, error messages, the answer's text, id and model, and stream events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer, bind_socket
from tierwise.policy import loads_policy

SECRET = "reflected-upstream-secret-0123456789"  # not key-shaped: only the exact value is known


EMPTY_TEXT = {"type": "text", "text": ""}


def _delta(text: str) -> dict[str, str]:
    return {"type": "text_delta", "text": text}


async def _reflect(request: Request) -> Response:
    key = request.headers.get("x-api-key", "")
    body = await request.json()
    text = json.dumps(body["messages"][-1]["content"])
    headers = {"request-id": f"req-{key}"}
    if "fail-400" in text or "fail-500" in text:
        status = 400 if "fail-400" in text else 500
        error = {"type": "error", "error": {"type": "invalid_request_error", "message": key}}
        return Response(json.dumps(error), status, headers=headers, media_type="application/json")
    usage = {"input_tokens": 5, "output_tokens": 5}
    if body.get("stream"):
        message = {"id": key, "type": "message", "role": "assistant", "model": key, "content": []}
        events = [
            ("message_start", {"type": "message_start", "message": {**message, "usage": usage}}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": key},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        wire = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events)
        return Response(wire, headers=headers, media_type="text/event-stream")
    answer = {
        "id": key,
        "type": "message",
        "role": "assistant",
        "model": key,
        "content": [{"type": "text", "text": f"your key is {key}"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }
    return Response(json.dumps(answer), headers=headers, media_type="application/json")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    app = Starlette(routes=[Route("/v1/messages", _reflect, methods=["POST"])])
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    policy = loads_policy(
        f"""
version = 1
store_content = true
[[tiers]]
name = "only"
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "http://127.0.0.1:{sock.getsockname()[1]}"
api_key_env = "REFLECT_KEY"
[retry]
attempts = 1
"""
    )
    ledger = tmp_path_factory.mktemp("secrets") / "ledger.db"
    config = GatewayConfig(policy=policy, ledger_url=str(ledger), env={"REFLECT_KEY": SECRET})
    with GatewayServer(config) as gw:
        yield gw
    server.should_exit = True
    thread.join(10)
    sock.close()


def _visible(response: object) -> str:
    """Everything a caller can see of an HTTP response: status line, headers, body."""
    headers = getattr(response, "headers", {})
    text = getattr(response, "text", "")
    return json.dumps(dict(headers)) + str(text)


@pytest.mark.parametrize("prompt", ["hello", "fail-400", "fail-500"])
def test_the_key_never_reaches_an_anthropic_caller(
    gateway: GatewayServer, prompt: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude:
        try:
            raw = claude.messages.with_raw_response.create(
                model="tierwise/auto", max_tokens=16, messages=[{"role": "user", "content": prompt}]
            )
            seen = _visible(raw.http_response)
        except anthropic.APIStatusError as exc:
            seen = _visible(exc.response)
    assert SECRET not in seen
    assert "[redacted]" in seen
    assert SECRET not in caplog.text


def test_the_key_never_reaches_a_streaming_or_translated_caller(gateway: GatewayServer) -> None:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude:
        with claude.messages.with_streaming_response.create(
            model="tierwise/auto",
            max_tokens=16,
            stream=True,
            messages=[{"role": "user", "content": "hi"}],
        ) as raw:
            wire = raw.read().decode()
        assert SECRET not in wire and "[redacted]" in wire
    with openai.OpenAI(base_url=gateway.openai_base_url, api_key="x", max_retries=0) as gpt:
        done = gpt.chat.completions.with_raw_response.create(
            model="tierwise/auto", messages=[{"role": "user", "content": "hi"}]
        )
        assert SECRET not in _visible(done.http_response)


def test_the_key_is_in_no_ledger_row(gateway: GatewayServer) -> None:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0) as claude:
        for prompt in ("hello", "fail-400", "fail-500"):
            with contextlib.suppress(anthropic.APIStatusError):
                claude.messages.create(
                    model="tierwise/auto",
                    max_tokens=16,
                    messages=[{"role": "user", "content": prompt}],
                )
    assert gateway.config.ledger_url is not None
    gateway.stop()  # everything committed and the WAL checkpointed into the file
    raw = b"".join(p.read_bytes() for p in Path(gateway.config.ledger_url).parent.iterdir())
    assert SECRET.encode() not in raw
