"""Domain values: the task to route and the decision about it.

Frozen dataclasses with slots; wire and configuration shapes live in pydantic models elsewhere.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from tierwise.records import PlanRef

Scope = Literal["single-file", "multi-file", "cross-service"]
Domain = Literal["docs", "config", "tests", "feature", "security", "schema", "refactor"]
Ambiguity = Literal["low", "medium", "high"]

SCOPES: tuple[str, ...] = ("single-file", "multi-file", "cross-service")
DOMAINS: tuple[str, ...] = ("docs", "config", "tests", "feature", "security", "schema", "refactor")
AMBIGUITIES: tuple[str, ...] = ("low", "medium", "high")

#: Task attributes a routing condition may name, besides ``kind``.
ATTRIBUTES: tuple[str, ...] = (
    "input_tokens",
    "input_chars",
    "files",
    "severity",
    "requires_code",
    "scope",
    "domain",
    "ambiguity",
)

_INT_ATTRIBUTES = ("input_tokens", "input_chars", "files", "severity")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
#: Larger counts are refused: no task has them, and they would overflow database integers.
_MAX_COUNT = 2**31 - 1

_ANNOTATION = re.compile(r"\[\s*(scope|domain|ambiguity)\s*:\s*([A-Za-z-]+)\s*\]", re.IGNORECASE)


def parse_annotations(text: str) -> dict[str, str]:
    """Read ``[scope: single-file] [domain: docs] [ambiguity: low]`` annotations from text.

    Only the first line that carries annotations is read (the articles' one-line form). Values
    are lower-cased; values outside the known vocabulary are dropped, so a typo never silently
    routes a task somewhere else — it simply does not carry that annotation.
    """
    allowed = {"scope": SCOPES, "domain": DOMAINS, "ambiguity": AMBIGUITIES}
    for line in text.splitlines():
        found = _ANNOTATION.findall(line)
        if found:
            out: dict[str, str] = {}
            for key, value in found:
                k, v = key.lower(), value.lower()
                if v in allowed[k]:
                    out[k] = v
            return out
    return {}


def parse_attribute(item: str) -> tuple[str, int | bool | str]:
    """Parse one ``key=value`` task attribute (``files=2``, ``requires_code=true``, ``scope=...``).

    Names, integers (``severity`` 1 to 5, counts 0 or more), booleans and the annotation
    vocabularies are checked, so a typo never silently routes a task somewhere else.

    Raises:
        ValueError: the item is malformed; the message quotes it and says what was expected.
    """
    import difflib

    def hint(word: str, choices: tuple[str, ...]) -> str:
        close = difflib.get_close_matches(word, choices, n=1)
        tail = f"; did you mean {close[0]!r}?" if close else ""
        return f"; expected one of {', '.join(choices)}{tail}"

    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ValueError(f"{item!r}: expected key=value, e.g. files=2")
    if key not in ATTRIBUTES:
        raise ValueError(f"{item!r}: unknown attribute {key!r}{hint(key, ATTRIBUTES)}")
    if key in _INT_ATTRIBUTES:
        if not (raw.isascii() and raw.lstrip("-").isdigit()) or len(raw) > 12:
            raise ValueError(f"{item!r}: {key} must be an integer, found {raw!r}")
        number = int(raw)
        if number < 0 or number > _MAX_COUNT or (key == "severity" and not 1 <= number <= 5):
            bounds = "1 to 5" if key == "severity" else f"0 or more (at most {_MAX_COUNT})"
            raise ValueError(f"{item!r}: {key} must be {bounds}, found {number}")
        return key, number
    if key == "requires_code":
        if raw.lower() not in (*_TRUE, *_FALSE):
            raise ValueError(f"{item!r}: requires_code must be true or false, found {raw!r}")
        return key, raw.lower() in _TRUE
    vocab = {"scope": SCOPES, "domain": DOMAINS, "ambiguity": AMBIGUITIES}[key]
    value = raw.lower()
    if value not in vocab:
        raise ValueError(f"{item!r}: unknown {key} {raw!r}{hint(value, vocab)}")
    return key, value


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn. ``content`` is plain text; richer content stays in the gateway."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work to route: its kind, its text and what is known about it.

    An attribute left at ``None`` is one the task does not carry; a routing condition on it does
    not match. Build tasks with :meth:`Task.create` to derive ``input_chars`` and read
    annotations from the text.
    """

    kind: str
    prompt: str = ""
    system: str | None = None
    history: tuple[Message, ...] = ()
    input_tokens: int | None = None
    input_chars: int | None = None
    files: int | None = None
    severity: int | None = None
    requires_code: bool | None = None
    scope: str | None = None
    domain: str | None = None
    ambiguity: str | None = None
    session: str | None = None
    validators: tuple[str, ...] | None = None
    budget_usd: Decimal | None = None
    max_tokens: int = 1024
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: The id of the gateway key that created the task (never the secret); ``None`` without one.
    key_id: int | None = None
    #: Set when the task is a planner, executor or reviewer call of a plan (the cost tree).
    plan: PlanRef | None = None

    @classmethod
    def create(
        cls,
        kind: str,
        prompt: str = "",
        *,
        annotate: str | None = None,
        **attrs: object,
    ) -> Task:
        """Build a task, reading annotations from ``annotate`` (or the prompt) when not given.

        Explicit attributes win over annotations found in text.
        """
        found = parse_annotations(annotate if annotate is not None else prompt)
        for key, value in found.items():
            attrs.setdefault(key, value)
        if "input_chars" not in attrs and prompt:
            attrs["input_chars"] = len(prompt)
        return cls(kind=kind, prompt=prompt, **attrs)  # type: ignore[arg-type]

    def attribute(self, name: str) -> object | None:
        """The value of a routable attribute (``kind`` included), ``None`` when not carried."""
        return getattr(self, name, None) if name == "kind" or name in ATTRIBUTES else None

    def with_(self, **changes: object) -> Task:
        return replace(self, **changes)  # type: ignore[arg-type]


Step = Literal["frontier", "rule", "doubt", "judge", "start", "passthrough"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a task goes and why, as structured data.

    ``step`` says which stage decided the base tier: a must-stay-frontier constraint, a rule,
    the doubt direction (no rule matched), the layer-2 ``judge`` (no rule matched and the
    kind's doubt is ``judge``: a model picked the tier), an explicit start tier, or
    ``passthrough`` (a concrete model the caller named; ``tier`` is then the ``passthrough``
    label, index -1). ``floor`` is set when the kind's floor raised the tier; ``doubt`` names
    the doubt direction taken when it applied; ``judge`` what the judge said, or why its
    answer was not used (the decision then fell back to the kind's ``judge_fallback``).
    """

    tier: str
    tier_index: int
    step: Step
    kind: str
    rule_index: int | None = None
    rule_name: str | None = None
    constraint_index: int | None = None
    constraint_name: str | None = None
    floor: str | None = None
    floor_source: str | None = None  # "policy" | "learned"
    doubt: str | None = None
    kind_known: bool = True
    #: Set when the budget moved the start up (``[budgets] climb = "fit"``): why.
    budget: str | None = None
    #: The layer-2 judge's reason for its pick, or why it was not followed (``doubt="judge"``).
    judge: str | None = None

    def explain(self) -> str:
        """A one-sentence account of the decision for people."""
        if self.step == "frontier":
            what = f"must-stay-frontier constraint {self.constraint_name or self.constraint_index}"
        elif self.step == "rule":
            label = f" ({self.rule_name})" if self.rule_name else ""
            what = f"rule {self.rule_index}{label}"
        elif self.step == "doubt":
            what = f"no rule matched; doubt direction {self.doubt!r}"
            if self.judge:
                what += f" ({self.judge})"
        elif self.step == "judge":
            what = f"no rule matched; the layer-2 judge picked it: {self.judge}"
        elif self.step == "passthrough":
            what = "a concrete model the caller named, passed through unrouted"
        else:
            what = "explicit start tier"
        parts = [f"{self.tier}: {what}"]
        if self.floor:
            parts.append(f"raised to the {self.floor_source or 'policy'} floor {self.floor!r}")
        if not self.kind_known:
            parts.append(f"kind {self.kind!r} is not in the policy; [defaults] applied")
        if self.budget:
            parts.append(self.budget)
        if self.judge and self.step not in ("judge", "doubt"):
            parts.append(f"the layer-2 judge: {self.judge}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "tier_index": self.tier_index,
            "step": self.step,
            "kind": self.kind,
            "kind_known": self.kind_known,
            "rule_index": self.rule_index,
            "rule_name": self.rule_name,
            "constraint_index": self.constraint_index,
            "constraint_name": self.constraint_name,
            "floor": self.floor,
            "floor_source": self.floor_source,
            "doubt": self.doubt,
            "budget": self.budget,
            "judge": self.judge,
            "explanation": self.explain(),
        }
