"""Test helpers shipped with tierwise: a scriptable fake upstream and a fake clock.

The fake upstream is a real HTTP server on loopback (uvicorn in a background thread, random free
port) speaking the Anthropic Messages API (``POST /v1/messages``, JSON and SSE) and the OpenAI
Chat Completions API (``POST /v1/chat/completions``, JSON and SSE with
``stream_options.include_usage``), plus ``GET /v1/models``. Reach it through the real SDKs::

    from tierwise.testing import FakeUpstream, ModelScript

    with FakeUpstream({"claude-haiku-4-5": ModelScript(behaviour="json", faults=("429",))}) as up:
        client = anthropic.Anthropic(base_url=up.base_url, api_key="test", max_retries=0)
        ...                                  # first call: 429 with retry-after; then JSON
        up.requests                          # every request received, credentials removed

Each model answers by its :class:`ModelScript`: a reply function of the request JSON (returning
text or a :class:`Reply`), a fixed text, or a canned behaviour — ``echo`` (the last user turn),
``json`` (``{"answer": ..., "confidence": 0.92}``), ``invalid_json``, ``low_confidence``
(``{"answer": ..., "confidence": 0.3}``), ``refusal`` (Anthropic ``stop_reason: refusal``,
OpenAI ``finish_reason: content_filter``, with a refusal sentence) and ``truncate`` (runs into
``max_tokens``: ``max_tokens`` / ``length``). Any reply longer than the request's
``max_tokens`` is cut there. Faults are served in order before answers (or on every request
with ``always``): ``429`` (``retry-after`` header), ``500``, ``503``, ``529`` (overloaded),
``400``/``401``/``403``/``404``, ``hang`` (no answer until the client gives up),
``malformed`` (200 with a non-JSON body), ``cut`` (connection closed half-way through the body
or stream). Error bodies have each API's shape.

Given a certificate (``FakeUpstream(ssl_certfile=...)``; :func:`make_tls` makes a throwaway CA
and a certificate for ``127.0.0.1`` with ``trustme``) it serves HTTPS instead, so clients are
tested with certificate checks on, trusting that CA.

Token counts are deterministic: :func:`count_tokens` is one token per started 4 characters (at
least 1). Input tokens are the sum over the request's text pieces (system, then each message's
text), reported as *uncached* input; ``cache_read_tokens`` and ``cache_write_tokens`` /
``cache_write_1h_tokens`` are added on top (Anthropic: ``cache_read_input_tokens``,
``cache_creation_input_tokens`` and the ``cache_creation`` breakdown; OpenAI:
``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``; OpenAI bills no cache
writes). Output tokens count the reply text plus each tool call's JSON input.

pytest fixtures (a session-wide server reset per test, a policy pointing at it, a fake clock)
are in :mod:`tierwise.testing.pytest_plugin`; :func:`upstream_policy` builds a policy whose tiers
the fake serves.

TOML scripts (``python -m tierwise.testing --port 8700 --script FILE.toml`` serves one; see
``example.toml`` next to this module)::

    require_key = "test"                # optional: 401 unless this key is sent

    [default]                           # models not listed; `default = false` answers 404
    behaviour = "echo"

    [models."claude-haiku-4-5"]
    behaviour = "json"                  # echo | json | invalid_json | low_confidence | ...
    latency_s = 0.05
    cache_read_tokens = 1200
    faults = ["429", "500", { kind = "429", retry_after = 2 }, "cut:always"]
    usage = { service_tier = "standard" }   # merged into the usage object
    chunks = 6                          # text deltas per stream
    chunk_delay_s = 0.02                # pause between stream events

    [[models."claude-haiku-4-5".when]]  # content rules, first match wins
    match = "(?i)invoice"               # a regex searched in the last user turn
    behaviour = "invalid_json"          # or: text = "a fixed answer"

    [models."gpt-4o-mini"]
    text = "calling a tool"             # a fixed answer ...
    tool_calls = [{ name = "lookup", input = { q = "weather" } }]
    # reply = "package.module:function" # ... or a reply function of the request JSON
"""

from __future__ import annotations

from tierwise.testing.arrival import TimedReply, timed_post
from tierwise.testing.clock import FakeClock
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy, upstream_policy_text
from tierwise.testing.script import (
    BEHAVIOURS,
    FAULT_KINDS,
    REFUSAL_TEXT,
    Fault,
    ModelScript,
    Reply,
    Script,
    ToolCall,
    When,
    count_tokens,
    input_tokens,
    last_user_text,
    load_script,
    output_tokens,
    parse_script,
    request_texts,
)
from tierwise.testing.server import FakeUpstream, RecordedRequest, TLSFiles, make_tls

__all__ = [
    "BEHAVIOURS",
    "FAULT_KINDS",
    "REFUSAL_TEXT",
    "TEST_KEY_ENV",
    "FakeClock",
    "FakeUpstream",
    "Fault",
    "ModelScript",
    "RecordedRequest",
    "Reply",
    "Script",
    "TLSFiles",
    "TimedReply",
    "ToolCall",
    "When",
    "count_tokens",
    "input_tokens",
    "last_user_text",
    "load_script",
    "make_tls",
    "output_tokens",
    "parse_script",
    "request_texts",
    "timed_post",
    "upstream_policy",
    "upstream_policy_text",
]
