"""Explain one task: why it went where it went, what each attempt cost, and what was passed up.

:func:`explain_task` reads the task's rows from the ledger (stored costs, never recomputed) and
returns one JSON-ready dict; :func:`render_explanation` turns it into the text
``tierwise explain`` prints. The parts:

* ``decision`` — the routing step (a frontier pin, a rule, the doubt direction, a passthrough
  model), the floor that raised it and where the floor came from (``policy`` or ``learned``),
  a budget that moved the start, and the sentence the router wrote;
* ``attempts`` — each call with its model, tokens per usage bucket, cost, latency, validators'
  verdicts, failure text and what it climbed from;
* ``handoffs`` — for each climb, what the next tier was told: the rejected answer (when the
  policy stores content) and the reason it was rejected;
* ``feedback`` — flags people left on the task, when the ledger has them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

__all__ = ["TaskNotFoundError", "explain_task", "render_explanation", "resolve_task_id"]

_BUCKETS = (
    ("input_tokens", "in"),
    ("cache_write_5m_tokens", "cache-write 5m"),
    ("cache_write_1h_tokens", "cache-write 1h"),
    ("cache_read_tokens", "cache-read"),
    ("output_tokens", "out"),
)


class TaskNotFoundError(LookupError):
    """No task, or more than one, matches the id given."""


def resolve_task_id(ledger: Ledger, given: str) -> str:
    """The full id of the task *given* names (a full id, or a prefix of at least 6 characters).

    Raises:
        TaskNotFoundError: no task matches, the prefix is too short, or it matches several.
    """
    if ledger.task(given) is not None:
        return given
    if len(given) < 6:
        raise TaskNotFoundError(f"no task {given!r}; give the full id or at least 6 characters")
    found = ledger.task_ids(given, limit=3)
    if not found:
        raise TaskNotFoundError(f"no task id starts with {given!r}")
    if len(found) > 1:
        raise TaskNotFoundError(
            f"{given!r} matches several tasks ({', '.join(found[:2])}, …); give more characters"
        )
    return found[0]


def explain_task(ledger: Ledger, task_id: str) -> dict[str, Any]:
    """Everything the ledger knows about one task, as one JSON-ready dict.

    Raises:
        TaskNotFoundError: see :func:`resolve_task_id`.
    """
    full = resolve_task_id(ledger, task_id)
    task = ledger.task(full)
    assert task is not None
    rows = ledger.attempts_of(full)
    attempts = [_attempt(r) for r in rows]
    by_no = {a["attempt_no"]: a for a in attempts}
    handoffs = []
    for a in attempts:
        source = by_no.get(a["escalated_from"]) if a["escalated_from"] is not None else None
        if source is None:
            continue
        handoffs.append(
            {
                "from_attempt": source["attempt_no"],
                "from_tier": source["tier"],
                "to_attempt": a["attempt_no"],
                "to_tier": a["tier"],
                "reason": source["failure"],
                "rejected_answer": source["output"],
                "answer_stored": source["output"] is not None or source["output_chars"] is None,
            }
        )
    revision = ledger.policy_revision(task["policy_revision"]) if task["policy_revision"] else None
    key = None
    if task.get("key_id") is not None:
        key = next((k.name for k in ledger.list_api_keys(include_revoked=True)
                    if k.id == task["key_id"]), None)  # fmt: skip
    decision = dict(task["decision"])
    own = [a for a in attempts if a["role"] != "shadow"]
    shadow = [a for a in attempts if a["role"] == "shadow"]
    return {
        "task_id": full,
        "kind": task["kind"],
        "role": task["role"],
        "session": task["session"],
        "key": key,
        "key_id": task.get("key_id"),
        "created_at": task["created_at"],
        "finished_at": task["finished_at"],
        "outcome": task["outcome"],
        "final_tier": task["final_tier"],
        "cost_usd": task["cost_usd"],
        "latency_s": task["latency_s"],
        "prompt_chars": task["prompt_chars"],
        "prompt": task["prompt"],
        "output": task["output"],
        "policy": {
            "revision": task["policy_revision"],
            "source": None if revision is None else revision["source"],
        },
        "decision": decision,
        "attempts": attempts,
        # shadow calls are the shadow budget's: not the task's cost, on a line of their own
        "attempts_cost_usd": sum((a["cost_usd"] for a in own), Decimal(0)),
        "wasted_usd": sum(
            (a["cost_usd"] for a in own if a["outcome"] in ("rejected", "error", "partial")),
            Decimal(0),
        ),
        "shadow_cost_usd": sum((a["cost_usd"] for a in shadow), Decimal(0)),
        "agreements": ledger.agreements_of(full),
        "handoffs": handoffs,
        "feedback": _feedback(ledger, full),
    }


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt_no": row["attempt_no"],
        "role": row["role"],
        "tier": row["tier"],
        "tier_index": row["tier_index"],
        "model": row["model"],
        "provider": row["provider"],
        "outcome": row["outcome"],
        "tokens": dict(row["usage"]),
        "cost_usd": row["cost_usd"],
        "latency_s": row["latency_s"],
        "verdicts": row["verdicts"],
        "failure": row["failure"],
        "error_class": row["error_class"],
        "escalated_from": row["escalated_from"],
        "stop_reason": row["stop_reason"],
        "output_chars": row["output_chars"],
        "output": row["output"],
        "started_at": row["started_at"],
    }


def _feedback(ledger: Ledger, task_id: str) -> list[dict[str, Any]]:
    """People's flags on the task, when this ledger records feedback."""
    reader = getattr(ledger, "feedback_for", None)
    return list(reader(task_id)) if callable(reader) else []


