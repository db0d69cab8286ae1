"""The offline end-to-end demo: simulated models, the real cascade, SDKs and ledger.

:func:`run_demo` starts tierwise's fake upstream with one scripted model per tier, runs a
deterministic batch of the articles' task kinds through :class:`~tierwise.cascade.Cascade`
into a SQLite ledger, then runs the same batch pinned to the strongest tier for comparison.

The simulated models fail *by kind and content*, never at random, so the escalations they cause
are a real signal later learning and reports can find:

- the cheap model reports low confidence on support messages that hedge ("but", "although",
  "not sure") — the ``confidence`` validator escalates them;
- it answers in prose instead of JSON for invoices with more than four line items or a credit
  note — the ``json`` validator escalates them;
- it refuses replies that mention chargebacks or lawyers — ``not_refusal`` escalates them;
- the mid model runs out of tokens on code edits asking to rewrite a whole module —
  ``not_truncated`` sends those to the strong model.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierwise.policy import Policy
from tierwise.task import Task

if TYPE_CHECKING:
    from tierwise.cascade import CascadeResult
    from tierwise.records import AttemptRecord
    from tierwise.testing import ModelScript, Reply

#: The fake key the demo's providers send; the fake upstream accepts any key.
DEMO_API_KEY = "demo-key-not-secret"

_WORDS = [
    "order",
    "account",
    "delivery",
    "invoice",
    "customer",
    "team",
    "service",
    "update",
    "request",
    "schedule",
    "payment",
    "report",
    "project",
    "release",
    "support",
    "product",
    "issue",
    "review",
    "change",
    "config",
    "module",
    "feature",
    "data",
    "user",
    "system",
    "access",
    "billing",
    "contract",
    "meeting",
    "handoff",
    "deadline",
    "status",
    "priority",
]

_HEDGES = ("but", "although", "not sure", "either")
_LABELS = {
    "refund": "billing",
    "invoice": "billing",
    "password": "account",
    "login": "account",
    "price": "sales",
    "demo": "sales",
}


def _filler(rng: random.Random, words: int) -> str:
    """Deterministic filler text standing in for the documents real tasks carry."""
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def demo_tasks(n: int = 200, *, seed: int = 7) -> list[Task]:
    """A deterministic mixed batch of the articles' task kinds (mostly cheap-tier work).

    The shares follow the articles' picture of an agent fleet: classification, extraction,
    routing, spam filtering, short summaries and plain replies make up most calls; code edits,
    severe bugs, security and architecture work are the minority.
    """
    rng = random.Random(seed)
    makers: list[tuple[float, Callable[[random.Random, int], Task]]] = [
        (0.24, _classify),
        (0.18, _extract),
        (0.08, _route),
        (0.08, _spam),
        (0.12, _summarize),
        (0.10, _reply),
        (0.08, _code_edit),
        (0.05, _docs_edit),
        (0.03, _debug),
        (0.02, _security),
        (0.02, _architecture),
    ]
    weights = [w for w, _ in makers]
    return [rng.choices(makers, weights)[0][1](rng, i) for i in range(n)]


def _mk(i: int, kind: str, prompt: str, **attrs: Any) -> Task:
    attrs.setdefault("input_tokens", max(1, len(prompt) // 4))
    return Task.create(kind, prompt, id=f"demo-{i:04d}", session=f"agent-{i % 7}", **attrs)


def _classify(rng: random.Random, i: int) -> Task:
    topic = rng.choice(list(_LABELS))
    hedge = rng.random() < 0.08  # the articles: Haiku gets ~95% of classifications right
    middle = f", {rng.choice(_HEDGES)} maybe it is something else" if hedge else ""
    text = f"My {topic} does not work{middle}. {_filler(rng, rng.randint(40, 160))}"
    prompt = f"CLASSIFY the intent of this support message as JSON with a confidence:\n{text}"
    return _mk(i, "classify", prompt)


def _extract(rng: random.Random, i: int) -> Task:
    # The articles: ~92% of extractions pass on Haiku; long invoices and credit notes do not.
    items = rng.choice((5, 6, 8)) if rng.random() < 0.06 else rng.choice((1, 2, 2, 3, 3, 4))
    credit = rng.random() < 0.03
    lines = "\n".join(
        f"- {rng.choice(_WORDS)} x{rng.randint(1, 9)} {rng.randint(5, 900)}.00 EUR"
        for _ in range(items)
    )
    head = "CREDIT NOTE" if credit else "INVOICE"
    prompt = (
        f"EXTRACT vendor, date, currency and total as JSON from this document:\n{head} "
        f"#{1000 + i} from Vendor{rng.randint(1, 40)} GmbH, 2026-11-{rng.randint(1, 28):02d}\n"
        f"{lines}\n{_filler(rng, rng.randint(80, 300))}"
    )
    return _mk(i, "extract", prompt)


def _route(rng: random.Random, i: int) -> Task:
    prompt = f"ROUTE this request to the right agent: {_filler(rng, rng.randint(30, 120))}"
    return _mk(i, "route", prompt)


def _spam(rng: random.Random, i: int) -> Task:
    prompt = f"SPAM or not: {_filler(rng, rng.randint(20, 80))}"
    return _mk(i, "filter_spam", prompt)


def _summarize(rng: random.Random, i: int) -> Task:
    words = rng.choice((300, 600, 1200, 2000, 3600))
    prompt = f"SUMMARIZE for the handoff note:\n{_filler(rng, words)}"
    return _mk(i, "summarize", prompt)


def _reply(rng: random.Random, i: int) -> Task:
    trouble = rng.random() < 0.1
    extra = rng.choice(("a chargeback", "my lawyer")) if trouble else "the delivery date"
    prompt = (
        f"REPLY to this customer: I am writing about {extra}. {_filler(rng, rng.randint(60, 200))}"
    )
    return _mk(i, "draft_reply", prompt, requires_code=False)


def _code_edit(rng: random.Random, i: int) -> Task:
    whole = rng.random() < 0.2
    ask = "Rewrite the entire module" if whole else "Fix the off-by-one in the pager"
    prompt = f"EDIT code: {ask} in src/app/pager.py.\n{_filler(rng, rng.randint(200, 600))}"
    return _mk(i, "code_edit", prompt, files=rng.choice((1, 2)))


def _docs_edit(rng: random.Random, i: int) -> Task:
    domain = rng.choice(("docs", "config", "tests"))
    prompt = (
        f"[scope: single-file] [domain: {domain}] [ambiguity: low]\n"
        f"EDIT the {domain} file: {_filler(rng, rng.randint(60, 200))}"
    )
    return _mk(i, "code_edit", prompt, files=1)


def _debug(rng: random.Random, i: int) -> Task:
    prompt = f"DEBUG the failing payment retry job: {_filler(rng, rng.randint(200, 500))}"
    return _mk(i, "debug", prompt, severity=rng.choice((2, 3, 4, 5)))


def _security(rng: random.Random, i: int) -> Task:
    prompt = (
        "[scope: multi-file] [domain: security] [ambiguity: medium]\n"
        f"EDIT the session token checks: {_filler(rng, rng.randint(200, 500))}"
    )
    return _mk(i, "code_edit", prompt, files=3)


def _architecture(rng: random.Random, i: int) -> Task:
    prompt = f"ARCHITECTURE: choose a queue for billing events: {_filler(rng, 400)}"
    return _mk(i, "architecture", prompt)


# -- the simulated models -------------------------------------------------------------------------


def _first_user_text(request: Mapping[str, Any]) -> str:
    """The original task text: the first user turn of either dialect's request."""
    for message in request.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def _answer(rng: random.Random, words: int) -> str:
    return _filler(rng, words).capitalize() + "."


