"""The OpenAI provider: Chat Completions through the official ``openai`` SDK.

Works with any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, hosted gateways): point
``base_url`` at its ``/v1`` root.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from tierwise.providers._sdk import SDKProvider
from tierwise.providers.base import (
    Completion,
    CompletionRequest,
    MaxTokensParam,
    StopReason,
    neutral_stop_reason,
    openai_max_tokens_param,
)
from tierwise.providers.errors_map import bad_response

if TYPE_CHECKING:
    import openai


class OpenAIProvider(SDKProvider["openai.OpenAI", "openai.AsyncOpenAI"]):
    """Calls an OpenAI-compatible Chat Completions API with the official SDK.

    Args:
        base_url: the API root including ``/v1`` (OpenAI's when ``None``).
        api_key: the key; when ``None`` every call raises :class:`AuthenticationError` naming
            ``api_key_env``. Servers that need no key accept any value.
        api_key_env: the environment variable the key came from (for messages only).
        timeout_s: the client's default timeout; each request's ``timeout_s`` applies per call.
        max_tokens_param: how the output limit is sent. Default: ``max_completion_tokens``
            for OpenAI itself (``base_url`` unset or ``api.openai.com``), ``max_tokens`` for
            other servers, which widely accept only that.
        defaults: API body fields added to every request (e.g. ``{"seed": 7}``).
        default_headers: headers added to every request.

    Request ``extra`` keys named in :attr:`body_keys` go into the body; ``extra["body"]`` (a
    mapping) is merged into the body last and ``extra["headers"]`` adds headers. Other keys
    (``prompt_id``, ``kind``, …) are tierwise's own and are not sent.
    """

    name: ClassVar[str] = "openai"
    sdk: ClassVar[str] = "openai"
    body_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "frequency_penalty",
            "logit_bias",
            "metadata",
            "parallel_tool_calls",
            "presence_penalty",
            "reasoning_effort",
            "response_format",
            "seed",
            "service_tier",
            "stop",
            "tool_choice",
            "tools",
            "top_p",
            "user",
        }
    )

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_tokens_param: MaxTokensParam | None = None,
        defaults: Mapping[str, Any] | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            defaults=defaults,
            default_headers=default_headers,
        )
        self.max_tokens_param: MaxTokensParam = max_tokens_param or openai_max_tokens_param(
            base_url
        )

    def _new_sync(self, api_key: str) -> openai.OpenAI:
        import openai

        return openai.OpenAI(**self._client_options(api_key))

    def _new_async(self, api_key: str) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(**self._client_options(api_key))

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            self.max_tokens_param: request.max_tokens,
            "timeout": request.timeout_s,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return self._with_passthrough(request, params)

    def _call(self, client: openai.OpenAI, params: dict[str, Any]) -> Any:
        return client.chat.completions.create(**params)

    async def _acall(self, client: openai.AsyncOpenAI, params: dict[str, Any]) -> Any:
        return await client.chat.completions.create(**params)

    def _read(self, response: Any, request: CompletionRequest, latency_s: float) -> Completion:
        from openai.types.chat import ChatCompletion

        from tierwise.pricing import Usage, usage_from_openai

        if not isinstance(response, ChatCompletion):
            raise bad_response(
                self.name,
                request.model,
                f"expected a chat completion, got {type(response).__name__}",
            )
        request_id = getattr(response, "_request_id", None)
        if not response.choices:
            raise bad_response(self.name, request.model, "no choices in the reply", request_id)
        choice = response.choices[0]
        message = choice.message
        raw_stop = choice.finish_reason
        stop: StopReason = neutral_stop_reason("openai", raw_stop)
        text = message.content or ""
        if getattr(message, "refusal", None):
            text, stop = text or str(message.refusal), "refusal"
        # Servers that report no usage are billed as zero tokens: there is nothing to price.
        usage = usage_from_openai(response.usage) if response.usage is not None else Usage()
        return Completion(
            text=text,
            model=response.model or request.model,
            provider=self.name,
            usage=usage,
            stop_reason=stop,
            raw_stop_reason=raw_stop,
            request_id=request_id,
            latency_s=latency_s,
            raw=response.to_dict(),
        )
