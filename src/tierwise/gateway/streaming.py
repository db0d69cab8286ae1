"""Requests served outside the cascade loop: live streams and concrete-model passthrough.

A streamed request whose kind has no validators (or whose kind says ``stream = "passthrough"``)
is relayed from the decided tier as the upstream sends it: verbatim when dialects match
(OpenAI's usage chunk is removed when the caller did not ask for it — the gateway always asks,
to price the call), translated event by event otherwise. Before the caller has received a byte,
a failing upstream is retried and then replaced by the tier's alternate model; once bytes have
left, a break ends the stream with an error event in the caller's dialect and the ledger records
a ``partial`` attempt. Cost, attempts and overhead go in the ledger and in a final SSE comment
(``: tierwise {...}``), since the headers left before they were known.

A concrete model id (not ``tierwise/...``) is one metered attempt at the tier that owns it,
streamed or not, with neither routing nor validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio

from tierwise.cascade.budget import budget_limits, input_token_bound
from tierwise.cascade.result import AttemptRecord
from tierwise.errors import BudgetExceededError, ProviderError, UnknownModelError
from tierwise.gateway.dialects import RequestError, error_body
from tierwise.gateway.service import Call, GatewayService, Reply
from tierwise.gateway.sse import (
    DONE,
    AnthropicToOpenAIStream,
    Event,
    OpenAIToAnthropicStream,
    encode_comment,
    stream_error_event,
)
from tierwise.gateway.upstream import RawProvider, UpstreamReply, UpstreamStream
from tierwise.pricing import cost_of, max_cost

if TYPE_CHECKING:
    from tierwise.ledger import Reservation
    from tierwise.pricing import ModelPrices
    from tierwise.providers.base import Completion, CompletionRequest

__all__ = ["serve_direct"]


async def serve_direct(svc: GatewayService, call: Call) -> Reply:
    """Serve *call* with one tier and no validation: a live stream or a concrete model.

    Raises:
        RequestError: 404 unknown model, 429 budget, 502 (or the upstream's 400) when every
            candidate failed before answering.
    """
    task = call.task
    if call.route == "model":
        tier, model, provider = svc.resolve_model(call)
        decision = svc.cascade.router.start_at(task, tier)
        candidates: list[tuple[str, RawProvider]] = [(model, provider)]
    else:
        decision = svc.cascade.decide(task)
        tier = decision.tier
        entries = list(svc.pool.for_tier(tier))
        candidates = [e for e in entries if not svc.cascade.cooldown.cooling(e[0])] or entries
    tier_cfg = svc.policy.tier(tier)
    max_tokens = task.max_tokens or svc.policy.kind(task.kind).max_tokens or tier_cfg.max_tokens
    limits = budget_limits(svc.policy, task, datetime.now(UTC), call.limits)
    svc.begin(call, decision)
    attempts: list[AttemptRecord] = []
    last_error: ProviderError | None = None
    svc._calls[task.id] = call
    try:
        for model, provider in candidates:
            request = svc.build_request(task, tier_cfg, model, max_tokens, None)
            try:
                prices = svc.cascade.catalog.prices_for(model, provider.name)
            except UnknownModelError as exc:
                svc.finish(call, attempts, outcome="error", tier=None, output=None)
                raise svc._upstream_error(call, exc) from None
            try:
                reservation = svc.recorder.reserve(
                    task.id,
                    limits,
                    max_cost(
                        prices,
                        input_tokens=input_token_bound(request),
                        max_tokens=request.max_tokens,
                    ),
                )
            except BudgetExceededError as exc:
                svc.finish(call, attempts, outcome="budget", tier=None, output=None)
                raise svc._budget_error(call, exc) from None
            started_at, t0 = datetime.now(UTC), time.perf_counter()
            try:
                opened = await _open(svc, provider, request, stream=call.stream)
            except ProviderError as exc:
                svc.recorder.release(reservation)
                svc.cascade.cooldown.record_failure(model)
                last_error = exc
                previous = attempts[-1].attempt_no if attempts else None
                record = svc.attempt_record(
                    call,
                    attempt_no=len(attempts),
                    tier=tier,
                    model=model,
                    provider=provider.name,
                    started_at=started_at,
                    latency_s=time.perf_counter() - t0,
                    outcome="error",
                    error=exc,
                    escalated_from=previous,
                )
                attempts.append(record)
                svc.record(record)
                continue
            svc.cascade.cooldown.record_success(model)
            if isinstance(opened, UpstreamStream):
                relay = _Relay(svc, call, tier, model, provider, opened, prices, reservation)
                relay.attempts = attempts
                relay.started_at, relay.t0 = started_at, t0
                headers = svc.headers_for(
                    call, tier=tier, model=model, attempts=None, cost=None, overhead_s=None
                )
                return Reply(200, headers, stream=relay.run())
            return await _single(
                svc, call, tier, provider, opened, prices, reservation, attempts, started_at, t0
            )
        svc.finish(call, attempts, outcome="exhausted", tier=None, output=None)
        assert last_error is not None
        if (
            last_error.status is not None
            and 400 <= last_error.status < 500
            and (last_error.status not in (401, 403, 408, 429))
        ):
            raise RequestError(
                f"the upstream refused the request: {last_error}; attempt trail {task.id}",
                status=last_error.status,
                headers=svc._trail_headers(call),
            )
        raise RequestError(
            f"upstream unavailable after retries: {last_error}; attempt trail {task.id}",
            status=502,
            headers=svc._trail_headers(call),
        )
    except BaseException:
        svc.metrics.observe_attempts(attempts)
        await svc._flush(task.id)
        raise
    finally:
        svc._calls.pop(task.id, None)


async def _open(
    svc: GatewayService, provider: RawProvider, request: CompletionRequest, *, stream: bool
) -> Completion | UpstreamStream:
    """Call (or open the stream of) one model, retrying retryable failures per the policy.

    For a stream, returns once its first event has arrived: until then nothing has been sent
    to the caller and a failure can still move on to another model.
    """
    retry = svc.cascade.retry
    attempt = 0
    while True:
        try:
            if not stream:
                return await provider.acomplete(request)
            upstream = provider.open_stream(request)
            await upstream.__aenter__()
            try:
                await upstream.prime()
            except BaseException:
                await upstream.__aexit__(None, None, None)
                raise
            return upstream
        except ProviderError as exc:
            wait = retry.wait_before_retry(exc, attempt)
            if wait is None:
                raise
        await asyncio.sleep(wait)
        attempt += 1


async def _single(
    svc: GatewayService,
    call: Call,
    tier: str,
    provider: RawProvider,
    completion: Completion,
    prices: ModelPrices,
    reservation: Reservation,
    attempts: list[AttemptRecord],
    started_at: datetime,
    t0: float,
) -> Reply:
    """Answer a non-streamed concrete-model call."""
    cost = cost_of(completion.usage, prices)
    svc.recorder.settle(reservation, cost)
    record = svc.attempt_record(
        call,
        attempt_no=len(attempts),
        tier=tier,
        model=completion.model,
        provider=provider.name,
        started_at=started_at,
        latency_s=time.perf_counter() - t0,
        outcome="accepted",
        usage=completion.usage,
        cost=cost,
        completion=completion,
        escalated_from=attempts[-1].attempt_no if attempts else None,
    )
    attempts.append(record)
    svc.record(record)
    total = svc.finish(call, attempts, outcome="accepted", tier=tier, output=completion.text)
    svc.metrics.observe_attempts(attempts)
    await svc._flush(call.task.id)
    reply = completion.raw
    assert isinstance(reply, UpstreamReply)
    exact, data = svc.answer_body(call, reply)
    overhead = call.overhead_s()
    svc.metrics.overhead.observe(overhead)
    headers = svc.headers_for(
        call,
        tier=tier,
        model=completion.model,
        attempts=len(attempts),
        cost=total,
        overhead_s=overhead,
    )
    return Reply(200, headers, body=exact if exact is not None else json.dumps(data).encode())


class _Relay:
    """Relays one upstream stream to the caller and records it when it ends, however it ends."""

    def __init__(
        self,
        svc: GatewayService,
        call: Call,
        tier: str,
        model: str,
        provider: RawProvider,
        upstream: UpstreamStream,
        prices: ModelPrices,
        reservation: Reservation,
    ) -> None:
        self.svc = svc
        self.call = call
        self.tier = tier
        self.model = model
        self.provider = provider
        self.upstream = upstream
        self.prices = prices
        self.reservation = reservation
        self.attempts: list[AttemptRecord] = []
        self.started_at = datetime.now(UTC)
        self.t0 = time.perf_counter()
        same = provider.dialect == call.dialect
        self._to_openai = (
            None
            if same or call.dialect != "openai"
            else AnthropicToOpenAIStream(include_usage=call.include_usage)
        )
        self._to_anthropic = (
            None if same or call.dialect != "anthropic" else OpenAIToAnthropicStream()
        )

    def _convert(self, event: Event, data: dict[str, Any] | None) -> list[bytes]:
        """The bytes to send for one upstream event; ``[DONE]`` is held back for the trailer."""
        if self.provider.dialect == "anthropic":
            if data is None:  # ping
                return [event.raw] if self._to_openai is None else []
            if self._to_openai is not None:
                return [b for b in self._to_openai.feed(data) if b != DONE]
            return [event.raw]
        if data is None:  # [DONE]
            return []
        if self._to_anthropic is not None:
            return self._to_anthropic.feed(data)
        if not self.call.include_usage and not data.get("choices") and data.get("usage"):
            return []  # the usage chunk the gateway asked for on its own behalf
        return [event.raw]

    def _closing(self) -> list[bytes]:
        if self._to_anthropic is not None:
            return self._to_anthropic.finish()
        return []

    async def _close_upstream(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.upstream.__aexit__(None, None, None)

    async def run(self) -> AsyncIterator[bytes]:
        """The caller's stream; the attempt is recorded whether it ends, breaks or is dropped."""
        outcome = "partial"
        error: BaseException | None = None
        try:
            try:
                async for batch in self.upstream.batches():
                    # one write per upstream read: fewer sends, same bytes
                    out = b"".join(b for event, data in batch for b in self._convert(event, data))
                    if out:
                        yield out
                closing = b"".join(self._closing())
                if closing:
                    yield closing
                outcome = "accepted"
            except ProviderError as exc:
                error = exc
        except BaseException as exc:  # the caller went away (cancelled, closed) or a bug
            self._record("partial", exc)
            self.svc.recorder.flush_later(self.call.task.id)
            await self._close_upstream()
            raise
        await self._close_upstream()
        cost, overhead = self._record(outcome, error)
        with contextlib.suppress(RequestError):  # logged by _flush; the stream is under way
            await self.svc._flush(self.call.task.id)
        if error is not None:
            message = f"the upstream stream broke: {error}; attempt trail {self.call.task.id}"
            yield stream_error_event(self.call.dialect, error_body(self.call.dialect, 502, message))
            return
        yield encode_comment(
            "tierwise "
            + json.dumps(
                {
                    "task_id": self.call.task.id,
                    "tier": self.tier,
                    "model": self.model,
                    "attempts": len(self.attempts),
                    "cost_usd": format(cost, "f"),
                    "overhead_ms": round(overhead * 1000, 3),
                }
            )
        )
        if self.call.dialect == "openai":
            yield DONE

    def _record(self, outcome: str, error: BaseException | None) -> tuple[Decimal, float]:
        svc, call = self.svc, self.call
        usage = self.upstream.usage
        cost = cost_of(usage, self.prices)
        svc.recorder.settle(self.reservation, cost)
        completion = self.upstream.completion() if outcome == "accepted" else None
        record = svc.attempt_record(
            call,
            attempt_no=len(self.attempts),
            tier=self.tier,
            model=self.model,
            provider=self.provider.name,
            started_at=self.started_at,
            latency_s=time.perf_counter() - self.t0,
            outcome="accepted" if outcome == "accepted" else "partial",
            usage=usage,
            cost=cost,
            completion=completion,
            error=error,
            escalated_from=self.attempts[-1].attempt_no if self.attempts else None,
        )
        self.attempts.append(record)
        svc.record(record)
        total = svc.finish(
            call,
            self.attempts,
            outcome="accepted" if outcome == "accepted" else "error",
            tier=self.tier if outcome == "accepted" else None,
            output=None if completion is None else completion.text,
        )
        svc.metrics.observe_attempts(self.attempts)
        overhead = call.overhead_s()
        svc.metrics.overhead.observe(overhead)
        return total, overhead
