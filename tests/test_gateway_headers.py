"""``x-tierwise-*`` request headers on the default policy: attributes route, typos are refused."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.policy import default_policy
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, served_by

PROMPT = [{"role": "user", "content": "Move the billing helpers into their own module."}]


@pytest.fixture(scope="module")
def gateway(
    fake_upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    policy = served_by(default_policy(), fake_upstream_server)
    ledger = tmp_path_factory.mktemp("headers") / "ledger.db"
    config = GatewayConfig(
        policy=policy, ledger_url=str(ledger), env={TEST_KEY_ENV: "header-test-key"}
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def claude(gateway: GatewayServer, fake_upstream: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.mark.parametrize(
    ("attr", "tier"),
    [("files=5", "strong"), ("files=2", "mid"), ("files=5, severity=4", "strong")],
)
def test_attributes_in_a_header_reach_the_router(
    claude: anthropic.Anthropic, attr: str, tier: str
) -> None:
    """The default policy sends refactors over 3 files to the strong tier, as `route --attr`."""
    raw = claude.messages.with_raw_response.create(
        model="tierwise/refactor",
        max_tokens=64,
        messages=PROMPT,
        extra_headers={"x-tierwise-attr": attr},
    )
    assert raw.headers["x-tierwise-tier"] == tier


def test_the_route_command_and_the_gateway_agree(claude: anthropic.Anthropic) -> None:
    from tierwise.routing import Router
    from tierwise.task import Task

    decision = Router(default_policy()).route(Task.create("refactor", "x", files=5))
    raw = claude.messages.with_raw_response.create(
        model="tierwise/refactor",
        max_tokens=64,
        messages=PROMPT,
        extra_headers={"x-tierwise-attr": "files=5"},
    )
    assert raw.headers["x-tierwise-tier"] == decision.tier == "strong"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("files=many", "files must be an integer"),
        ("file=2", "unknown attribute 'file'"),
        ("severity=9", "severity must be 1 to 5"),
        ("scope=singlefile", "did you mean 'single-file'?"),
        ("files", "expected key=value"),
    ],
)
def test_a_bad_attribute_is_a_400_naming_it(
    claude: anthropic.Anthropic, value: str, message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model="tierwise/refactor",
            max_tokens=64,
            messages=PROMPT,
            extra_headers={"x-tierwise-attr": value},
        )
    assert "x-tierwise-attr" in str(caught.value) and message in str(caught.value)


def test_an_unknown_tierwise_header_is_a_400_naming_it(gateway: GatewayServer) -> None:
    """A typo (``annotate`` for ``annotations``) must not be silently ignored."""
    with (
        openai.OpenAI(base_url=gateway.openai_base_url, api_key="unused", max_retries=0) as gpt,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        gpt.chat.completions.create(
            model="tierwise/auto",
            messages=PROMPT,  # type: ignore[arg-type]
            extra_headers={"x-tierwise-annotate": "[domain: docs]"},
        )
    assert "x-tierwise-annotate" in str(caught.value)
    assert caught.value.response.json()["error"]["type"] == "invalid_request_error"