def _good(text: str) -> str:
    """What a capable model answers: valid, confident, complete."""
    rng = random.Random(len(text))
    if text.startswith("CLASSIFY"):
        label = next((v for k, v in _LABELS.items() if k in text), "other")
        return json.dumps({"label": label, "confidence": 0.93})
    if text.startswith("EXTRACT"):
        vendor = re.search(r"from (\S+ GmbH)", text)
        totals = [float(x) for x in re.findall(r" (\d+\.\d\d) EUR", text)]
        return json.dumps(
            {
                "vendor": vendor.group(1) if vendor else None,
                "currency": "EUR",
                "total": round(sum(totals), 2),
                "credit_note": text.count("CREDIT NOTE") > 0,
            }
        )
    if text.startswith("ROUTE"):
        return rng.choice(("billing-agent", "support-agent", "sales-agent"))
    if text.startswith("SPAM"):
        return rng.choice(("spam", "not spam"))
    if text.startswith("SUMMARIZE"):
        return _answer(rng, 120)
    if text.startswith("REPLY"):
        return "Thank you for getting in touch. " + _answer(rng, 150)
    return "Here is the change:\n" + _answer(rng, 300)


def cheap_reply(request: Mapping[str, Any]) -> str | Reply:
    """The simulated cheap model: right on routine work, wrong on the hard cases above."""
    from tierwise.testing import REFUSAL_TEXT, Reply

    text = _first_user_text(request)
    if text.startswith("CLASSIFY") and any(f" {h} " in text for h in _HEDGES):
        return json.dumps({"label": "other", "confidence": 0.41})
    if text.startswith("EXTRACT") and (text.count("\n- ") > 4 or "CREDIT NOTE" in text):
        return "The vendor appears to be listed at the top; the total is the sum of the lines."
    if text.startswith("REPLY") and ("chargeback" in text or "lawyer" in text):
        return Reply(text=REFUSAL_TEXT, stop="refusal")
    return _good(text)


