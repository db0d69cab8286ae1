"""The policy file's shape (TOML, ``version = 1``) as strict pydantic models.

Unknown keys are errors (``extra="forbid"``). Cross-references (tier names in rules, floors,
doubt, frontier pins; validator names in kinds) are checked by the loader, which knows the file
and line numbers; this module only describes shapes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tierwise.task import AMBIGUITIES, DOMAINS, SCOPES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Range(_Strict):
    """An inclusive numeric range; either end may be left open."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is greater than 'max' ({self.max})")
        return self

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


IntCondition = int | Range
StrCondition = str | list[str]


class Condition(_Strict):
    """Conditions on a task, all of which must hold. A list means "any of"; a table is a range.

    A condition on an attribute the task does not carry does not match.
    """

    kind: StrCondition | None = None
    input_tokens: IntCondition | None = None
    input_chars: IntCondition | None = None
    files: IntCondition | None = None
    severity: IntCondition | None = None
    requires_code: bool | None = None
    scope: StrCondition | None = None
    domain: StrCondition | None = None
    ambiguity: StrCondition | None = None

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: StrCondition | None) -> StrCondition | None:
        return _check_vocab(v, SCOPES, "scope")

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: StrCondition | None) -> StrCondition | None:
        return _check_vocab(v, DOMAINS, "domain")

    @field_validator("ambiguity")
    @classmethod
    def _ambiguity(cls, v: StrCondition | None) -> StrCondition | None:
        return _check_vocab(v, AMBIGUITIES, "ambiguity")

    @field_validator("severity")
    @classmethod
    def _severity(cls, v: IntCondition | None) -> IntCondition | None:
        values = [v] if isinstance(v, int) else [] if v is None else [v.min, v.max]
        for x in values:
            if x is not None and not 1 <= x <= 5:
                raise ValueError(f"severity is 1–5, found {x}")
        return v

    def fields_set(self) -> dict[str, Any]:
        """The conditions actually given, in declaration order."""
        given = ((k, getattr(self, k)) for k in type(self).model_fields)
        return {k: v for k, v in given if v is not None}


def _check_vocab(
    v: StrCondition | None, allowed: tuple[str, ...], name: str
) -> StrCondition | None:
    if v is None:
        return v
    for item in [v] if isinstance(v, str) else v:
        if item not in allowed:
            raise ValueError(f"unknown {name} {item!r}; expected one of {', '.join(allowed)}")
    return v


class Prices(_Strict):
    """USD per million tokens for one model (overrides the catalog)."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_read: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    cache_write_1h: Decimal | None = Field(default=None, ge=0)


class Alternate(_Strict):
    """Another model serving the same tier, tried when the primary keeps failing."""

    model: str
    provider: Literal["anthropic", "openai"] | None = None
    base_url: str | None = None
    api_key_env: str | None = None


class Tier(_Strict):
    """One rung of the ladder: a provider and a model (plus optional alternates)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]
    provider: Literal["anthropic", "openai"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    alternates: list[str | Alternate] = Field(default_factory=list)
    max_tokens: int = Field(default=1024, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)

    def alternate_specs(self) -> list[Alternate]:
        return [Alternate(model=a) if isinstance(a, str) else a for a in self.alternates]


# -- validators --------------------------------------------------------------------------------


class JsonValidatorSpec(_Strict):
    type: Literal["json"]


class JsonSchemaValidatorSpec(_Strict):
    type: Literal["json_schema"]
    schema_: str | dict[str, Any] = Field(alias="schema")
    #: Hosts (``host`` or ``host:port``) whose documents a ``$ref`` may fetch; none by default.
    allow_hosts: list[
        Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d+)?$")]
    ] = Field(default_factory=list)


class RegexValidatorSpec(_Strict):
    type: Literal["regex"]
    pattern: str
    mode: Literal["search", "fullmatch"] = "search"
    ignore_case: bool = False


class PythonValidatorSpec(_Strict):
    type: Literal["python"]
    callable: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]


class ConfidenceValidatorSpec(_Strict):
    type: Literal["confidence"]
    min: float = Field(default=0.7, ge=0, le=1)


class NotRefusalValidatorSpec(_Strict):
    type: Literal["not_refusal"]


class NotTruncatedValidatorSpec(_Strict):
    type: Literal["not_truncated"]


class CommandValidatorSpec(_Strict):
    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)
    #: Environment variables passed to the command besides PATH, HOME, LANG, LC_* and TMPDIR.
    pass_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list
    )


