"""Every path through the gateway agrees: one attempt loop, one error mapping.

The matrix: caller dialect × (unstreamed, buffered stream, passthrough stream) × (``tierwise/auto``,
``tierwise/KIND``, a concrete model) × what the bottom tier's upstream does (answers, 429, 500,
404, cuts its reply, fails validation). One function below says what every combination must
give — status, error shape, tier, attempts and ledger rows — from three facts: whether the model
was named (no climb, no validation), whether the answer is relayed live (no validation; a cut
after the first byte is a ``partial``), and whether validators run. The ledger is the judge of
attempts: each case reads its task's rows back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import Ledger, open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, Fault, ModelScript

CHEAP, MID = "claude-haiku-4-5", "gpt-4o-mini"
GOOD = '{"ok": true}'

POLICY = """
version = 1

[[tiers]]
name = "cheap"
provider = "anthropic"
model = "{cheap}"
base_url = "{anthropic_url}"
api_key_env = "TW_TEST_KEY"

[[tiers]]
name = "mid"
provider = "openai"
model = "{mid}"
base_url = "{openai_url}"
api_key_env = "TW_TEST_KEY"

[retry]
attempts = 2
backoff_s = 0.0
max_backoff_s = 0.0

[validators.json]
type = "json"

[defaults]
doubt = "cheap"

[kinds.checked]
validators = ["json"]
stream = "buffer"