def mid_reply(request: Mapping[str, Any]) -> str | Reply:
    """The simulated mid model: fails only on whole-module rewrites (runs out of tokens)."""
    from tierwise.testing import Reply

    text = _first_user_text(request)
    if "entire module" in text:
        return Reply(
            text="Here is the rewritten module:\n" + _answer(random.Random(1), 80),
            stop="max_tokens",
        )
    return _good(text)


def strong_reply(request: Mapping[str, Any]) -> str:
    """The simulated strong model: always right (it is the ceiling of the ladder)."""
    return _good(_first_user_text(request))


def demo_scripts(policy: Policy) -> dict[str, ModelScript]:
    """A :class:`ModelScript` per tier model: cheap / mid / strong behaviours by ladder position."""
    from tierwise.testing import ModelScript

    replies = [cheap_reply, mid_reply, strong_reply]
    scripts: dict[str, ModelScript] = {}
    for i, name in enumerate(policy.ladder):
        pos = 0 if i == 0 else 2 if i == len(policy.ladder) - 1 else 1
        tier = policy.tier(name)
        for model in [tier.model, *(a.model for a in tier.alternate_specs())]:
            scripts[model] = ModelScript(reply=replies[pos], cache_read_tokens=0)
    return scripts


# -- the run ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class KindSummary:
    """One kind's share of the batch."""

    tasks: int = 0
    start_tiers: Counter[str] = field(default_factory=Counter)
    final_tiers: Counter[str] = field(default_factory=Counter)
    escalated: int = 0
    cost_usd: Decimal = Decimal(0)
    strong_cost_usd: Decimal = Decimal(0)


@dataclass(slots=True)
class DemoReport:
    """What the demo measured."""

    tasks: int
    cost_usd: Decimal
    strong_cost_usd: Decimal
    wasted_usd: Decimal
    attempts: int
    escalated_tasks: int
    failed_tasks: int
    red_line: float
    kinds: dict[str, KindSummary]
    reasons: Counter[tuple[str, str, str]]
    ledger_path: Path | str
    results: list[CascadeResult]

    @property
    def escalation_rate(self) -> float:
        return self.escalated_tasks / self.tasks if self.tasks else 0.0

    @property
    def saving_ratio(self) -> Decimal:
        if not self.strong_cost_usd:
            return Decimal(0)
        return 1 - self.cost_usd / self.strong_cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "simulated_models": True,
            "tasks": self.tasks,
            "attempts": self.attempts,
            "cost_usd": str(self.cost_usd),
            "strongest_tier_cost_usd": str(self.strong_cost_usd),
            "saving_ratio": round(float(self.saving_ratio), 4),
            "wasted_usd": str(self.wasted_usd),
            "escalated_tasks": self.escalated_tasks,
            "escalation_rate": round(self.escalation_rate, 4),
            "escalation_red_line": self.red_line,
            "failed_tasks": self.failed_tasks,
            "ledger": str(self.ledger_path),
            "kinds": {
                k: {
                    "tasks": s.tasks,
                    "start_tiers": dict(s.start_tiers),
                    "final_tiers": dict(s.final_tiers),
                    "escalated": s.escalated,
                    "cost_usd": str(s.cost_usd),
                    "strongest_tier_cost_usd": str(s.strong_cost_usd),
                }
                for k, s in sorted(self.kinds.items())
            },
            "escalation_reasons": [
                {"kind": k, "from_tier": t, "reason": r, "count": n}
                for (k, t, r), n in self.reasons.most_common()
            ],
        }


