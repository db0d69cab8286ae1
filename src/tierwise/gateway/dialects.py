"""The two request dialects the gateway speaks: parsed views, error bodies, stop reasons, usage.

The gateway never forwards these views. It keeps the caller's original JSON (a ``dict``) and
validates it against a *view* — a pydantic model with ``extra="allow"`` that checks only what
the gateway reads (so fields a newer SDK adds pass through untouched) and turns wrong types or
missing fields into a 400 naming the field (``messages[2].content: ...``).

Both dialects answer errors in their own exact shape:

* Anthropic: ``{"type": "error", "error": {"type": "invalid_request_error", "message": "..."}}``
* OpenAI: ``{"error": {"message": "...", "type": "...", "param": ..., "code": ...}}``
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tierwise.providers.base import neutral_stop_reason as neutral_stop_reason

Dialect = Literal["anthropic", "openai"]
DIALECTS: tuple[Dialect, ...] = ("anthropic", "openai")

__all__ = [
    "DIALECTS",
    "AnthropicBlock",
    "AnthropicMessage",
    "AnthropicRequest",
    "AnthropicTool",
    "Dialect",
    "OpenAIMessage",
    "OpenAIRequest",
    "OpenAITool",
    "RequestError",
    "RequestView",
    "anthropic_usage_to_openai",
    "error_body",
    "finish_reason_to_stop_reason",
    "neutral_stop_reason",
    "openai_usage_to_anthropic",
    "parse_request",
    "stop_reason_to_finish_reason",
]


class RequestError(ValueError):
    """A request the gateway refuses: an HTTP status, a message naming the field, extra headers."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


# -- parsed views --------------------------------------------------------------------------------


class _View(BaseModel):
    """A lenient view: unknown fields are kept (and ignored), known ones are type-checked."""

    model_config = ConfigDict(extra="allow", strict=True)


_ANTHROPIC_BLOCK_NEEDS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "image": ("source",),
    "document": ("source",),
    "tool_use": ("id", "name", "input"),
    "tool_result": ("tool_use_id",),
    "thinking": ("thinking",),
}


class AnthropicBlock(_View):
    """One content block (``text``, ``image``, ``tool_use``, ``tool_result``, ... or newer)."""

    type: str

    @model_validator(mode="after")
    def _has_fields(self) -> AnthropicBlock:
        extra = self.model_extra or {}
        for name in _ANTHROPIC_BLOCK_NEEDS.get(self.type, ()):
            if name not in extra:
                raise ValueError(f"a {self.type} block needs the field {name!r}")
        if self.type == "text" and not isinstance(extra["text"], str):
            raise ValueError("a text block's 'text' must be a string")
        if self.type == "tool_use" and not isinstance(extra["input"], dict):
            raise ValueError("a tool_use block's 'input' must be an object")
        return self


class AnthropicMessage(_View):
    """One turn of an Anthropic conversation."""

    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]


class AnthropicTool(_View):
    """A tool definition: a custom tool (``input_schema``) or a server tool (``type``)."""

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicRequest(_View):
    """The fields of a Messages API request that the gateway reads."""

    model: str
    max_tokens: int = Field(ge=0)
    messages: list[AnthropicMessage]
    system: str | list[AnthropicBlock] | None = None
    stream: bool | None = None
    tools: list[AnthropicTool] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None


class OpenAIPart(_View):
    """One part of a multi-part OpenAI message (``text``, ``image_url``, ...)."""

    type: str

    @model_validator(mode="after")
    def _has_fields(self) -> OpenAIPart:
        extra = self.model_extra or {}
        if self.type == "text" and not isinstance(extra.get("text"), str):
            raise ValueError("a text part needs a string field 'text'")
        if self.type == "image_url" and not isinstance(extra.get("image_url"), dict):
            raise ValueError("an image_url part needs an object field 'image_url'")
        return self


class OpenAIFunctionCall(_View):
    name: str
    arguments: str


class OpenAIToolCall(_View):
    """A tool call the assistant made in an earlier turn."""

    id: str
    type: str = "function"
    function: OpenAIFunctionCall


