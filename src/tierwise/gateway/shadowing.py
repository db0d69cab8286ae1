"""Shadow calls from the gateway: started only once the caller has its answer's last byte.

A request the kind's shadow share picks (:func:`~tierwise.cascade.shadow.sampled`, from the
task id) gets a :attr:`~tierwise.gateway.call.Reply.after` hook; the app hands it to Starlette
as the response's background task, which runs after the last body message has been sent — for
a live stream, after the relay ended and the trailer went out. The hook runs
:meth:`Cascade.ashadow <tierwise.cascade.Cascade.ashadow>` with the request's own builder (the
caller's body: tools, tool choice, response format and system prompt kept), then commits the
rows without anyone waiting on them. A stream that broke or a caller that went away leaves no
result, and nothing is shadowed.

At most ``[shadow] max_in_flight`` shadow runs are under way per process; a request that would
start one more is counted ``busy`` and not shadowed, so a burst cannot pile up calls.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tierwise.cascade.shadow import ShadowRun, ShadowState

if TYPE_CHECKING:
    from tierwise.cascade.seams import RequestBuilder
    from tierwise.gateway.call import Call
    from tierwise.gateway.metrics import GatewayMetrics
    from tierwise.gateway.recorder import GroupCommitLedger

__all__ = ["ShadowScheduler"]

log = logging.getLogger("tierwise.gateway")


class ShadowScheduler:
    """Decides which requests are shadowed and runs their shadow calls after the answer."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        recorder: GroupCommitLedger,
        builder_for: Callable[[Call], RequestBuilder],
    ) -> None:
        #: Shared by every cascade this gateway builds (a reload keeps the pause).
        self.state = ShadowState()
        self.metrics = metrics
        self.recorder = recorder
        self._builder_for = builder_for
        self.in_flight = 0
        self._announced: str | None = None
        metrics.shadow_paused.set_function(self._paused)

    def _paused(self) -> float:
        return 1.0 if self.state.status(datetime.now(UTC))["paused"] else 0.0

    def after(self, call: Call) -> Callable[[], Awaitable[None]] | None:
        """The hook that shadows *call* once its answer is out, or ``None`` when it is not due."""
        if call.route not in ("auto", "kind") or call.task.plan is not None:
            return None
        if not call.routing.cascade.shadow_due(call.task):
            return None

        async def shadow() -> None:
            await self.run(call)

        return shadow

    async def run(self, call: Call) -> ShadowRun | None:
        """Shadow *call*'s answered task (nothing when it has no result); never raises."""
        result = call.done
        if result is None:
            return None
        label = call.routing.policy.kind_label(call.task.kind)
        limit = call.routing.policy.model.shadow.max_in_flight
        if self.in_flight >= limit:
            self.metrics.shadow_runs.labels(label, "busy").inc()
            return None
        self.in_flight += 1
        try:
            run = await call.routing.cascade.ashadow(
                result, task=call.task, request_builder=self._builder_for(call)
            )
        except Exception:  # a bug must not take the worker down after the answer was sent
            log.exception("shadow calls for task %s failed", call.task.id)
            self.metrics.shadow_runs.labels(label, "error").inc()
            return None
        finally:
            self.in_flight -= 1
            self.recorder.flush_later(call.task.id)  # nobody waits on these rows
        self.metrics.observe_shadow(label, run)
        if run.paused and self.state.paused_scope != self._announced:
            self._announced = self.state.paused_scope  # once per pause, not per request
            log.warning("%s", run.reason)
        return run
