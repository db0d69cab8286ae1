"""No request, however malformed, gets a 5xx, and every error is in the caller's dialect.

Hypothesis sends several thousand bodies to each endpoint of a real gateway: valid requests
with one part replaced by arbitrary JSON, keys deleted or added, numbers pushed to extremes,
and raw bytes cut or spliced. The fake upstream answers whatever reaches it. A budget applies,
so reservations are exercised with whatever ``max_tokens`` gets through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

EXAMPLES = 2000

ANTHROPIC = {
    "model": "tierwise/auto",
    "max_tokens": 32,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And 3 + 3?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
            ],
        },
    ],
    "tools": [{"name": "calc", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "u1"},
    "stop_sequences": ["STOP"],
    "temperature": 0.5,
}
OPENAI = {
    "model": "tierwise/auto",
    "max_tokens": 32,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "tools": [{"type": "function", "function": {"name": "calc", "parameters": {}}}],
    "tool_choice": "auto",
    "stop": ["STOP"],
    "temperature": 0.5,
    "user": "u1",
    "metadata": {"a": "b"},
}
BASES = {"/v1/messages": ANTHROPIC, "/v1/chat/completions": OPENAI}

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, 2**31, 2**63, 10**12, 10**30, 1e30, -1e-9, 0.0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "text", "image", "tool_use", "user", "assistant", "auto"])
)
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["type", "text", "role"]), children, max_size=4
        )
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(body) if p]
        path = draw(st.sampled_from(paths))
        parent = body
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    raw = json.dumps(body).encode()
    if draw(st.integers(0, 9)) == 0:  # now and then, damage the bytes themselves
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8)) + raw[cut + draw(st.integers(0, 4)) :]
    return raw


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    text = upstream_policy_text(fake_upstream_server, extra="\n[budgets]\ntask_usd = 5\n")
    ledger = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    config = GatewayConfig(
        policy=loads_policy(text), ledger_url=str(ledger), env={TEST_KEY_ENV: "fuzz-key-123"}
    )
    fake_upstream_server.reset()
    with GatewayServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: GatewayServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway.base_url, timeout=30) as c:
        yield c


def check(client: httpx2.Client, path: str, raw: bytes) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, (raw[:400], response.text[:400])
    if response.status_code >= 400:
        body = response.json()
        if path == "/v1/messages":
            assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=mutated(ANTHROPIC))
def test_anthropic_endpoint_never_answers_5xx(client: httpx2.Client, raw: bytes) -> None:
    check(client, "/v1/messages", raw)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=mutated(OPENAI))
def test_openai_endpoint_never_answers_5xx(client: httpx2.Client, raw: bytes) -> None:
    check(client, "/v1/chat/completions", raw)


@pytest.mark.parametrize("path", sorted(BASES))
def test_the_unmutated_bodies_are_answered(client: httpx2.Client, path: str) -> None:
    """The fuzzing starts from requests the gateway serves, so mutations test the checks."""
    response = client.post(path, json=BASES[path])
    assert response.status_code == 200, response.text