class AgreementValidatorSpec(_Strict):
    type: Literal["agreement"]
    tiers: list[str] = Field(min_length=1)
    normalise: Literal["exact", "lower", "choice", "number", "json"] = "lower"


class LearnedValidatorSpec(_Strict):
    """The response verifier saved by ``tierwise eval --save-router`` (``[learned] path``)."""

    type: Literal["learned"]


ValidatorSpec = Annotated[
    JsonValidatorSpec
    | JsonSchemaValidatorSpec
    | RegexValidatorSpec
    | PythonValidatorSpec
    | ConfidenceValidatorSpec
    | NotRefusalValidatorSpec
    | NotTruncatedValidatorSpec
    | CommandValidatorSpec
    | AgreementValidatorSpec
    | LearnedValidatorSpec,
    Field(discriminator="type"),
]

VALIDATOR_TYPES: tuple[str, ...] = (
    "json",
    "json_schema",
    "regex",
    "python",
    "confidence",
    "not_refusal",
    "not_truncated",
    "command",
    "agreement",
    "learned",
)

#: A kind lists validators by name (defined under ``[validators.NAME]``) or inline.
ValidatorRef = str | ValidatorSpec


# -- rules, kinds, fleet -------------------------------------------------------------------------


class Rule(_Strict):
    """A routing rule: when every condition holds, the task goes to ``tier``. First match wins."""

    name: str | None = None
    when: Condition
    tier: str


class FrontierRule(_Strict):
    """A must-stay-frontier condition with an optional name and its own pin."""

    name: str | None = None
    when: Condition
    tier: str | None = None


class Frontier(_Strict):
    """Work that is never routed below ``tier`` (default: the top tier)."""

    tier: str | None = None
    domains: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    ambiguity: list[str] = Field(default_factory=list)
    rules: list[FrontierRule] = Field(default_factory=list)

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        _check_vocab(v, DOMAINS, "domain")
        return v

    @field_validator("ambiguity")
    @classmethod
    def _ambiguity(cls, v: list[str]) -> list[str]:
        _check_vocab(v, AMBIGUITIES, "ambiguity")
        return v


Doubt = str  # "cheap" | "up" | "judge" | a tier name; checked by the loader against the ladder
#: How two tiers' answers to a kind are compared in shadow mode: ``label`` and ``choice`` exactly
#: after normalisation, ``json`` as parsed JSON, ``number`` by the final number, ``text`` by
#: token-set overlap (``[shadow] similarity``); ``auto`` reads ``json`` for a kind with a
#: ``json``/``json_schema`` validator and ``text`` otherwise.
AnswerFormat = Literal["auto", "label", "choice", "json", "number", "text"]
#: Where a kind's tasks start: where the rules put them, or where the saved learned router says.
Start = Literal["routed", "learned"]


class KindSettings(_Strict):
    """Per-kind settings. Anything left unset falls back to ``[defaults]``."""

    floor: str | None = None
    doubt: Doubt | None = None
    #: Where a ``doubt = "judge"`` kind goes when the judge fails: "cheap", "up" or a tier.
    judge_fallback: Doubt | None = None
    validators: list[ValidatorRef] | None = None
    stream: Literal["buffer", "passthrough"] | None = None
    budget_usd_day: Decimal | None = Field(default=None, gt=0)
    description: str | None = None
    #: Share of the kind's tasks also sent to the tiers they did not try (shadow mode).
    shadow: float | None = Field(default=None, ge=0, le=1)
    #: The tiers a shadowed task is sent to (default: every tier it did not try).
    shadow_tiers: list[str] | None = None
    answer: AnswerFormat | None = None
    start: Start | None = None


class Defaults(_Strict):
    """Settings for kinds the policy does not list, and the fallback for those it does."""

    floor: str | None = None
    doubt: Doubt = "up"
    judge_fallback: Doubt = "up"
    validators: list[ValidatorRef] = Field(default_factory=list)
    stream: Literal["buffer", "passthrough"] = "buffer"
    max_tokens: int = Field(default=1024, gt=0)
    shadow: float = Field(default=0.0, ge=0, le=1)
    answer: AnswerFormat = "auto"
    start: Start = "routed"


