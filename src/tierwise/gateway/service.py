"""Serving one request: which task it is, the cascade or a passthrough, and the answer's shape.

:class:`GatewayService` holds what lives as long as the app (policy, cascade, upstream pool,
group-commit ledger, key checker, metrics). Each request becomes a :class:`Call`: the caller's
original JSON, its parsed view, and a :class:`~tierwise.task.Task` built from the model name,
the ``x-tierwise-*`` headers and the conversation. Then:

* ``tierwise/auto`` or ``tierwise/<kind>``, not streamed, or streamed with validators in
  ``buffer`` mode: the cascade runs with a request builder that forwards the caller's own body
  (model replaced; translated only for a tier of the other dialect), then the accepted answer
  is returned verbatim when dialects match, translated otherwise, or streamed from the buffer.
* streamed without validators, or in ``passthrough`` mode: the decided tier's stream is relayed
  as it arrives (:mod:`tierwise.gateway.streaming`).
* a concrete model id: one metered attempt at the tier that owns the model, no routing.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tierwise.cascade.result import AttemptRecord
from tierwise.cascade.runner import Cascade
from tierwise.cascade.seams import Failure, default_request_builder
from tierwise.errors import (
    BudgetExceededError,
    EscalationExhaustedError,
    ProviderError,
    TierwiseError,
    UnknownModelError,
)
from tierwise.gateway.dialects import Dialect, RequestError
from tierwise.gateway.translate import (
    anthropic_message_to_openai,
    anthropic_request_to_openai,
    openai_completion_to_anthropic,
    openai_request_to_anthropic,
    text_of_anthropic_content,
    text_of_openai_content,
)
from tierwise.gateway.upstream import RawProvider, UpstreamPool, UpstreamReply
from tierwise.pricing import Usage
from tierwise.providers.base import Completion, CompletionRequest
from tierwise.task import Message, Task, parse_annotations

if TYPE_CHECKING:
    from tierwise.gateway.auth import KeyChecker
    from tierwise.gateway.metrics import GatewayMetrics
    from tierwise.gateway.recorder import GroupCommitLedger
    from tierwise.ledger import ApiKey, Ledger
    from tierwise.policy import Policy
    from tierwise.policy.schema import Tier
    from tierwise.task import Decision

__all__ = ["AUTO_MODEL", "Call", "GatewayService", "Reply"]

log = logging.getLogger("tierwise.gateway")

AUTO_MODEL = "tierwise/auto"
_PREFIX = "tierwise/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_SESSION = re.compile(r"^[\x21-\x7e]{1,200}$")
#: Request headers forwarded upstream when the tier speaks the caller's dialect.
_FORWARD = ("anthropic-beta",)
_RETRY_HINT = (
    "That answer was rejected by an automatic check: {reason}. "
    "Answer the original request again, correcting this."
)

Route = Literal["auto", "kind", "model"]


@dataclass(slots=True)
class Call:
    """One request being served: the caller's JSON, the task, and what the gateway decided."""

    dialect: Dialect
    body: dict[str, Any]
    raw_size: int
    task: Task
    route: Route
    stream: bool
    include_usage: bool
    caller_max_tokens: int | None
    forward_headers: dict[str, str]
    limits: dict[str, Decimal]
    started: float
    upstream: list[float]
    kind_fallback: str | None = None
    target_model: str | None = None
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def overhead_s(self) -> float:
        """Seconds spent in the gateway so far, upstream waits excluded."""
        return max(0.0, time.perf_counter() - self.started - self.upstream[0])


@dataclass(slots=True)
class Reply:
    """What to send back: a JSON body (bytes) or an SSE iterator, status and headers."""

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    stream: Any = None  # AsyncIterator[bytes]