def escalated_by_definition(trail: Sequence[AttemptRecord], result: CascadeResult | None) -> bool:
    """Whether a task escalated, by the one definition (:mod:`tierwise.ledger.escalation`):
    accepted above its starting tier, or failed on every tier (*result* ``None``)."""
    from tierwise.ledger.escalation import AttemptFacts, classify

    own = [AttemptFacts(a.role, a.tier_index, a.outcome) for a in trail]
    start = (
        result.decision.tier_index
        if result is not None
        else min((a.tier_index for a in own if a.role == "live"), default=0)
    )
    outcome = "accepted" if result is not None else "exhausted"
    return classify(role="live", start_index=start, outcome=outcome, attempts=own).escalated


def run_demo(
    policy: Policy,
    tasks: Iterable[Task],
    ledger_path: Path | str,
    *,
    progress: Callable[[int], None] | None = None,
    now: Callable[[], datetime] | None = None,
) -> DemoReport:
    """Run *tasks* through the cascade on simulated models, then again on the strongest tier.

    The tierwise run is recorded in the ledger at *ledger_path* (a SQLite file, or any ledger
    URL), its timestamps from *now* when given (a fake clock: a run "a week later"); the
    strongest-tier run is only for comparison and is kept in memory. ``progress(n)`` is called
    after each task of either run (2 × len(tasks) calls in all).
    """
    from tierwise.cascade import Cascade
    from tierwise.errors import EscalationExhaustedError
    from tierwise.ledger import open_ledger
    from tierwise.testing import FakeUpstream
    from tierwise.testing.policies import served_by

    batch = list(tasks)
    env = {"TIERWISE_DEMO_KEY": DEMO_API_KEY}
    top = policy.ladder[-1]
    kinds: dict[str, KindSummary] = {}
    results: list[CascadeResult] = []
    cost = strong_cost = wasted = Decimal(0)
    attempts = escalated = failed = 0
    with FakeUpstream(demo_scripts(policy), default=None) as upstream:
        local = served_by(policy, upstream, api_key_env="TIERWISE_DEMO_KEY")
        stamp = now or (lambda: datetime.now(UTC))
        with (
            open_ledger(ledger_path, now=now) as ledger,
            Cascade(local, ledger=ledger, env=env, now=stamp) as cascade,
        ):
            for task in batch:
                summary = kinds.setdefault(task.kind, KindSummary())
                summary.tasks += 1
                answered: CascadeResult | None = None
                try:
                    result = cascade.run(task)
                except EscalationExhaustedError as exc:
                    trail = exc.attempts
                    failed += 1
                else:
                    answered = result
                    results.append(result)
                    trail = result.attempts
                    summary.final_tiers[result.tier] += 1
                    summary.start_tiers[result.decision.tier] += 1
                spent = sum((a.cost_usd for a in trail), Decimal(0))
                summary.cost_usd += spent
                cost += spent
                wasted += sum((a.cost_usd for a in trail if a.outcome != "accepted"), Decimal(0))
                attempts += len(trail)
                if escalated_by_definition(trail, answered):
                    summary.escalated += 1
                    escalated += 1
                if progress:
                    progress(1)
            reasons = Counter(cascade.escalations)
        with Cascade(local, env=env) as baseline:
            for task in batch:
                result = baseline.run(task.with_(session=None), start_tier=top)
                kinds[task.kind].strong_cost_usd += result.cost_usd
                strong_cost += result.cost_usd
                if progress:
                    progress(1)
    return DemoReport(
        tasks=len(batch),
        cost_usd=cost,
        strong_cost_usd=strong_cost,
        wasted_usd=wasted,
        attempts=attempts,
        escalated_tasks=escalated,
        failed_tasks=failed,
        red_line=policy.model.fleet.escalation_red_line,
        kinds=kinds,
        reasons=reasons,
        ledger_path=ledger_path,
        results=results,
    )
