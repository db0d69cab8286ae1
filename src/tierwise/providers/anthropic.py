"""The Anthropic provider: the Messages API through the official ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from tierwise.providers._sdk import SDKProvider
from tierwise.providers.base import Completion, CompletionRequest, neutral_stop_reason
from tierwise.providers.errors_map import bad_response

if TYPE_CHECKING:
    import anthropic


class AnthropicProvider(SDKProvider["anthropic.Anthropic", "anthropic.AsyncAnthropic"]):
    """Calls Anthropic's Messages API (or any server speaking it) with the official SDK.

    Args:
        base_url: the API root (``https://api.anthropic.com`` when ``None``, or
            ``$ANTHROPIC_BASE_URL`` as the SDK reads it).
        api_key: the key; when ``None`` every call raises :class:`AuthenticationError` naming
            ``api_key_env``.
        api_key_env: the environment variable the key came from (for messages only).
        timeout_s: the client's default timeout; each request's ``timeout_s`` applies per call.
        defaults: API body fields added to every request (e.g. ``{"metadata": {...}}``).
        default_headers: headers added to every request (e.g. ``anthropic-beta``).

    Request ``extra`` keys named in :attr:`body_keys` go into the body; ``extra["body"]`` (a
    mapping) is merged into the body last and ``extra["headers"]`` adds headers. Other keys
    (``prompt_id``, ``kind``, …) are tierwise's own and are not sent.
    """

    name: ClassVar[str] = "anthropic"
    sdk: ClassVar[str] = "anthropic"
    body_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "cache_control",
            "container",
            "inference_geo",
            "metadata",
            "output_config",
            "service_tier",
            "speed",
            "stop_sequences",
            "temperature",
            "thinking",
            "tool_choice",
            "tools",
            "top_k",
            "top_p",
        }
    )

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        timeout_s: float = 60.0,
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

    def _new_sync(self, api_key: str) -> anthropic.Anthropic:
        import anthropic

        return anthropic.Anthropic(**self._client_options(api_key))

    def _new_async(self, api_key: str) -> anthropic.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic(**self._client_options(api_key))

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "timeout": request.timeout_s,
        }
        if request.system:
            params["system"] = request.system
        # create() in this SDK takes no temperature argument: it travels in the body.
        return self._with_passthrough(request, params, temperature=request.temperature)

    def _call(self, client: anthropic.Anthropic, params: dict[str, Any]) -> Any:
        return client.messages.create(**params)

    async def _acall(self, client: anthropic.AsyncAnthropic, params: dict[str, Any]) -> Any:
        return await client.messages.create(**params)

    def _read(self, response: Any, request: CompletionRequest, latency_s: float) -> Completion:
        from anthropic.types import Message

        from tierwise.pricing import usage_from_anthropic

        if not isinstance(response, Message):
            raise bad_response(
                self.name, request.model, f"expected a Message, got {type(response).__name__}"
            )
        request_id = getattr(response, "_request_id", None)
        text = "".join(b.text for b in response.content if b.type == "text")
        raw_stop = response.stop_reason
        return Completion(
            text=text,
            model=response.model or request.model,
            provider=self.name,
            usage=usage_from_anthropic(response.usage),
            stop_reason=neutral_stop_reason("anthropic", raw_stop),
            raw_stop_reason=raw_stop,
            request_id=request_id,
            latency_s=latency_s,
            raw=response.to_dict(),
        )
