"""The fake upstream's scripting, recording, TOML format, standalone runner and fake clock."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tierwise.testing import (
    FakeClock,
    FakeUpstream,
    Fault,
    ModelScript,
    TLSFiles,
    When,
    count_tokens,
    load_script,
    parse_script,
)


def ask(up: FakeUpstream, model: str, text: str, key: str = "test", **kw: Any) -> Any:
    with anthropic.Anthropic(base_url=up.base_url, api_key=key, max_retries=0, timeout=5) as c:
        return c.messages.create(
            model=model,
            max_tokens=kw.pop("max_tokens", 100),
            messages=[{"role": "user", "content": text}],
            **kw,
        )


def test_token_count_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [count_tokens(s) for s in ["", "a", "abcd", "abcde", "x" * 400]] == [1, 1, 1, 2, 100]


def test_requests_are_recorded_without_credentials(fake_upstream: FakeUpstream) -> None:
    ask(fake_upstream, "m", "hello", key="sk-ant-very-secret-key", metadata={"user_id": "u1"})
    [req] = fake_upstream.requests
    assert req.api == "anthropic"
    assert req.path == "/v1/messages"
    assert req.model == "m"
    assert req.body["metadata"] == {"user_id": "u1"}
    assert "x-api-key" not in req.headers
    assert "anthropic-version" in req.headers
    assert "sk-ant-very-secret-key" not in json.dumps(dict(req.headers))


def test_bearer_tokens_are_not_recorded(fake_upstream: FakeUpstream) -> None:
    httpx2.post(
        fake_upstream.openai_base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sk-secret-bearer"},
    ).raise_for_status()
    [req] = fake_upstream.requests
    assert req.api == "openai"
    assert "authorization" not in req.headers


def test_required_key_answers_401_otherwise(fake_upstream: FakeUpstream) -> None:
    fake_upstream.require_key = "right-key"
    try:
        with pytest.raises(anthropic.AuthenticationError):
            ask(fake_upstream, "m", "hi", key="wrong-key")
        assert ask(fake_upstream, "m", "hi", key="right-key").content[0].text == "hi"
    finally:
        fake_upstream.require_key = None


def test_unknown_model_is_404_when_there_is_no_default(fake_upstream: FakeUpstream) -> None:
    fake_upstream.reset({"known": "echo"}, default=None)
    with pytest.raises(anthropic.NotFoundError) as caught:
        ask(fake_upstream, "unknown", "hi")
    assert "unknown" in str(caught.value)
    assert ask(fake_upstream, "known", "hi").content[0].text == "hi"


def test_bad_request_bodies_get_400_in_the_callers_dialect(fake_upstream: FakeUpstream) -> None:
    r = httpx2.post(fake_upstream.base_url + "/v1/messages", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx2.post(fake_upstream.openai_base_url + "/chat/completions", json={"messages": []})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_faults_are_served_in_order_then_answers(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_script("m", ModelScript(faults=("529", Fault("429", retry_after=3), "500")))
    for error in (
        anthropic.OverloadedError,
        anthropic.RateLimitError,
        anthropic.InternalServerError,
    ):
        with pytest.raises(error):
            ask(fake_upstream, "m", "hi")
    assert ask(fake_upstream, "m", "hi").content[0].text == "hi"
    assert [r.fault for r in fake_upstream.requests_for("m")] == ["529", "429", "500", None]


def test_content_rules_pick_the_answer_before_the_behaviour(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_script(
        "m",
        ModelScript(
            behaviour="json",
            when=(When(match="(?i)invoice", behaviour="invalid_json"), When("hello", text="hi!")),
        ),
    )
    assert ask(fake_upstream, "m", "hello there").content[0].text == "hi!"
    bad = ask(fake_upstream, "m", "Parse INVOICE 7").content[0].text
    with pytest.raises(ValueError):
        json.loads(bad)
    good = ask(fake_upstream, "m", "Summarise the memo").content[0].text
    assert json.loads(good)["answer"] == "Summarise the memo"


def test_reply_longer_than_max_tokens_is_cut_there(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_script("m", ModelScript(reply="word " * 100))
    msg = ask(fake_upstream, "m", "go", max_tokens=10)
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 10
    assert msg.content[0].text == ("word " * 100)[:40]


def test_a_failing_reply_function_is_a_visible_500(fake_upstream: FakeUpstream) -> None:
    def reply(request: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    fake_upstream.set_script("m", ModelScript(reply=reply))
    with pytest.raises(anthropic.InternalServerError) as caught:
        ask(fake_upstream, "m", "hi")
    assert "RuntimeError: boom" in str(caught.value)


def test_latency_delays_the_answer_past_a_short_client_timeout(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_script("slow", ModelScript(latency_s=2.0))
    with (
        anthropic.Anthropic(
            base_url=fake_upstream.base_url, api_key="t", max_retries=0, timeout=0.2
        ) as c,
        pytest.raises(anthropic.APITimeoutError),
    ):
        c.messages.create(model="slow", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_invalid_scripts_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unknown behaviour 'jsn'"):
        ModelScript(behaviour="jsn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fault '418'"):
        Fault.parse("418")
    with pytest.raises(ValueError, match=r"models\.'m'.*unknown key"):
        parse_script('[models.m]\nbehavior = "json"\n')
    with pytest.raises(ValueError, match="unknown top-level"):
        parse_script('[model.m]\nbehaviour = "json"\n')
    with pytest.raises(ValueError, match="<script>"):
        parse_script("[models.m\n")


def test_toml_script_round_trip() -> None:
    script = parse_script(
        """
