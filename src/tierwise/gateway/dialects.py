"""The two dialects the gateway speaks: the request error, error bodies, stop reasons, usage.

Requests are decoded and checked in :mod:`tierwise.gateway.schema`. Both dialects answer
errors in their own exact shape:

* Anthropic: ``{"type": "error", "error": {"type": "invalid_request_error", "message": "..."}}``
* OpenAI: ``{"error": {"message": "...", "type": "...", "param": ..., "code": ...}}``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from tierwise.providers.base import neutral_stop_reason as neutral_stop_reason

Dialect = Literal["anthropic", "openai"]
DIALECTS: tuple[Dialect, ...] = ("anthropic", "openai")

__all__ = [
    "DIALECTS",
    "Dialect",
    "RequestError",
    "anthropic_usage_to_openai",
    "error_body",
    "finish_reason_to_stop_reason",
    "neutral_stop_reason",
    "openai_usage_to_anthropic",
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
