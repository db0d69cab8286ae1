"""The offline plan-execute-review demo (``tierwise demo --plan``): simulated models, the real
cascade, SDKs, orchestration and ledger.

A scripted planner (the top tier's model) splits the articles' example goal — research and
summarise a competitive landscape — into six subtasks with an assigned tier each; scripted
executors answer them; scripted reviewers (the second tier's model, or the top's for outputs
the second tier wrote: never the executor's) accept each output, except the cheap tier's market
segmentation, which is sent one tier up.
The planner assigns the final accuracy review to the cheap tier, and the ``review`` kind's floor
raises it to ``mid``. Everything is recorded in a SQLite ledger, and the plan's cost tree is read
back from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.orchestration import PlanResult, PlanTree, SubtaskResult
    from tierwise.policy import Policy
    from tierwise.testing import ModelScript, Reply

__all__ = ["GOAL", "PlanDemoReport", "run_plan_demo"]

_PAGES = {
    "Acme": "usage-based pricing from $0.002 per call, a REST API and Python SDK, SOC 2 report, "
    "EU hosting, a free tier of 10,000 calls a month, and volume discounts above a million",
    "Globex": "seat-based pricing at $49 per user, a GraphQL API, SSO on the enterprise plan, "
    "a marketplace of 120 integrations, and 24/7 support on annual contracts",
    "Initech": "usage-based pricing with a monthly minimum of $500, webhooks and a REST API, "
    "on-premises deployment for regulated industries, and audit logs kept for seven years",
    "Umbrella": "a flat $2,000 per month platform fee, an API limited to 50 requests a second, "
    "bundled analytics dashboards, and professional services for migrations",
}

GOAL = (
    "Research and summarise the competitive landscape for product X from these vendor pages, "
    "for an executive audience.\n"
    + "\n".join(f"- {name.lower()}.example: {text}." for name, text in _PAGES.items())
)

#: (id, kind, prompt, dependencies, tier the planner assigns, justification)
STEPS: tuple[tuple[str, str, str, tuple[str, ...], str, str], ...] = (
    ("s1", "extract", "Extract the company names from the vendor page list as JSON.", (),
     "cheap", "field extraction from a clear list"),
    ("s2", "extract", "Extract each company's product features as JSON.", ("s1",),
     "cheap", "structured extraction"),
    ("s3", "classify", "Classify each company by primary market segment, as JSON with a "
     "confidence.", ("s1",), "cheap", "categories look clear-cut"),
    ("s4", "summarize", "Identify the themes that cut across the segments.", ("s2", "s3"),
     "mid", "needs synthesis across inputs"),
    ("s5", "draft_reply", "Draft a one-paragraph executive summary.", ("s4",),
     "mid", "first draft from a brief"),
    ("s6", "review", "Check the summary for accuracy against the extracted facts.", ("s5",),
     "cheap", "a quick read-through"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlanDemoReport:
    """What the plan demo produced: the run, its cost tree, and where the ledger is."""

    result: PlanResult
    tree: PlanTree
    ledger_path: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "simulated_models": True,
            "ledger": str(self.ledger_path),
            "plan": self.result.as_dict(),
            "cost_tree": self.tree.as_dict(),
        }


def _kinds(policy: Policy) -> dict[str, str]:
    """The demo's kinds mapped onto the policy's (its own names when the policy lists them)."""
    listed = list(policy.kinds)
    if not listed:
        raise ValueError("the plan demo needs a policy that lists kinds ([kinds.NAME])")
    wanted = dict.fromkeys(kind for _, kind, *_ in STEPS)
    return {k: k if k in listed else listed[i % len(listed)] for i, k in enumerate(wanted)}


def _plan(policy: Policy) -> str:
    kinds = _kinds(policy)
    ladder = policy.ladder
    tier = {"cheap": ladder[0], "mid": ladder[min(1, len(ladder) - 1)]}
    subtasks = [
        {"id": sid, "kind": kinds[kind], "prompt": prompt, "depends_on": list(deps),
         "tier": tier[assigned], "justification": why}
        for sid, kind, prompt, deps, assigned, why in STEPS
    ]  # fmt: skip
    return json.dumps({"subtasks": subtasks})


def _step(request: dict[str, Any]) -> str:
    text = " ".join(str(m.get("content")) for m in request.get("messages", []))
    found = re.search(r"(?:Your step|Step) \((s\d)\)|Step (s\d) ", text)
    return (found.group(1) or found.group(2)) if found else ""


def _system(request: dict[str, Any]) -> str:
    system = request.get("system") or ""
    return system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)


def _answer(step: str, tier: str) -> str:
    """A simulated executor's answer: valid for its kind's validators; the cheap tier gets the
    segmentation wrong (the reviewer catches it)."""
    if step == "s1":
        return json.dumps({"companies": list(_PAGES)})
    if step == "s2":
        return json.dumps({name: text.split(", ") for name, text in _PAGES.items()})
    if step == "s3":
        segments = {
            "Acme": "developer self-serve",
            "Globex": "mid-market SaaS",
            "Initech": "regulated enterprise",
            "Umbrella": "mid-market platform",
        }
        if tier == "cheap":
            segments = dict.fromkeys(segments, "unknown")
        return json.dumps({"answer": segments, "confidence": 0.9})
    if step == "s4":
        return (
            "Three themes cut across the segments. Pricing is moving to usage: Acme and Initech "
            "charge per call, Globex per seat and Umbrella a flat fee, so buyers compare cost at "
            "their own volume. APIs are table stakes, and the difference lies in limits and "
            "protocols (REST, GraphQL, webhooks). Trust features decide enterprise deals: SOC 2, "
            "EU hosting, on-premises deployment and long audit trails appear exactly where the "
            "regulated segments buy."
        )
    if step == "s5":
        return (
            "Product X enters a market of four vendors split between self-serve developers "
            "(Acme), mid-market SaaS buyers (Globex, Umbrella) and regulated enterprises "
            "(Initech). Usage-based pricing is becoming the norm, APIs are expected everywhere, "
            "and compliance features win the largest contracts. X should lead with transparent "
            "usage pricing and a generous free tier, match the API surface of Acme and Globex, "
            "and plan EU hosting and audit logs before approaching regulated buyers."
        )
    return "Accurate: every claim in the summary matches the extracted vendor facts."


def demo_scripts(policy: Policy) -> dict[str, ModelScript]:
    """One scripted model per tier: the top one plans; every one executes and reviews."""
    from tierwise.testing import ModelScript, Reply

    plan = _plan(policy)
    ladder = policy.ladder
    top = ladder[-1]

    def script(tier: str) -> ModelScript:
        def reply(request: dict[str, Any]) -> Reply:
            system = _system(request)
            if "planner of tierwise" in system and tier == top:
                return Reply(plan)
            if "reviewer of tierwise" in system:
                wrong = ': "unknown"' in request["messages"][0]["content"]
                verdict = {
                    "verdict": "reject" if wrong else "accept",
                    "reason": "every company is labelled 'unknown': the segments are missing"
                    if wrong
                    else "matches the step's instructions",
                }
                return Reply(json.dumps(verdict))
            name = "cheap" if tier == ladder[0] else tier
            return Reply(_answer(_step(request), name))

        return ModelScript(reply=reply)

    return {policy.tier(name).model: script(name) for name in ladder}


def run_plan_demo(
    policy: Policy,
    ledger_path: Path,
    *,
    progress: Any = None,
) -> PlanDemoReport:
    """Run the demo goal as plan-execute-review on simulated models into *ledger_path*."""
    from tierwise.cascade import Cascade
    from tierwise.demo import DEMO_API_KEY
    from tierwise.ledger import open_ledger
    from tierwise.orchestration import PlanRunner, plan_tree
    from tierwise.pricing import PriceCatalog
    from tierwise.testing import FakeUpstream
    from tierwise.testing.policies import served_by

    env = {"TIERWISE_DEMO_KEY": DEMO_API_KEY}
    with FakeUpstream(demo_scripts(policy), default=None) as upstream:
        local = served_by(policy, upstream, api_key_env="TIERWISE_DEMO_KEY")
        with open_ledger(ledger_path) as ledger, Cascade(local, ledger=ledger, env=env) as cascade:
            result = PlanRunner(cascade).run(GOAL, progress=progress)
            tree = plan_tree(ledger, result.plan_id, PriceCatalog(policy.model.prices))
    return PlanDemoReport(result, tree, ledger_path)


def progress_line(result: SubtaskResult) -> str:
    """One line per finished subtask, for the demo's progress."""
    where = f" on {result.tier}" if result.tier else ""
    up = " (sent up by the reviewer)" if result.reviewer_climbs else ""
    return f"{result.subtask.id} {result.subtask.kind}: {result.outcome}{where}{up}"