def render_explanation(data: dict[str, Any]) -> str:
    """The explanation as text, for people."""
    lines = []
    d = data["decision"]
    head = f"task {data['task_id']} ({data['kind']}, {data['role']})"
    if data["session"]:
        head += f", session {data['session']}"
    if data["key"] or data["key_id"] is not None:
        head += f", key {data['key'] or '#' + str(data['key_id'])}"
    lines.append(head)
    created = data["created_at"]
    lines.append(
        f"  {data['outcome']} on {data['final_tier'] or '-'} for ${data['cost_usd']} "
        f"in {_secs(data['latency_s'])}, started {created:%Y-%m-%d %H:%M:%S} UTC; "
        f"policy revision {(data['policy']['revision'] or '-')[:12]}"
    )
    lines.append("")
    lines.append("routing")
    lines.append(f"  {d.get('explanation') or d.get('tier')}")
    detail = [f"step {d.get('step')}"]
    if d.get("rule_name") or d.get("rule_index") is not None:
        detail.append(f"rule {d.get('rule_name') or '#' + str(d.get('rule_index'))}")
    if d.get("constraint_name") or d.get("constraint_index") is not None:
        detail.append(f"frontier pin {d.get('constraint_name') or d.get('constraint_index')}")
    if d.get("floor"):
        detail.append(f"floor {d['floor']} ({d.get('floor_source') or 'policy'})")
    if d.get("doubt"):
        detail.append(f"doubt {d['doubt']}")
    lines.append("  " + "; ".join(detail))
    lines.append("")
    lines.append("attempts")
    for a in data["attempts"]:
        tokens = ", ".join(
            f"{label} {a['tokens'][key]}" for key, label in _BUCKETS if a["tokens"].get(key)
        )
        role = "" if a["role"] in ("live", "replay") else f" [{a['role']}]"
        lines.append(
            f"  #{a['attempt_no']}{role} {a['tier']} {a['model']}: {a['outcome']}, "
            f"${a['cost_usd']}, {_secs(a['latency_s'])}" + (f" ({tokens})" if tokens else "")
        )
        for v in a["verdicts"]:
            mark = "pass" if v["ok"] else "FAIL"
            lines.append(
                f"      {mark} {v['validator']}" + (f": {v['reason']}" if v["reason"] else "")
            )
        if a["failure"] and a["outcome"] != "rejected":
            lines.append(f"      {a['error_class'] or 'failure'}: {a['failure']}")
    lines.append(
        f"  total ${data['attempts_cost_usd']}, of which ${data['wasted_usd']} on attempts "
        "that were thrown away"
    )
    if data["shadow_cost_usd"] or data["agreements"]:
        lines.append(
            f"  shadow calls ${data['shadow_cost_usd']} (the shadow budget's, not the task's)"
        )
        for p in data["agreements"]:
            said = {True: "agree", False: "differ", None: "nothing to compare"}[p["agree"]]
            passed = "/".join(
                "pass" if ok else "fail" for ok in (p["low_passed"], p["high_passed"])
            )
            lines.append(
                f"      {p['low_tier']} vs {p['high_tier']}: {said} ({p['method']}; {passed})"
            )
    if data["handoffs"]:
        lines.append("")
        lines.append("passed up on each climb")
        for h in data["handoffs"]:
            lines.append(
                f"  #{h['from_attempt']} {h['from_tier']} -> #{h['to_attempt']} {h['to_tier']}: "
                f"{h['reason'] or 'provider error'}"
            )
            if h["rejected_answer"] is not None:
                shown = h["rejected_answer"]
                shown = shown if len(shown) <= 200 else shown[:199] + "…"
                lines.append(f"      rejected answer: {shown!r}")
            elif h["from_tier"]:
                lines.append("      (the rejected answer is not stored: store_content = false)")
    if data["feedback"]:
        lines.append("")
        lines.append("feedback")
        for f in data["feedback"]:
            lines.append(f"  {f.get('flag')} by {f.get('author') or '-'}: {f.get('note') or ''}")
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