class Budgets(_Strict):
    """USD limits. Checked before every attempt; reserved in the ledger so processes share them.

    ``climb`` says what happens when a budget may not cover the climb a task could need:
    ``per_attempt`` (default) reserves each attempt's worst case just before it, so a task can
    spend on cheap attempts and then be refused the climb; ``reserve_ladder`` reserves the
    worst case of every tier from the start to the top before the first call (429 up front
    when that does not fit); ``fit`` starts at the lowest tier, at or above the routed one,
    whose climb to the top the budget can cover (429 up front when not even the top fits).
    """

    task_usd: Decimal | None = Field(default=None, gt=0)
    session_usd: Decimal | None = Field(default=None, gt=0)
    kind_day_usd: Decimal | None = Field(default=None, gt=0)
    climb: Literal["per_attempt", "reserve_ladder", "fit"] = "per_attempt"
    #: Shadow calls per UTC day, their own scope (never the caller's key, kind or session).
    shadow_day_usd: Decimal | None = Field(default=None, gt=0)


class Fleet(_Strict):
    """Fleet-wide learning settings (used by the learning and reporting work)."""

    escalation_red_line: float = Field(default=0.09, gt=0, lt=1)
    promotion_threshold: float = Field(default=0.60, gt=0, le=1)
    min_sample: int = Field(default=50, ge=1)


class Passthrough(_Strict):
    """Concrete models a gateway caller may name besides the tiers' own (none by default).

    A call naming one is metered and recorded under the label ``passthrough``, never as a rung
    of the ladder; it is sent with the credentials of the lowest tier speaking the caller's
    dialect, and must have a price (catalog or ``[prices]``).
    """

    models: list[str] = Field(default_factory=list)


class Retry(_Strict):
    """How one tier retries a failing upstream before moving to an alternate model."""

    attempts: int = Field(default=3, ge=1, le=10)
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=20.0, ge=0)
    cooldown_s: float = Field(default=60.0, ge=0)
    cooldown_after: int = Field(default=3, ge=1)


class Judge(_Strict):
    """The layer-2 judge: a model asked where a task goes when no rule matched.

    Only kinds whose doubt direction is ``judge`` ask it. Its answer is bound by floors and
    frontier pins; when it fails, times out or answers nonsense, the kind's ``judge_fallback``
    applies instead.
    """

    tier: str | None = None  # default: the bottom tier
    timeout_s: float = Field(default=2.0, gt=0)
    cache_s: float = Field(default=600.0, ge=0)
    max_tokens: int = Field(default=200, gt=0)
    prompt_chars: int = Field(default=4000, ge=100)


class PlanSettings(_Strict):
    """Plan-execute-review: a planner tier decomposes a goal, cheap tiers execute, a reviewer
    accepts each output or sends it one tier up."""

    planner_tier: str | None = None  # default: the top tier
    reviewer_tier: str | None = None  # default: the second tier from the bottom
    review: bool = True
    max_subtasks: int = Field(default=12, ge=1, le=100)
    max_parallel: int = Field(default=4, ge=1, le=64)
    budget_usd: Decimal | None = Field(default=None, gt=0)
    subtask_budget_usd: Decimal | None = Field(default=None, gt=0)
    #: Tell the planner the observed failure rates per kind and assigned tier (from the ledger).
    prompt_failure_rates: bool = False


class ShadowSettings(_Strict):
    """Shadow mode: a share of a kind's tasks (``[kinds.X] shadow``) is also sent, after the
    caller has its answer, to the tiers it did not try, to measure agreement between tiers."""

    #: Token-set overlap (Jaccard) at or above which two free-text answers agree.
    similarity: float = Field(default=0.6, gt=0, le=1)
    #: Shadow runs a gateway process keeps in flight; more are skipped (and counted).
    max_in_flight: int = Field(default=4, ge=1, le=256)


class LearnedSettings(_Strict):
    """The router and response verifier saved by ``tierwise eval --save-router``, used live by
    ``[kinds.X] start = "learned"`` and validators of type ``learned``."""

    path: str | None = None  # relative to the policy file


class PolicyModel(_Strict):
    """The whole policy file."""

    version: Literal[1]
    store_content: bool = False
    tiers: list[Tier] = Field(min_length=1)
    prices: dict[str, Prices] = Field(default_factory=dict)
    frontier: Frontier = Field(default_factory=Frontier)
    rules: list[Rule] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    kinds: dict[str, KindSettings] = Field(default_factory=dict)
    validators: dict[str, ValidatorSpec] = Field(default_factory=dict)
    budgets: Budgets = Field(default_factory=Budgets)
    fleet: Fleet = Field(default_factory=Fleet)
    retry: Retry = Field(default_factory=Retry)
    passthrough: Passthrough = Field(default_factory=Passthrough)
    judge: Judge = Field(default_factory=Judge)
    plan: PlanSettings = Field(default_factory=PlanSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    learned: LearnedSettings = Field(default_factory=LearnedSettings)
