"""``model="tierwise/plan-execute"``: a request served by plan-execute-review.

The caller's last user turn (after its system prompt, when it has one) is the goal. The
gateway's cascade runs the plan (:class:`~tierwise.orchestration.PlanRunner`: its calls go
through the same pool, group-commit recorder, budgets — the caller's key's daily budget
included — and metrics as any request), and the reviewed final result comes back as an ordinary
message in the caller's dialect (streamed from the buffer when asked), with the plan's id in
``x-tierwise-plan-id`` and its cost and calls in the usual ``x-tierwise-*`` headers. A plan
that ends without every subtask accepted is a 502 (429 when a budget stopped it) whose body says
why; its rows are in the ledger all the same (``tierwise plan show``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tierwise.gateway.call import Call, Reply
from tierwise.gateway.dialects import RequestError
from tierwise.orchestration.runner import PLAN_KIND
from tierwise.records import Usage

if TYPE_CHECKING:
    from tierwise.gateway.service import GatewayService
    from tierwise.orchestration import PlanResult

__all__ = ["PLAN_KIND", "PLAN_MODEL", "serve_plan"]

#: The reserved model id (the policy may not list a kind called ``plan-execute``).
PLAN_MODEL = "tierwise/plan-execute"


async def serve_plan(service: GatewayService, call: Call) -> Reply:
    """Run *call*'s goal as a plan and answer with its reviewed result.

    Raises:
        RequestError: 429 when a budget stopped the plan; 502 when it was refused or a
            subtask was not accepted (the body names them and the plan id).
    """
    from tierwise.orchestration import PlanRunner

    task = call.task
    goal = task.prompt if not task.system else f"{task.system}\n\n{task.prompt}"
    runner = PlanRunner(call.routing.cascade, store=service.ledger)
    result = await runner.arun(goal, limits=call.limits or None)
    for task_id in result.task_ids:  # every call of the plan is on disk before the answer
        await service.commit(task_id)
    overhead = call.overhead_s()
    service.observe(call, result.attempts, overhead)
    headers = service.headers_for(
        call,
        tier=None,
        model=None,
        attempts=len(result.attempts),
        cost=result.cost_usd,
        overhead_s=overhead,
    )
    headers["x-tierwise-plan-id"] = result.plan_id
    if result.planner_task_id:
        headers["x-tierwise-task-id"] = result.planner_task_id
    if result.status != "accepted" or result.output is None:
        status = 429 if result.status == "budget" else 502
        raise RequestError(
            f"plan {result.plan_id} {result.status}: {result.failure or 'no result'}; "
            f"tierwise plan show {result.plan_id}",
            status=status,
            code="budget_exceeded" if status == 429 else "plan_failed",
            headers=headers,
        )
    data = _message(call, result)
    if not call.stream:
        import json

        return Reply(200, headers, body=json.dumps(data).encode())
    from tierwise.gateway.sse import anthropic_stream, openai_stream

    if call.dialect == "anthropic":
        events = list(anthropic_stream(data))
    else:
        events = list(openai_stream(data, include_usage=call.include_usage))
    return Reply(200, headers, stream=_once(b"".join(events)))


def _message(call: Call, result: PlanResult) -> dict[str, Any]:
    """The result as a Messages API message or a Chat Completions completion."""
    usage = sum((a.usage for a in result.attempts), Usage())
    text = result.output or ""
    if call.dialect == "anthropic":
        return {
            "id": f"msg_plan_{result.plan_id}",
            "type": "message",
            "role": "assistant",
            "model": PLAN_MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.total_input_tokens,
                "output_tokens": usage.output_tokens,
            },
        }
    return {
        "id": f"chatcmpl-plan-{result.plan_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": PLAN_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.total_input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
    }


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