require_key = "k"
default = false

[models."cheap"]
behaviour = "json"
latency_s = 0.01
cache_read_tokens = 12
faults = ["429", { kind = "500", always = true }, "cut:always"]
usage = { service_tier = "priority" }

[[models."cheap".when]]
match = "invoice"
behaviour = "invalid_json"

[models."tool"]
text = "calling"
tool_calls = [{ name = "f", input = { a = 1 } }]
"""
    )
    assert script.default is None
    assert script.require_key == "k"
    cheap = script.models["cheap"]
    assert cheap.behaviour == "json" and cheap.cache_read_tokens == 12
    assert [(f.kind, f.always) for f in cheap.fault_list()] == [
        ("429", False),
        ("500", True),
        ("cut", True),
    ]
    assert cheap.when == (When(match="invoice", behaviour="invalid_json"),)
    assert cheap.usage == {"service_tier": "priority"}
    tool = script.models["tool"].answer({"messages": []})
    assert tool.text == "calling" and tool.tool_calls[0].name == "f"
    assert tool.stop_reason == "tool_use"


def test_reply_function_reference_in_toml_is_imported() -> None:
    script = parse_script('[models.m]\nreply = "tierwise.testing.script:last_user_text"\n')
    reply = script.models["m"].answer({"messages": [{"role": "user", "content": "pong"}]})
    assert reply.text == "pong"


def test_bundled_example_script_loads_and_serves() -> None:
    path = resources.files("tierwise.testing").joinpath("example.toml")
    script = load_script(Path(str(path)))
    assert {"claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"} <= set(script.models)
    with FakeUpstream(script) as up:
        with pytest.raises(anthropic.RateLimitError):  # the example's first haiku call
            ask(up, "claude-haiku-4-5", "Extract the total")
        text = ask(up, "claude-haiku-4-5", "Extract the total from invoice 4").content[0].text
        with pytest.raises(ValueError):
            json.loads(text)  # invoices fail on the cheap model by the script's rule
        assert json.loads(ask(up, "claude-sonnet-4-6", "Extract the total").content[0].text)


def test_standalone_runner_serves_until_interrupted(tmp_path: Path) -> None:
    script = tmp_path / "s.toml"
    script.write_text('[models."x"]\ntext = "from the script"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise.testing", "--port", "0", "--script", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "simulated" in first
        base_url = first.rsplit(" ", 1)[-1].strip()
        with anthropic.Anthropic(base_url=base_url, api_key="t", max_retries=0, timeout=5) as c:
            msg = c.messages.create(
                model="x", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
            )
        assert msg.content[0].type == "text" and msg.content[0].text == "from the script"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_standalone_runner_rejects_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.toml"
    script.write_text('[models."x"]\nbehaviour = "nope"\n')
    out = subprocess.run(
        [sys.executable, "-m", "tierwise.testing", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown behaviour 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=10)
    assert clock() == 10
    clock.sleep(2.5)
    clock.advance(1)
    assert clock() == 13.5
    assert clock.slept == [2.5]
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_fake_clock_async_sleep_records_the_wait() -> None:
    clock = FakeClock()
    await clock.asleep(4)
    assert clock() == 4 and clock.slept == [4]


def test_serves_https_to_the_sdks_with_the_certificate_trusted(
    fake_upstream_tls: FakeUpstream, upstream_tls: TLSFiles
) -> None:
    assert fake_upstream_tls.base_url.startswith("https://127.0.0.1:")
    http = httpx2.Client(verify=upstream_tls.client_context())
    with anthropic.Anthropic(
        base_url=fake_upstream_tls.base_url, api_key="k", max_retries=0, http_client=http
    ) as client:
        reply = client.messages.create(
            model="m", max_tokens=20, messages=[{"role": "user", "content": "secure hello"}]
        )
    assert reply.content[0].text == "secure hello"  # type: ignore[union-attr]
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx2.get(f"{fake_upstream_tls.base_url}/v1/models", verify=ssl.create_default_context())


def test_requests_record_the_connection_they_came_on(fake_upstream: FakeUpstream) -> None:
    with httpx2.Client() as one:
        for _ in range(2):
            one.get(f"{fake_upstream.base_url}/v1/models").raise_for_status()
    httpx2.get(f"{fake_upstream.base_url}/v1/models").raise_for_status()
    first, second, third = (r.peer for r in fake_upstream.requests)
    assert first is not None and first[0] == "127.0.0.1"
    assert first == second != third


def test_a_bad_certificate_is_refused_with_the_reason(tmp_path: Path) -> None:
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(RuntimeError, match="cannot serve HTTPS"):
        FakeUpstream(ssl_certfile=not_pem).start()
    with pytest.raises(ValueError, match="ssl_keyfile needs ssl_certfile"):
        FakeUpstream(ssl_keyfile=not_pem)