[kinds.relayed]
validators = ["json"]
stream = "passthrough"
"""

DIALECTS = ("anthropic", "openai")
MODES = ("unstreamed", "buffered", "passthrough")
ROUTES = ("auto", "kind", "model")
SCENARIOS = ("ok", "429", "500", "404", "cut", "invalid")


@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP status of the response
    tier: str | None  # the tier that answered
    rows: tuple[tuple[str, str], ...]  # (tier, outcome) of each attempt in the ledger
    broken: bool = False  # a 200 stream that ends with an error event


def expected(scenario: str, mode: str, route: str) -> Outcome:
    """What every path must do, from three facts about the request."""
    named = route == "model"  # a concrete model: no routing, no climb, no validators
    bottom = "passthrough" if named else "cheap"  # named models are never recorded as a tier
    live = mode == "passthrough" or (named and mode != "unstreamed")
    validated = not named and not live
    climbed = Outcome(200, "mid", (("cheap", "error"), ("mid", "accepted")))
    if scenario == "ok":
        return Outcome(200, bottom, ((bottom, "accepted"),))
    if scenario == "invalid":
        if validated:
            return Outcome(200, "mid", (("cheap", "rejected"), ("mid", "accepted")))
        return Outcome(200, bottom, ((bottom, "accepted"),))
    if scenario == "cut":
        if live:
            return Outcome(200, bottom, ((bottom, "partial"),), broken=True)
        if named:
            return Outcome(502, None, ((bottom, "error"),))
        if mode == "buffered":  # a stream cut after it started was billed: both tries are rows
            return Outcome(
                200, "mid", (("cheap", "error"), ("cheap", "error"), ("mid", "accepted"))
            )
        return climbed
    if named:
        status = {"429": 429, "500": 502, "404": 404}[scenario]
        return Outcome(status, None, ((bottom, "error"),))
    return climbed


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    policy = loads_policy(
        POLICY.format(
            cheap=CHEAP,
            mid=MID,
            anthropic_url=fake_upstream_server.base_url,
            openai_url=fake_upstream_server.openai_base_url,
        )
    )
    ledger = tmp_path_factory.mktemp("matrix") / "ledger.db"
    config = GatewayConfig(
        policy=policy, ledger_url=str(ledger), env={"TW_TEST_KEY": "matrix-upstream-key"}
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def ledger(gateway: GatewayServer) -> Iterator[Ledger]:
    assert gateway.config.ledger_url is not None
    with open_ledger(gateway.config.ledger_url, create=False) as book:
        yield book


@pytest.fixture(scope="module")
def clients(gateway: GatewayServer) -> Iterator[tuple[anthropic.Anthropic, openai.OpenAI]]:
    with (
        anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0) as a,
        openai.OpenAI(base_url=gateway.openai_base_url, api_key="unused", max_retries=0) as o,
    ):
        yield a, o


def script(up: FakeUpstream, scenario: str) -> None:
    """The bottom tier does *scenario*; the tier above always answers well."""
    up.reset()
    up.set_script(MID, ModelScript(reply=GOOD))
    if scenario in ("ok", "invalid"):
        up.set_script(CHEAP, ModelScript(reply=GOOD if scenario == "ok" else "not json"))
        return
    fault = Fault(scenario, always=True, retry_after=0)  # type: ignore[arg-type]
    up.set_script(CHEAP, ModelScript(reply=GOOD, faults=(fault,)))


@dataclass
class Seen:
    status: int
    headers: dict[str, str]
    text: str
    error: dict[str, Any] | None = None
    broken: bool = False


def send(
    clients: tuple[anthropic.Anthropic, openai.OpenAI], dialect: str, mode: str, route: str
) -> Seen:
    claude, gpt = clients
    kind = "relayed" if mode == "passthrough" else "checked"
    model = {"auto": "tierwise/auto", "kind": f"tierwise/{kind}", "model": CHEAP}[route]
    headers = {"x-tierwise-kind": kind} if route == "auto" else {}
    stream = mode != "unstreamed"
    prompt = [{"role": "user", "content": "Give me the JSON."}]
    try:
        if dialect == "anthropic":
            if not stream:
                raw = claude.messages.with_raw_response.create(
                    model=model, max_tokens=64, messages=prompt, extra_headers=headers
                )
                message = raw.parse()
                text = "".join(b.text for b in message.content if b.type == "text")
                return Seen(raw.status_code, dict(raw.headers), text)
            with claude.messages.create(
                model=model, max_tokens=64, messages=prompt, stream=True, extra_headers=headers
            ) as events:
                seen = Seen(events.response.status_code, dict(events.response.headers), "")
                try:
                    for event in events:
                        if event.type == "content_block_delta" and event.delta.type == "text_delta":
                            seen.text += event.delta.text
                except anthropic.APIStatusError as exc:
                    seen.broken, seen.error = True, exc.body  # type: ignore[assignment]
                return seen
        if not stream:
            raw_o = gpt.chat.completions.with_raw_response.create(
                model=model, messages=prompt, max_tokens=64, extra_headers=headers
            )
            completion = raw_o.parse()
            text = completion.choices[0].message.content or ""
            return Seen(raw_o.status_code, dict(raw_o.headers), text)
        with gpt.chat.completions.create(
            model=model, messages=prompt, max_tokens=64, stream=True, extra_headers=headers
        ) as chunks:
            seen = Seen(chunks.response.status_code, dict(chunks.response.headers), "")
            try:
                for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        seen.text += chunk.choices[0].delta.content
            except openai.APIError as exc:
                seen.broken, seen.error = True, exc.body  # type: ignore[assignment]
            return seen
    except (anthropic.APIStatusError, openai.APIStatusError) as exc:
        body = json.loads(exc.response.text)
        return Seen(exc.status_code, dict(exc.response.headers), "", error=body)


def assert_error_shape(dialect: str, body: dict[str, Any] | None, *, streamed: bool) -> None:
    assert body is not None
    if dialect == "openai" and streamed:  # the SDK hands over the event's inner error object
        body = {"error": body}
    if dialect == "anthropic":
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
    else:
        assert set(body["error"]) >= {"message", "type", "param", "code"}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_path_agrees(
    fake_upstream: FakeUpstream,
    gateway: GatewayServer,
    clients: tuple[anthropic.Anthropic, openai.OpenAI],
    ledger: Ledger,
    dialect: str,
    mode: str,
    route: str,
    scenario: str,
) -> None:
    want = expected(scenario, mode, route)
    script(fake_upstream, scenario)
    seen = send(clients, dialect, mode, route)

    assert seen.status == want.status, seen.error
    task_id = seen.headers["x-tierwise-task-id"]
    rows = ledger.attempts_of(task_id)
    assert tuple((r["tier"], r["outcome"]) for r in rows) == want.rows
    assert seen.broken == want.broken
    if want.status != 200:
        assert_error_shape(dialect, seen.error, streamed=False)
        # an error says what the request cost so far, and which tier it reached
        assert seen.headers["x-tierwise-attempts"] == str(len(want.rows))
        assert seen.headers["x-tierwise-tier"] == want.rows[-1][0]
        assert seen.headers["x-should-retry"] == ("true" if want.status == 429 else "false")
        return
    assert seen.headers["x-tierwise-tier"] == want.tier
    if want.broken:
        assert_error_shape(dialect, seen.error, streamed=True)
        assert (ledger.task(task_id) or {})["outcome"] == "error"
        return
    expected_text = "not json" if scenario == "invalid" and want.tier != "mid" else GOOD
    assert seen.text == expected_text
    task = ledger.task(task_id) or {}
    assert task["outcome"] == "accepted" and task["final_tier"] == want.tier
    if mode == "unstreamed":  # streams carry attempts and cost in their trailer instead
        assert seen.headers["x-tierwise-attempts"] == str(len(want.rows))
