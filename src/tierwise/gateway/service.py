"""Serving one request: which task it is, how it runs through the cascade, and the answer's shape.

:class:`GatewayService` holds what lives as long as the app (policy, cascade, upstream pool,
group-commit ledger, key checker, metrics). Each request becomes a
:class:`~tierwise.gateway.call.Call`: the caller's original JSON, a
:class:`~tierwise.task.Task` built from the model name, the ``x-tierwise-*`` headers and the
conversation, and the request builder that forwards the caller's own body (model replaced;
translated only for a tier of the other dialect). Then one of the cascade's drivers serves it —
the same attempt loop either way:

* :meth:`~tierwise.cascade.Cascade.arun`: not streamed, or streamed with validators in
  ``buffer`` mode. The accepted answer is returned verbatim when dialects match, translated
  otherwise, or streamed from the buffer.
* :meth:`~tierwise.cascade.Cascade.astream`: streamed without validators, in ``passthrough``
  mode, or to a concrete model. The tier's stream is relayed as it arrives
  (:mod:`tierwise.gateway.streaming`); failures before the first byte climb as unstreamed ones.

A concrete model id is a :class:`~tierwise.cascade.runner.Pin`: one metered attempt at the tier
that owns the model, with no routing, validation or climb. Every failure is answered through
the one mapping in :mod:`tierwise.gateway.errors`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from tierwise.cascade.runner import Cascade, Pin, StreamOpened
from tierwise.cascade.seams import Failure, RequestBuilder
from tierwise.errors import TierwiseError
from tierwise.gateway.call import Call, Reply, Route, Routing
from tierwise.gateway.dialects import Dialect, RequestError
from tierwise.gateway.errors import failure_error, ledger_unavailable
from tierwise.gateway.plan import PLAN_KIND, PLAN_MODEL, serve_plan
from tierwise.gateway.shadowing import ShadowScheduler
from tierwise.gateway.translate import (
    anthropic_message_to_openai,
    anthropic_request_to_openai,
    openai_completion_to_anthropic,
    openai_request_to_anthropic,
    text_of_anthropic_content,
    text_of_openai_content,
)
from tierwise.gateway.upstream import RawProvider, UpstreamPool, UpstreamReply
from tierwise.providers.base import CompletionRequest
from tierwise.records import AttemptRecord
from tierwise.task import Message, Task, parse_annotations, parse_attribute

if TYPE_CHECKING:
    from tierwise.cascade.seams import LearnedModels
    from tierwise.gateway.auth import KeyChecker
    from tierwise.gateway.metrics import GatewayMetrics
    from tierwise.gateway.recorder import GroupCommitLedger
    from tierwise.ledger import ApiKey, Ledger
    from tierwise.policy import Policy
    from tierwise.policy.schema import Tier

__all__ = ["AUTO_MODEL", "REQUEST_HEADERS", "GatewayService"]

log = logging.getLogger("tierwise.gateway")

AUTO_MODEL = "tierwise/auto"
_PREFIX = "tierwise/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_SESSION = re.compile(r"^[\x21-\x7e]{1,200}$")
#: Request headers forwarded upstream when the tier speaks the caller's dialect.
_FORWARD = ("anthropic-beta",)
#: The ``x-tierwise-*`` request headers the gateway reads; any other is refused (a typo would
#: otherwise be silently ignored).
REQUEST_HEADERS = frozenset(
    {
        "x-tierwise-kind",
        "x-tierwise-session",
        "x-tierwise-validators",
        "x-tierwise-annotations",
        "x-tierwise-attr",
    }
)


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
        loopback: bool = True,
        learned: LearnedModels | None = None,
    ) -> None:
        #: Whether the gateway is served on loopback only (decided at start).
        self.loopback = loopback
        self.wait_for_ledger = wait_for_ledger
        self.ledger = ledger
        self.recorder = recorder
        self.keys = keys
        self.metrics = metrics
        #: Shadow calls after answers (:mod:`tierwise.gateway.shadowing`).
        self.shadows = ShadowScheduler(metrics, recorder, self.request_builder)
        #: The policy in force and what it builds; replaced as one value by :meth:`reload`.
        self.routing = Routing.build(policy, pool, recorder, self.shadows.state, learned)

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self.routing.policy

    @property
    def pool(self) -> UpstreamPool:
        """The upstream providers of the policy in force."""
        return self.routing.pool

    @property
    def cascade(self) -> Cascade:
        """The cascade of the policy in force."""
        return self.routing.cascade

    def reload(self, policy: Policy, learned: LearnedModels | None = None) -> Routing:
        """Serve *policy* (with the saved *learned* models it uses) from now on; requests under
        way finish with the one they started.

        The upstream transport is shared; nothing is closed. Returns the new routing.
        """
        pool = UpstreamPool(policy, self.pool.transport, self.pool.env)
        routing = Routing.build(policy, pool, self.recorder, self.shadows.state, learned)
        self.routing = routing  # one assignment: the swap is atomic on the event loop
        self.metrics.kind_label = policy.kind_label
        return routing

    # -- the task ----------------------------------------------------------------------------

    def prepare(
        self,
        dialect: Dialect,
        body: dict[str, Any],
        raw_size: int,
        headers: Mapping[str, str],
        key: ApiKey | None,
        started: float,
        upstream: list[float],
    ) -> Call:
        """Build the :class:`Call` for a checked request body.

        Raises:
            RequestError: a bad or unknown ``x-tierwise-*`` header, an unknown model, or a
                request that cannot be translated for a tier of the other dialect.
        """
        routing = self.routing
        for name in headers:
            if name.startswith("x-tierwise-") and name not in REQUEST_HEADERS:
                known = ", ".join(sorted(REQUEST_HEADERS))
                raise RequestError(f"unknown request header {name!r}; tierwise reads {known}")
        model: str = body["model"]
        header_kind = (headers.get("x-tierwise-kind") or "").strip() or None
        route: Route
        target: str | None = None
        if model == AUTO_MODEL:
            route, kind = "auto", header_kind
        elif model == PLAN_MODEL:
            route, kind = "plan", PLAN_KIND
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
        if kind is not None and kind not in routing.policy.kinds:
            fallback = f"kind {kind!r} is not in the policy; [defaults] applied"
        kind = kind or ("passthrough" if route == "model" else "auto")

        session = (headers.get("x-tierwise-session") or "").strip() or None
        if session is not None and not _SESSION.match(session):
            raise RequestError("x-tierwise-session: expected 1-200 visible ASCII characters")
        validators = _validators(routing, headers.get("x-tierwise-validators"))
        attrs = _attributes(headers.get("x-tierwise-attr"))

        if dialect == "anthropic":
            system = text_of_anthropic_content(body.get("system") or "") or None
            turns = [(m["role"], text_of_anthropic_content(m["content"])) for m in body["messages"]]
            caller_max = body["max_tokens"]
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
            key_id=None if key is None else key.id,
        )
        if attrs:  # explicit attributes win over what was read from the text
            task = task.with_(**attrs)
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
            stream=bool(body.get("stream")),
            include_usage=include_usage,
            caller_max_tokens=caller_max,
            forward_headers=forward,
            limits=limits,
            started=started,
            upstream=upstream,
            kind_fallback=fallback,
            target_model=target,
            routing=routing,
        )
        if route == "model":
            call.pin = self.resolve_model(call)
        # Translate up front, so an untranslatable request is a 400 before any upstream call.
        for other in routing.dialects - {dialect}:
            self._body_for(call, other)
        return call

    def resolve_model(self, call: Call) -> Pin:
        """Where a concrete model id goes: its tier's provider, or an allowed passthrough model.

        A tier's own models may always be named; others only when the policy lists them under
        ``[passthrough] models`` (sent with the credentials of the lowest tier speaking the
        caller's dialect). Either way the call is recorded under ``passthrough``, not a tier.

        Raises:
            RequestError: 404 — the model is neither a tier's nor an allowed passthrough model,
                or the gateway cannot price it (it only forwards what it can meter).
        """
        model = call.target_model or ""
        routing = call.routing
        owner = routing.pool.owner_of(model)
        if owner is not None:
            return Pin(owner[0], model, owner[1])
        allowed = routing.policy.model.passthrough.models
        found = routing.pool.provider_for_dialect(call.dialect)
        if model in allowed and found is not None:
            if routing.cascade.catalog.knows(model, found[1].name):
                return Pin(found[0], model, found[1])
            raise RequestError(
                f"model {model!r} is allowed by [passthrough] but has no price; add "
                f"[prices.{model!r}] to the policy so the gateway can meter it",
                status=404,
                param="model",
            )
        names = [m for m, _ in routing.pool.models()] + list(allowed)
        raise RequestError(
            f"model {model!r} is not served by this gateway; use {AUTO_MODEL}, "
            f"tierwise/<kind>, or one of: {', '.join(names)} (other models must be listed "
            "under [passthrough] models in the policy)",
            status=404,
            param="model",
        )

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

    def _provider_of(self, call: Call, tier: str, model: str) -> RawProvider:
        entries = call.routing.pool.for_tier(tier)
        for m, provider in entries:
            if m == model:
                return provider
        return entries[0][1]

    def request_builder(self, call: Call) -> RequestBuilder:
        """The cascade's request builder for *call*: the caller's own body for each model.

        The body is the caller's JSON with ``model`` replaced, translated when the tier speaks
        the other dialect; after a rejected answer the failed output and the handoff note
        (:mod:`tierwise.cascade.handoff`) are appended as two turns, as the library does.
        """

        def build(
            task: Task, tier: Tier, model: str, max_tokens: int, failure: Failure | None
        ) -> CompletionRequest:
            pinned = call.pin
            provider = (
                pinned.provider
                if pinned is not None and isinstance(pinned.provider, RawProvider)
                else self._provider_of(call, tier.name, model)
            )
            body = dict(self._body_for(call, provider.dialect))
            body["model"] = model
            limit = call.caller_max_tokens or max_tokens
            if provider.dialect == "anthropic":
                body["max_tokens"] = limit
            if failure is not None and failure.output is not None:
                body["messages"] = [
                    *body["messages"],
                    {"role": "assistant", "content": failure.output or "(empty answer)"},
                    {"role": "user", "content": failure.note(task)},
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

        return build

    # -- serving -------------------------------------------------------------------------------

    def wants_live_stream(self, call: Call) -> bool:
        """Whether a streamed request is relayed live (no validators, ``passthrough``, a model)."""
        if not call.stream:
            return False
        if call.route == "model":
            return True
        if call.routing.policy.kind(call.task.kind).stream == "passthrough":
            return True
        return not call.routing.cascade.validators_for(call.task)

    async def serve(self, call: Call) -> Reply:
        """Run *call* through the cascade and answer in the caller's shape.

        Raises:
            RequestError: every failure, mapped by :func:`tierwise.gateway.errors.failure_error`;
                503 before any upstream call when the ledger's database cannot be reached (a
                call that cannot be recorded is not made).
        """
        if not await self.recorder.ready():  # fresh from the last commit, or one shared ping
            raise ledger_unavailable(call.task.id)
        if call.route == "plan":
            return await serve_plan(self, call)
        if self.wants_live_stream(call):
            reply = await self._serve_live(call)
        else:
            reply = await self._serve_whole(call)
        reply.after = self.shadows.after(call)
        return reply

    async def _serve_whole(self, call: Call) -> Reply:
        from tierwise.gateway.sse import anthropic_stream, openai_stream
        from tierwise.gateway.streaming import trailer

        task = call.task
        try:
            result = await call.routing.cascade.arun(
                task,
                limits=call.limits or None,
                request_builder=self.request_builder(call),
                pin=call.pin,
            )
        except TierwiseError as exc:
            await self._fail(call, exc)
        except BaseException:
            await self.commit(task.id)
            raise
        overhead = call.overhead_s()
        self.observe(call, result.attempts, overhead)
        await self.commit(task.id)
        call.done = result
        completion = result.completion
        assert completion is not None
        reply = completion.raw
        assert isinstance(reply, UpstreamReply)
        exact, data = self.answer_body(call, reply)
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
        if not call.stream:
            body = exact if exact is not None else json.dumps(data).encode()
            return Reply(200, headers, body=body)
        end = trailer(
            task.id, result.tier, completion.model, len(result.attempts), result.cost_usd, overhead
        )
        if call.dialect == "anthropic":
            events = [*anthropic_stream(data), end]
        else:
            chunks = list(openai_stream(data, include_usage=call.include_usage))
            events = [*chunks[:-1], end, chunks[-1]]
        return Reply(200, headers, stream=_once(b"".join(events)))

    async def _serve_live(self, call: Call) -> Reply:
        from tierwise.gateway.streaming import relay

        task = call.task
        items = call.routing.cascade.astream(
            task,
            limits=call.limits or None,
            request_builder=self.request_builder(call),
            pin=call.pin,
        )
        try:
            first = await anext(items)
        except TierwiseError as exc:
            await self._fail(call, exc)
        except BaseException:
            await self.commit(task.id)
            raise
        assert isinstance(first, StreamOpened)
        headers = self.headers_for(
            call, tier=first.tier, model=first.model, attempts=None, cost=None, overhead_s=None
        )
        return Reply(200, headers, stream=relay(self, call, first, items), logs_itself=True)

    async def _fail(self, call: Call, exc: TierwiseError) -> NoReturn:
        """Commit a failed task's rows, count them, and raise the caller's error."""
        attempts: Sequence[AttemptRecord] = getattr(exc, "attempts", ())
        self.observe(call, attempts, None)
        if call.log is not None:
            last = getattr(exc, "last_error", None)
            call.log.error = type(last if last is not None else exc).__name__
        await self.commit(call.task.id)
        try:
            error = failure_error(call.task.id, exc)
        except TypeError:
            raise exc from None
        raise error from None

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

    # -- the ledger and metrics ----------------------------------------------------------------

    async def commit(self, task_id: str) -> None:
        """Commit the task's rows before its answer leaves (unless configured not to wait).

        With the database unreachable the rows are spooled to a local file instead (durable
        before this returns) and written to the ledger when it is back.

        Raises:
            RequestError: 500 — the rows could be neither written nor spooled.
        """
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

    def commit_later(self, task_id: str) -> None:
        """Queue the task's rows for the next commit without waiting (nobody is answered)."""
        self.recorder.flush_later(task_id)

    def observe(
        self, call: Call, attempts: Sequence[AttemptRecord], overhead_s: float | None
    ) -> None:
        """Count a finished request's attempts (and its overhead) in the metrics and its log."""
        if call.log is not None:
            call.log.attempts = attempts
        self.metrics.observe_attempts(attempts)
        if overhead_s is not None:
            self.metrics.overhead.observe(overhead_s)


def _validators(routing: Routing, header: str | None) -> tuple[str, ...] | None:
    if not header or not header.strip():
        return None
    names = tuple(n.strip() for n in header.split(",") if n.strip())
    unknown = [n for n in names if n not in routing.validator_names]
    if unknown:
        allowed = ", ".join(sorted(routing.validator_names)) or "(none)"
        raise RequestError(
            f"x-tierwise-validators: unknown validator {unknown[0]!r}; only validators the "
            f"policy defines under [validators] may be named: {allowed}"
        )
    return names


def _attributes(header: str | None) -> dict[str, Any]:
    """Task attributes from ``x-tierwise-attr: files=5, severity=4``."""
    if not header or not header.strip():
        return {}
    out: dict[str, Any] = {}
    for item in header.split(","):
        if not item.strip():
            continue
        try:
            key, value = parse_attribute(item)
        except ValueError as exc:
            raise RequestError(f"x-tierwise-attr: {exc}") from None
        out[key] = value
    return out


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
