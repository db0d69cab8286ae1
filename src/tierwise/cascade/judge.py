"""The layer-2 judge: a model asked where a task should go when no routing rule matched.

Off unless a kind's doubt direction is ``judge``. The cascade then makes one extra call before
the task's first attempt — a step of its one loop (:meth:`tierwise.cascade.Cascade._steps`),
through the same drivers, budgets and ledger — to the tier ``[judge] tier`` names (default: the
bottom one), with a fixed, versioned prompt (:data:`JUDGE_PROMPT_VERSION`) that lists the
policy's tiers and a task taxonomy, and asks for one JSON object matching
:data:`JUDGE_SCHEMA`. This module holds what does no I/O: the prompt, the answer's parsing and
the cache of answers by (kind, prompt hash).

The judge's pick is only a proposal: :meth:`tierwise.routing.Router.judged` raises it to the
kind's floor and to every frontier pin. A judge that fails, times out (``[judge] timeout_s``,
one try, no retries) or answers outside the schema leaves the kind's ``judge_fallback``
direction in force; the decision says which happened.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tierwise.providers.base import CompletionRequest
from tierwise.task import ATTRIBUTES, Message, Task

if TYPE_CHECKING:
    from tierwise.policy import Policy

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "JUDGE_SCHEMA",
    "TAXONOMY",
    "JudgeCache",
    "Judgement",
    "judge_prompt",
    "judge_request",
    "parse_judgement",
]

#: Changes whenever the prompt's wording changes (cached answers are keyed by the prompt).
JUDGE_PROMPT_VERSION = "judge-v1"

#: What the judge must answer: one JSON object (the tier must also be on the policy's ladder).
JUDGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tierwise layer-2 judgement v1",
    "type": "object",
    "required": ["tier", "reason"],
    "additionalProperties": False,
    "properties": {
        "tier": {"type": "string", "description": "one tier name from the list given"},
        "reason": {"type": "string", "maxLength": 300, "description": "one line"},
    },
}

#: The articles' task taxonomy, in three bands from the bottom of the ladder to the top (the
#: judge's and the planner's prompts both carry it).
TAXONOMY = """\
Band A (lowest tiers) - token-heavy, little reasoning: pulling fields out of documents, \
reformatting structured data, summarising well-structured facts, classifying into clear-cut \
categories, format translation with explicit mappings, deduplication.
Band B (middle tiers) - moderate reasoning, context matters: classification with edge cases or \
overlapping categories, multi-step tool use with conditions, first drafts from a brief, \
summarising nuanced or contradictory material, code for a well-specified task, entity \
extraction where context disambiguates.
Band C (top tier) - high reasoning or high stakes: planning under many interdependent \
constraints, legal, compliance or risk analysis, adversarial or final review, long coherent \
multi-step work, security or safety calls where a miss is expensive.
When unsure between two tiers, pick the lower: a failed answer climbs one tier automatically."""

_SYSTEM = f"""\
You are the routing judge of tierwise ({JUDGE_PROMPT_VERSION}). Pick the cheapest model tier \
that will do the task below well. Answer with one JSON object and nothing else: \
{{"tier": "<one tier name from the list>", "reason": "<one line>"}}.

Task taxonomy:
{TAXONOMY}"""


@dataclass(frozen=True, slots=True)
class Judgement:
    """The judge's pick: a tier on the ladder and its one-line reason."""

    tier: str
    reason: str


def judge_prompt(task: Task, policy: Policy) -> tuple[str, str]:
    """The judge's (system, user) prompt for *task*: the ladder, the kind and the task's text.

    The task's text is cut to ``[judge] prompt_chars`` characters so the judge stays cheap.
    """
    ladder = policy.ladder
    rungs = []
    for i, name in enumerate(ladder):
        where = "bottom, cheapest" if i == 0 else "top, strongest" if i == len(ladder) - 1 else ""
        label = f" ({where})" if where else ""
        rungs.append(f"- {name}{label}: {policy.tier(name).model}")
    config = policy.kind(task.kind)
    attrs = {k: task.attribute(k) for k in ATTRIBUTES if task.attribute(k) is not None}
    limit = policy.model.judge.prompt_chars
    text = task.prompt if len(task.prompt) <= limit else task.prompt[:limit] + " [...]"
    lines = [
        "Tiers, bottom to top:",
        *rungs,
        "",
        f"Task kind: {task.kind}" + (f" - {config.description}" if config.description else ""),
    ]
    if attrs:
        lines.append("Known attributes: " + ", ".join(f"{k}={v}" for k, v in attrs.items()))
    lines += ["Task text:", "<<<", text, ">>>"]
    return _SYSTEM, "\n".join(lines)


def prompt_hash(system: str, prompt: str) -> str:
    """The cache key's hash of one judge prompt (its version is in the system part)."""
    return hashlib.sha256(f"{system}\0{prompt}".encode("utf-8", "surrogatepass")).hexdigest()


def judge_request(
    task: Task, policy: Policy, model: str, system: str, prompt: str
) -> CompletionRequest:
    """The judge call for *task* to *model*, with the judge's output limit and timeout."""
    settings = policy.model.judge
    return CompletionRequest(
        model=model,
        messages=(Message("user", prompt),),
        system=system,
        max_tokens=settings.max_tokens,
        timeout_s=settings.timeout_s,
        extra={"prompt_id": f"{task.id}:judge", "kind": task.kind},
    )


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_judgement(text: str, ladder: tuple[str, ...]) -> Judgement:
    """Read the judge's answer: one JSON object matching :data:`JUDGE_SCHEMA`, tier on *ladder*.

    A Markdown code fence around the object is tolerated.

    Raises:
        ValueError: the answer is not that; the message says what was wrong.
    """
    from jsonschema import Draft202012Validator

    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the judge's answer is not JSON ({exc.msg})") from None
    errors = sorted(Draft202012Validator(JUDGE_SCHEMA).iter_errors(data), key=str)
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "the answer"
        raise ValueError(f"the judge's answer breaks its schema at {where}: {errors[0].message}")
    tier = str(data["tier"]).strip()
    if tier not in ladder:
        raise ValueError(f"the judge named {tier!r}, which is not a tier ({', '.join(ladder)})")
    return Judgement(tier, " ".join(str(data["reason"]).split()))


class JudgeCache:
    """Judgements by (kind, prompt hash), each kept for *ttl_s* seconds; thread-safe.

    Bounded: past *max_entries* the oldest entry goes. A ``ttl_s`` of 0 keeps nothing.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[float, Judgement]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Judgement | None:
        """The cached judgement for *key*, ``None`` when absent or expired."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires, judgement = found
            if self._clock() >= expires:
                del self._entries[key]
                return None
            return judgement

    def put(self, key: tuple[str, str], judgement: Judgement) -> None:
        """Keep *judgement* for the cache's time to live."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl_s, judgement)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