class OpenAIMessage(_View):
    """One message of an OpenAI conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[OpenAIPart] | None = None
    name: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _role_fields(self) -> OpenAIMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the field 'tool_call_id'")
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs the field 'content'")
        return self


class OpenAIFunctionDef(_View):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class OpenAITool(_View):
    """A tool definition (``{"type": "function", "function": {...}}``)."""

    type: str
    function: OpenAIFunctionDef | None = None


class OpenAIStreamOptions(_View):
    include_usage: bool | None = None


class OpenAIRequest(_View):
    """The fields of a Chat Completions request that the gateway reads."""

    model: str
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: OpenAIStreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[OpenAITool] | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    temperature: float | None = None


_VIEWS: dict[Dialect, type[AnthropicRequest] | type[OpenAIRequest]] = {
    "anthropic": AnthropicRequest,
    "openai": OpenAIRequest,
}

# Loc entries pydantic adds for union members and validators; never field names in either API.
_TAG_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_tag(part: str | int) -> bool:
    return isinstance(part, str) and (part in _TAG_NAMES or "[" in part)


def field_path(loc: tuple[str | int, ...]) -> str:
    """``('messages', 0, 'content')`` → ``messages[0].content`` (union tags dropped)."""
    out = ""
    for part in loc:
        if _is_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """One line naming the field and what was wrong, and the field path (for ``param``).

    Of a union's alternatives the one that got furthest is reported; alternatives that failed
    at the same depth are joined with "or".
    """
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    by_path: dict[str, list[str]] = {}
    depth: dict[str, int] = {}
    for err in errors:
        path = field_path(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        by_path.setdefault(path, [])
        if msg not in by_path[path]:
            by_path[path].append(msg)
        depth[path] = len([p for p in err["loc"] if not _is_tag(p)])
    # The first error's root decides which field we talk about; then the deepest under it.
    first = field_path(tuple(errors[0]["loc"])) if errors else ""
    root = first.split(".")[0].split("[")[0]
    candidates = [p for p in by_path if p.split(".")[0].split("[")[0] == root] or [first]
    path = max(candidates, key=lambda p: (depth.get(p, 0), -candidates.index(p)))
    msgs = by_path.get(path, ["invalid value"])
    strip = "Input should be " if msgs[0].startswith("Input should be ") else ""
    joined = " or ".join([msgs[0], *(m.removeprefix(strip) for m in msgs[1:])])
    return f"{path or 'body'}: {joined}", path


RequestView = AnthropicRequest | OpenAIRequest


def parse_request(dialect: Dialect, body: bytes) -> tuple[dict[str, Any], RequestView]:
    """Decode a request body and check it against the dialect's view.

    Returns the caller's JSON object (to forward, possibly with ``model`` replaced) and the
    parsed view (to read).

    Raises:
        RequestError: the body is not a JSON object, or a field has the wrong type or is missing.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        found = type(data).__name__
        raise RequestError(f"the request body must be a JSON object, found a JSON {found}")
    try:
        view = _VIEWS[dialect].model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise RequestError(message, param=param or None) from None
    return data, view


# -- error bodies ------------------------------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("insufficient_quota", "insufficient_quota"),
    502: ("server_error", "upstream_error"),
    503: ("server_error", None),
}


def error_body(
    dialect: Dialect,
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error in the dialect's exact shape for HTTP *status*."""
    if dialect == "anthropic":
        etype = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": etype, "message": message}}
    default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    otype, ocode = _OPENAI_ERROR_TYPES.get(status, default)
    return {"error": {"message": message, "type": otype, "param": param, "code": code or ocode}}


# -- stop reasons -----------------------------------------------------------------------------

_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason_to_finish_reason(stop_reason: str | None) -> str:
    """An Anthropic ``stop_reason`` as an OpenAI ``finish_reason``."""
    return _TO_FINISH.get(stop_reason or "", "stop")


def finish_reason_to_stop_reason(finish_reason: str | None) -> str:
    """An OpenAI ``finish_reason`` as an Anthropic ``stop_reason``."""
    return _TO_STOP.get(finish_reason or "", "end_turn")


# -- usage bodies ------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage_to_openai(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage as OpenAI reports it (prompt tokens include cache reads and writes)."""
    u = usage or {}
    cached = _int(u.get("cache_read_input_tokens"))
    prompt = _int(u.get("input_tokens")) + _int(u.get("cache_creation_input_tokens")) + cached
    completion = _int(u.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def openai_usage_to_anthropic(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage as Anthropic reports it (input tokens exclude cache reads)."""
    u = usage or {}
    details = u.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(_int(u.get("prompt_tokens")) - cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": _int(u.get("completion_tokens")),
    }