class GatewayService:
    """The long-lived state of one gateway app and the request path through it."""

    def __init__(
        self,
        *,
        policy: Policy,
        ledger: Ledger,
        recorder: GroupCommitLedger,
        pool: UpstreamPool,
        keys: KeyChecker,
        metrics: GatewayMetrics,
        wait_for_ledger: bool = True,
    ) -> None:
        self.policy = policy
        self.wait_for_ledger = wait_for_ledger
        self.ledger = ledger
        self.recorder = recorder
        self.pool = pool
        self.keys = keys
        self.metrics = metrics
        self._calls: dict[str, Call] = {}
        self.cascade = Cascade(
            policy,
            providers=pool,
            ledger=recorder,
            request_builder=self.build_request,
        )
        self.validator_names = frozenset(policy.model.validators)
        self._dialects = {p.dialect for tier in policy.ladder for _, p in pool.for_tier(tier)}

    # -- the task ----------------------------------------------------------------------------

    def prepare(
        self,
        dialect: Dialect,
        body: dict[str, Any],
        view: Any,
        raw_size: int,
        headers: Mapping[str, str],
        key: ApiKey | None,
        started: float,
        upstream: list[float],
    ) -> Call:
        """Build the :class:`Call` for a parsed request.

        Raises:
            RequestError: a bad ``x-tierwise-*`` header, an unknown model, or a request that
                cannot be translated for a tier of the other dialect.
        """
        model: str = view.model
        header_kind = (headers.get("x-tierwise-kind") or "").strip() or None
        route: Route
        target: str | None = None
        if model == AUTO_MODEL:
            route, kind = "auto", header_kind
        elif model.startswith(_PREFIX):
            route, kind = "kind", model[len(_PREFIX) :]
        else:
            route, kind, target = "model", header_kind, model
        if kind is not None and not _NAME.match(kind):
            raise RequestError(
                f"kind {kind!r}: expected letters, digits, '_', '.', ':' or '-' (at most 64)",
                param="model" if route == "kind" else None,
            )
        fallback = None
        if kind is not None and kind not in self.policy.kinds:
            fallback = f"kind {kind!r} is not in the policy; [defaults] applied"
        kind = kind or ("passthrough" if route == "model" else "auto")

        session = (headers.get("x-tierwise-session") or "").strip() or None
        if session is not None and not _SESSION.match(session):
            raise RequestError("x-tierwise-session: expected 1-200 visible ASCII characters")
        validators = self._validators(headers.get("x-tierwise-validators"))

        if dialect == "anthropic":
            system = text_of_anthropic_content(body.get("system") or "") or None
            turns = [(m["role"], text_of_anthropic_content(m["content"])) for m in body["messages"]]
            caller_max = body["max_tokens"]
            stream = bool(body.get("stream"))
            include_usage = False
        else:
            sys_parts = [
                text_of_openai_content(m.get("content"))
                for m in body["messages"]
                if m["role"] in ("system", "developer")
            ]
            system = "\n\n".join(p for p in sys_parts if p) or None
            turns = [
                (m["role"], text_of_openai_content(m.get("content")))
                for m in body["messages"]
                if m["role"] in ("user", "assistant", "tool")
            ]
            caller_max = body.get("max_completion_tokens") or body.get("max_tokens")
            stream = bool(body.get("stream"))
            options = body.get("stream_options")
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))

        annotations = parse_annotations(headers.get("x-tierwise-annotations") or "")
        if not annotations and system:
            first = next((line for line in system.splitlines() if line.strip()), "")
            annotations = parse_annotations(first)
        prompt = next((text for role, text in reversed(turns) if role == "user"), "")
        last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=-1)
        history = tuple(
            Message("user" if role != "assistant" else "assistant", text)
            for role, text in turns[: max(last_user, 0)]
        )
        chars = sum(len(t) for _, t in turns) + len(system or "")
        task = Task(
            kind=kind,
            prompt=prompt,
            system=system,
            history=history,
            input_chars=chars,
            scope=annotations.get("scope"),
            domain=annotations.get("domain"),
            ambiguity=annotations.get("ambiguity"),
            session=session,
            validators=validators,
            max_tokens=caller_max or 0,
            id=uuid.uuid4().hex,
            metadata={"dialect": dialect, "route": route},
        )
        limits: dict[str, Decimal] = {}
        if key is not None and key.budget_usd_day is not None:
            today = datetime.now(UTC).date().isoformat()
            limits[f"key-day:{key.id}:{today}"] = key.budget_usd_day
        forward = {h: headers[h] for h in _FORWARD if h in headers}
        call = Call(
            dialect=dialect,
            body=body,
            raw_size=raw_size,
            task=task,
            route=route,
            stream=stream,
            include_usage=include_usage,
            caller_max_tokens=caller_max,
            forward_headers=forward,
            limits=limits,
            started=started,
            upstream=upstream,
            kind_fallback=fallback,
            target_model=target,
        )
        # Translate up front, so an untranslatable request is a 400 before any upstream call.
        for other in self._dialects - {dialect}:
            self._body_for(call, other)
        return call

    def _validators(self, header: str | None) -> tuple[str, ...] | None:
        if not header or not header.strip():
            return None
        names = tuple(n.strip() for n in header.split(",") if n.strip())
        unknown = [n for n in names if n not in self.validator_names]
        if unknown:
            allowed = ", ".join(sorted(self.validator_names)) or "(none)"
            raise RequestError(
                f"x-tierwise-validators: unknown validator {unknown[0]!r}; only validators the "
                f"policy defines under [validators] may be named: {allowed}"
            )
        return names

    # -- the upstream request ----------------------------------------------------------------

    def _body_for(self, call: Call, dialect: Dialect) -> dict[str, Any]:
        if dialect == call.dialect:
            return call.body
        cached = call.bodies.get(dialect)
        if cached is None:
            if dialect == "openai":
                cached = anthropic_request_to_openai(call.body)
            else:
                cached = openai_request_to_anthropic(call.body, max_tokens=1)
            call.bodies[dialect] = cached
        return cached

    def provider_of(self, tier: str, model: str) -> RawProvider:
        """The provider serving *model* in *tier*."""
        entries = self.pool.for_tier(tier)
        for m, provider in entries:
            if m == model:
                return provider
        return entries[0][1]

    def build_request(
        self, task: Task, tier: Tier, model: str, max_tokens: int, failure: Failure | None
    ) -> CompletionRequest:
        """The cascade's request builder: the caller's own body for *model* at *tier*.

        The body is the caller's JSON with ``model`` replaced, translated when the tier speaks
        the other dialect; after a rejected answer the failed output and the reason are
        appended as two turns, as the library does. Tasks the gateway did not start (a
        validator's own calls) get the library's request.
        """
        call = self._calls.get(task.id)
        if call is None:
            return default_request_builder(task, tier, model, max_tokens, failure)
        provider = self.provider_of(tier.name, model)
        body = dict(self._body_for(call, provider.dialect))
        body["model"] = model
        limit = call.caller_max_tokens or max_tokens
        if provider.dialect == "anthropic":
            body["max_tokens"] = limit
        if failure is not None and failure.output is not None:
            hint = _RETRY_HINT.format(reason=failure.reason)
            body["messages"] = [
                *body["messages"],
                {"role": "assistant", "content": failure.output or "(empty answer)"},
                {"role": "user", "content": hint},
            ]
        extra: dict[str, Any] = {"body": body, "raw_body_bytes": call.raw_size}
        if provider.dialect == call.dialect and call.forward_headers:
            extra["headers"] = call.forward_headers
        return CompletionRequest(
            model=model,
            messages=(Message("user", task.prompt),),
            system=task.system,
            max_tokens=limit,
            timeout_s=tier.timeout_s,
            extra=extra,
        )

    # -- the answer --------------------------------------------------------------------------

    def answer_body(self, call: Call, reply: UpstreamReply) -> tuple[bytes | None, dict[str, Any]]:
        """The answer in the caller's dialect: exact upstream bytes when possible, and its JSON."""
        if reply.dialect == call.dialect:
            return (None if reply.streamed else reply.body), reply.data
        if call.dialect == "openai":
            return None, anthropic_message_to_openai(reply.data)
        return None, openai_completion_to_anthropic(reply.data)

    def headers_for(
        self,
        call: Call,
        *,
        tier: str | None,
        model: str | None,
        attempts: int | None,
        cost: Decimal | None,
        overhead_s: float | None,
    ) -> dict[str, str]:
        """The ``x-tierwise-*`` response headers known at this point."""
        h = {"x-tierwise-task-id": call.task.id, "x-tierwise-kind": call.task.kind}
        if call.kind_fallback:
            h["x-tierwise-kind-fallback"] = call.kind_fallback
        if tier is not None:
            h["x-tierwise-tier"] = tier
        if model is not None:
            h["x-tierwise-model"] = model
        if attempts is not None:
            h["x-tierwise-attempts"] = str(attempts)
        if cost is not None:
            h["x-tierwise-cost-usd"] = format(cost, "f")
        if overhead_s is not None:
            h["x-tierwise-overhead-ms"] = f"{overhead_s * 1000:.3f}"
        return h

    def wants_live_stream(self, call: Call) -> bool:
        """Whether a streamed request is relayed live (no validators, or ``passthrough``)."""
        if not call.stream:
            return False
        if call.route == "model":
            return True
        if self.policy.kind(call.task.kind).stream == "passthrough":
            return True
        return not self.cascade.validators_for(call.task)

    # -- the cascade path --------------------------------------------------------------------

    async def run_cascade(self, call: Call) -> Reply:
        """Route, attempt, validate and escalate through the cascade; answer in the caller's shape.

        Raises:
            RequestError: mapped from budget, exhaustion and configuration failures.
        """
        from tierwise.gateway.sse import anthropic_stream, encode_comment, openai_stream

        task = call.task
        self._calls[task.id] = call
        attempts: tuple[AttemptRecord, ...] = ()
        try:
            try:
                result = await self.cascade.arun(task, limits=call.limits or None)
            except BudgetExceededError as exc:
                attempts = exc.attempts
                raise self._budget_error(call, exc) from None
            except EscalationExhaustedError as exc:
                attempts = exc.attempts
                raise self._exhausted_error(call, exc) from None
            except (ProviderError, UnknownModelError) as exc:
                raise self._upstream_error(call, exc) from None
            finally:
                self._calls.pop(task.id, None)
                await self._flush(task.id)
            attempts = result.attempts
        finally:
            self.metrics.observe_attempts(attempts)
        completion = result.completion
        assert completion is not None
        reply = completion.raw
        assert isinstance(reply, UpstreamReply)
        exact, data = self.answer_body(call, reply)
        overhead = call.overhead_s()
        headers = self.headers_for(
            call,
            tier=result.tier,
            model=completion.model,
            attempts=len(result.attempts),
            cost=result.cost_usd,
            overhead_s=overhead,
        )
        if result.escalated:
            headers["x-tierwise-escalations"] = str(len(result.escalations))
        self.metrics.overhead.observe(overhead)
        if not call.stream:
            body = exact if exact is not None else json.dumps(data).encode()
            return Reply(200, headers, body=body)
        trailer = encode_comment(
            "tierwise "
            + json.dumps(
                {
                    "task_id": task.id,
                    "tier": result.tier,
                    "model": completion.model,
                    "attempts": len(result.attempts),
                    "cost_usd": format(result.cost_usd, "f"),
                    "overhead_ms": round(overhead * 1000, 3),
                }
            )
        )
        if call.dialect == "anthropic":
            events = [*anthropic_stream(data), trailer]
        else:
            chunks = list(openai_stream(data, include_usage=call.include_usage))
            events = [*chunks[:-1], trailer, chunks[-1]]
        return Reply(200, headers, stream=_iterate([b"".join(events)]))

    async def _flush(self, task_id: str) -> None:
        """Commit the task's rows before its answer leaves (unless configured not to wait)."""
        if not self.wait_for_ledger:
            self.recorder.flush_later(task_id)
            return
        try:
            await self.recorder.flush(task_id)
        except TierwiseError as exc:
            log.error("ledger write failed for task %s: %s", task_id, exc)
            raise RequestError(
                f"the answer could not be recorded in the ledger ({exc}); task {task_id}",
                status=500,
            ) from None

    # -- errors --------------------------------------------------------------------------------

    def _trail_headers(self, call: Call) -> dict[str, str]:
        return {"x-tierwise-task-id": call.task.id, "x-should-retry": "false"}

    def _budget_error(self, call: Call, exc: BudgetExceededError) -> RequestError:
        return RequestError(
            f"budget {exc.budget} exhausted: limit ${exc.limit_usd}, spent or held "
            f"${exc.spent_usd}, the next attempt may cost up to ${exc.needed_usd}; "
            f"attempt trail {call.task.id}",
            status=429,
            code="budget_exceeded",
            headers=self._trail_headers(call),
        )

    def _exhausted_error(self, call: Call, exc: EscalationExhaustedError) -> RequestError:
        attempts = [a for a in exc.attempts if a.role != "validator"]
        last = attempts[-1] if attempts else None
        headers = self._trail_headers(call)
        if last is not None and last.error_class == "BadRequestError":
            return RequestError(
                f"the upstream refused the request: {last.failure}; attempt trail {call.task.id}",
                status=400,
                headers=headers,
            )
        if any(a.outcome == "rejected" for a in attempts):
            return RequestError(
                f"no tier produced an answer that passed validation after {len(attempts)} "
                f"attempt(s); last failure: {last.failure if last else '-'}; "
                f"attempt trail {call.task.id}",
                status=502,
                code="validation_failed",
                headers=headers,
            )
        return RequestError(
            f"upstream unavailable after retries: {last.failure if last else 'no attempt'}; "
            f"attempt trail {call.task.id}",
            status=502,
            headers=headers,
        )

    def _upstream_error(self, call: Call, exc: TierwiseError) -> RequestError:
        if isinstance(exc, UnknownModelError):
            return RequestError(
                f"the gateway cannot price model {exc.model!r}: {exc}; task {call.task.id}",
                status=500,
                headers=self._trail_headers(call),
            )
        return RequestError(
            f"upstream error: {exc}; attempt trail {call.task.id}",
            status=502,
            headers=self._trail_headers(call),
        )

    def resolve_model(self, call: Call) -> tuple[str, str, RawProvider]:
        """(tier, model, provider) for a concrete model id.

        Raises:
            RequestError: 404 — no tier serves the model and the price catalog does not know
                it (the gateway only forwards what it can meter).
        """
        model = call.target_model or ""
        owner = self.pool.owner_of(model)
        if owner is not None:
            return owner[0], model, owner[1]
        found = self.pool.provider_for_dialect(call.dialect)
        if found is not None and self.cascade.catalog.knows(model, found[1].name):
            return found[0], model, found[1]
        names = [m for m, _ in self.pool.models()]
        raise RequestError(
            f"model {model!r} is not served by this gateway; use {AUTO_MODEL}, "
            f"tierwise/<kind>, or one of: {', '.join(names)}",
            status=404,
            param="model",
        )

    # -- bookkeeping outside the cascade loop ----------------------------------------------------

    def begin(self, call: Call, decision: Decision) -> None:
        """Queue the task's start row (routing decision included)."""
        self.recorder.begin_task(
            call.task,
            decision,
            policy_revision=self.policy.revision,
            role="live",
            store_content=self.policy.model.store_content,
        )

    def attempt_record(
        self,
        call: Call,
        *,
        attempt_no: int,
        tier: str,
        model: str,
        provider: str,
        started_at: datetime,
        latency_s: float,
        outcome: Literal["accepted", "error", "partial"],
        usage: Usage | None = None,
        cost: Decimal = Decimal(0),
        completion: Completion | None = None,
        error: BaseException | None = None,
        escalated_from: int | None = None,
    ) -> AttemptRecord:
        """An :class:`AttemptRecord` for an attempt made outside the cascade loop."""
        return AttemptRecord(
            task_id=call.task.id,
            attempt_no=attempt_no,
            kind=call.task.kind,
            tier=tier,
            tier_index=self.policy.tier_index(tier),
            model=completion.model if completion is not None and completion.model else model,
            provider=provider,
            usage=usage or Usage(),
            cost_usd=cost,
            latency_s=latency_s,
            outcome=outcome,
            started_at=started_at,
            role="live",
            failure=None if error is None else str(error),
            error_class=None if error is None else type(error).__name__,
            escalated_from=escalated_from,
            stop_reason=None if completion is None else completion.stop_reason,
            output=None if completion is None else completion.text,
            session=call.task.session,
        )

    def finish(
        self,
        call: Call,
        attempts: list[AttemptRecord],
        *,
        outcome: str,
        tier: str | None,
        output: str | None,
    ) -> Decimal:
        """Queue the task's end row; returns the task's total cost."""
        cost = sum((a.cost_usd for a in attempts), Decimal(0))
        self.recorder.finish_task(
            call.task.id,
            outcome=outcome,
            final_tier=tier,
            cost_usd=cost,
            latency_s=time.perf_counter() - call.started,
            attempts=len(attempts),
            output=output,
            store_content=self.policy.model.store_content,
        )
        return cost

    def record(self, attempt: AttemptRecord) -> None:
        """Queue one attempt row."""
        self.recorder.record_attempt(attempt, store_content=self.policy.model.store_content)


async def _iterate(events: list[bytes]) -> Any:
    for event in events:
        yield event
