"""The loaded, immutable policy: the ladder, resolved per-kind settings and frontier constraints.

A :class:`Policy` wraps a validated :class:`~tierwise.policy.schema.PolicyModel` and precomputes
everything the hot path asks for (tier lookups, each listed kind's resolved settings), so that
``Policy.kind()`` and ``Policy.tier_index()`` are dictionary lookups. Build one with
:func:`tierwise.policy.load_policy`, :func:`~tierwise.policy.loads_policy` or
:func:`~tierwise.policy.default_policy`; those check cross-references (tier and validator names)
that the constructor trusts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Literal

from tierwise.errors import PolicyError, PolicyIssue, TierwiseError
from tierwise.policy.schema import (
    Condition,
    KindSettings,
    PolicyModel,
    Tier,
    ValidatorRef,
    ValidatorSpec,
)

FloorSource = Literal["policy", "learned"]


class UnknownTierError(TierwiseError, KeyError):
    """A tier name that is not on the policy's ladder."""

    def __init__(self, name: str, ladder: tuple[str, ...]) -> None:
        self.name = name
        self.ladder = ladder
        super().__init__(f"unknown tier {name!r}; the ladder is {', '.join(ladder)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class KindConfig:
    """A task kind's effective settings: its own, with ``[defaults]`` filling the gaps.

    ``validators`` holds resolved specs (names defined under ``[validators.NAME]`` replaced by
    their spec); ``validator_names`` holds, position by position, the name each came from, or
    ``None`` for a spec written inline.
    """

    name: str
    known: bool
    floor: str | None
    floor_source: FloorSource | None
    doubt: str
    #: Where the kind goes when its doubt is ``judge`` and the judge's answer cannot be used.
    judge_fallback: str
    validators: tuple[ValidatorSpec, ...]
    validator_names: tuple[str | None, ...]
    stream: Literal["buffer", "passthrough"]
    budget_usd_day: Decimal | None
    max_tokens: int | None
    description: str | None = None
    #: Share of the kind's tasks shadowed on the tiers they did not try (0: none).
    shadow: float = 0.0
    #: The tiers a shadowed task goes to (``None``: every tier it did not try).
    shadow_tiers: tuple[str, ...] | None = None
    #: How two tiers' answers are compared (``auto`` resolved: ``json`` or ``text``).
    answer: Literal["label", "choice", "json", "number", "text"] = "text"
    #: ``learned``: the saved learned router proposes the start tier.
    start: Literal["routed", "learned"] = "routed"


@dataclass(frozen=True, slots=True)
class FrontierConstraint:
    """One must-stay-frontier condition: tasks meeting ``when`` never go below ``tier``.

    ``index`` numbers the constraints in the order the router checks them: ``frontier.domains``
    entries, then ``kinds``, then ``ambiguity``, then ``frontier.rules``. ``path`` is the key
    path of the entry in the policy file.
    """

    index: int
    name: str
    path: tuple[str | int, ...]
    when: Condition
    tier: str


#: Kinds the gateway uses itself: an unnamed task (``tierwise/auto``), a concrete model, and
#: the calls of a plan-execute-review run (``tierwise/plan-execute``).
BUILTIN_KINDS = frozenset({"auto", "passthrough", "plan-execute"})
#: Kind names a policy may not list: the gateway reserves ``tierwise/<name>`` for itself.
RESERVED_KINDS = frozenset({"plan-execute"})
#: The shared label of every kind the policy does not list.
UNDECLARED_KIND = "undeclared"


class Policy:
    """A validated routing policy with precomputed lookups. Immutable.

    Attributes:
        model: the validated policy document (effective: learned floors included).
        source: the file it came from, ``None`` for text or the embedded default.
        base_dir: directory relative paths in the policy (schema files) resolve against.
        revision: sha256 hex of the canonical JSON of the effective policy (not its ``version``).
        ladder: tier names, bottom (cheapest) to top.
        kinds: the kinds the policy lists.
        warnings: what the loader found valid but probably not meant (e.g. a ``[prices]``
            entry without ``cache_read``); ``tierwise policy check`` prints them.
    """

    __slots__ = (
        "_constraints",
        "_default_kind",
        "_kinds",
        "_learned",
        "_lines",
        "_listed",
        "_text",
        "_tier_index",
        "_tiers",
        "base_dir",
        "kinds",
        "ladder",
        "model",
        "revision",
        "source",
        "warnings",
    )

    model: PolicyModel
    source: Path | None
    base_dir: Path
    revision: str
    ladder: tuple[str, ...]
    kinds: tuple[str, ...]
    warnings: tuple[PolicyIssue, ...]
    _text: str | None
    _lines: Mapping[tuple[str | int, ...], int] | None
    _learned: frozenset[str]
    _listed: frozenset[str]
    _tiers: dict[str, Tier]
    _tier_index: dict[str, int]
    _kinds: dict[str, KindConfig]
    _default_kind: KindConfig
    _constraints: tuple[FrontierConstraint, ...]

    def __init__(
        self,
        model: PolicyModel,
        *,
        source: Path | None = None,
        base_dir: Path | None = None,
        text: str | None = None,
        learned: frozenset[str] = frozenset(),
        listed: frozenset[str] | None = None,
        warnings: tuple[PolicyIssue, ...] = (),
        key_lines: Mapping[tuple[str | int, ...], int] | None = None,
    ) -> None:
        """Wrap a validated model. Prefer the loader functions, which check cross-references.

        ``text`` is the TOML source (used to give line numbers in warnings); ``learned`` names
        the kinds whose floor came from learning rather than the file; ``listed`` the kinds the
        team's file lists (default: every kind in *model*), which are the ``known`` ones;
        ``warnings`` what the loader warns about; ``key_lines`` the line of each key path in
        ``text``, when the loader has it already.
        """
        put = object.__setattr__
        put(self, "model", model)
        put(self, "source", source)
        put(self, "base_dir", base_dir if base_dir is not None else Path.cwd())
        put(self, "_text", text)
        put(self, "warnings", warnings)
        put(self, "_lines", key_lines)
        put(self, "_learned", learned)
        put(self, "_listed", frozenset(model.kinds) if listed is None else listed)
        put(self, "revision", policy_revision(model))
        put(self, "ladder", tuple(t.name for t in model.tiers))
        put(self, "_tiers", {t.name: t for t in model.tiers})
        put(self, "_tier_index", {t.name: i for i, t in enumerate(model.tiers)})
        put(self, "kinds", tuple(k for k in model.kinds if k in self._listed))
        put(self, "_kinds", {k: self._resolve(k, s) for k, s in model.kinds.items()})
        put(self, "_default_kind", self._resolve("", None))
        put(self, "_constraints", _frontier_constraints(model, self.ladder))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Policy is immutable; cannot set {name!r}")

    def __repr__(self) -> str:
        where = str(self.source) if self.source else "<text>"
        return f"Policy({where}, ladder={'/'.join(self.ladder)}, revision={self.revision[:12]})"

    def __eq__(self, other: object) -> bool:
        """Same effective policy (revision) resolving relative paths in the same place."""
        return (
            isinstance(other, Policy)
            and other.revision == self.revision
            and other.base_dir == self.base_dir
        )

    def __hash__(self) -> int:
        return hash(self.revision)

    # -- lookups -----------------------------------------------------------------------------

    def tier(self, name: str) -> Tier:
        """The tier called *name*. Raises :class:`UnknownTierError` when there is none."""
        try:
            return self._tiers[name]
        except KeyError:
            raise UnknownTierError(name, self.ladder) from None

    def tier_index(self, name: str) -> int:
        """Position of tier *name* on the ladder, 0 = bottom. Raises :class:`UnknownTierError`."""
        try:
            return self._tier_index[name]
        except KeyError:
            raise UnknownTierError(name, self.ladder) from None

    def kind(self, kind: str) -> KindConfig:
        """Effective settings of *kind*; unlisted kinds get ``[defaults]`` with ``known=False``."""
        config = self._kinds.get(kind)
        if config is not None:
            return config
        return replace(self._default_kind, name=kind)

    def kind_label(self, kind: str) -> str:
        """The name a budget scope or a metrics label uses for *kind*.

        Kinds the policy lists, and the gateway's own ``auto`` and ``passthrough``, keep their
        names; any other shares ``undeclared``, so inventing kind names neither earns a fresh
        budget nor grows the metrics without bound (the ledger keeps the name as sent).
        """
        if kind in self._listed or kind in BUILTIN_KINDS:
            return kind
        return UNDECLARED_KIND

    def doubt_tier(
        self, doubt: str, floor: str | None = None, judge_fallback: str | None = None
    ) -> str:
        """Where the doubt direction *doubt* sends a task whose kind has floor *floor*.

        ``cheap``: the bottom tier; ``up``: one above the floor, or above the bottom tier when
        there is no floor (the top tier at most); ``judge``: where *judge_fallback* (default
        ``[defaults] judge_fallback``) sends it — the routing decision before the layer-2 judge
        is asked, and what stands when it fails; any other value names a tier.
        """
        if doubt == "judge":
            doubt = judge_fallback or self.model.defaults.judge_fallback
        if doubt == "cheap":
            return self.ladder[0]
        if doubt == "up":
            base = self.tier_index(floor) if floor is not None else 0
            return self.ladder[min(base + 1, len(self.ladder) - 1)]
        self.tier_index(doubt)  # raises for an unknown tier
        return doubt

    @property
    def frontier_constraints(self) -> tuple[FrontierConstraint, ...]:
        """The must-stay-frontier constraints, in the order the router checks them."""
        return self._constraints

    @property
    def text(self) -> str | None:
        """The TOML source this policy was read from, when it came from text."""
        return self._text

    @property
    def key_lines(self) -> Mapping[tuple[str | int, ...], int]:
        """The line of each key path in :attr:`text` (empty without text); scanned once, lazily."""
        if self._lines is None:
            from tierwise.policy.locate import KeyLines

            object.__setattr__(self, "_lines", KeyLines(self._text) if self._text else {})
        assert self._lines is not None
        return self._lines

    # -- derived policies --------------------------------------------------------------------

    def with_floors(self, floors: Mapping[str, str]) -> Policy:
        """A copy whose kinds get these (learned) floors, replacing the file's floors.

        A kind the file does not list gets an entry holding just the floor; it stays
        ``known=False``. Raises :class:`PolicyError` when a floor names no tier.
        """
        if not floors:
            return self
        issues = [
            PolicyIssue(f"floors.{kind}", f"unknown tier {tier!r}; the ladder is {self.ladder}")
            for kind, tier in floors.items()
            if tier not in self._tier_index
        ]
        if issues:
            raise PolicyError(issues)
        kinds = dict(self.model.kinds)
        for kind, tier in floors.items():
            current = kinds.get(kind)
            kinds[kind] = (
                current.model_copy(update={"floor": tier}) if current else KindSettings(floor=tier)
            )
        return Policy(
            self.model.model_copy(update={"kinds": kinds}),
            source=self.source,
            base_dir=self.base_dir,
            text=self._text,
            learned=self._learned | frozenset(floors),
            listed=self._listed,
            warnings=self.warnings,
            key_lines=self._lines,
        )

    # -- helpers -----------------------------------------------------------------------------

    def _resolve(self, name: str, settings: KindSettings | None) -> KindConfig:
        defaults = self.model.defaults
        s = settings or KindSettings()
        refs: list[ValidatorRef] = list(s.validators if s.validators is not None else [])
        if s.validators is None:
            refs = list(defaults.validators)
        specs: list[ValidatorSpec] = []
        names: list[str | None] = []
        for ref in refs:
            if isinstance(ref, str):
                specs.append(self.model.validators[ref])
                names.append(ref)
            else:
                specs.append(ref)
                names.append(None)
        floor = s.floor if s.floor is not None else defaults.floor
        source: FloorSource | None = None
        if floor is not None:
            source = "learned" if name in self._learned and s.floor is not None else "policy"
        return KindConfig(
            name=name,
            known=name in self._listed,
            floor=floor,
            floor_source=source,
            doubt=s.doubt if s.doubt is not None else defaults.doubt,
            judge_fallback=s.judge_fallback
            if s.judge_fallback is not None
            else defaults.judge_fallback,
            validators=tuple(specs),
            validator_names=tuple(names),
            stream=s.stream if s.stream is not None else defaults.stream,
            budget_usd_day=s.budget_usd_day,
            max_tokens=defaults.max_tokens,
            description=s.description,
            shadow=s.shadow if s.shadow is not None else defaults.shadow,
            shadow_tiers=tuple(s.shadow_tiers) if s.shadow_tiers is not None else None,
            answer=_answer_format(s.answer or defaults.answer, specs),
            start=s.start or defaults.start,
        )

    @property
    def learned_uses(self) -> frozenset[str]:
        """What of the saved learned models (``[learned] path``) the policy uses: ``router``
        (a kind starts ``learned``) and ``verifier`` (a kind has a ``learned`` validator)."""
        kinds = [*self._kinds.values(), self._default_kind]
        uses = set()
        if any(k.start == "learned" for k in kinds):
            uses.add("router")
        if any(v.type == "learned" for k in kinds for v in k.validators) or any(
            v.type == "learned" for v in self.model.validators.values()
        ):
            uses.add("verifier")
        return frozenset(uses)

    @property
    def uses_learned(self) -> bool:
        """Whether the policy needs the saved learned models at all."""
        return bool(self.learned_uses)


def _answer_format(
    answer: str, specs: list[ValidatorSpec]
) -> Literal["label", "choice", "json", "number", "text"]:
    """The answer format of a kind: as set, or ``json`` when a validator parses JSON."""
    if answer == "auto":
        return "json" if any(v.type in ("json", "json_schema") for v in specs) else "text"
    assert answer in ("label", "choice", "json", "number", "text")
    return answer  # type: ignore[return-value]


def policy_revision(model: PolicyModel) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no spaces) of a policy document."""
    data = model.model_dump(mode="json", by_alias=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _frontier_constraints(
    model: PolicyModel, ladder: tuple[str, ...]
) -> tuple[FrontierConstraint, ...]:
    frontier = model.frontier
    default_pin = frontier.tier or ladder[-1]
    out: list[FrontierConstraint] = []

    def add(name: str, path: tuple[str | int, ...], when: Condition, tier: str) -> None:
        out.append(FrontierConstraint(len(out), name, path, when, tier))

    for i, domain in enumerate(frontier.domains):
        add(f"domain={domain}", ("frontier", "domains", i), Condition(domain=domain), default_pin)
    for i, kind in enumerate(frontier.kinds):
        add(f"kind={kind}", ("frontier", "kinds", i), Condition(kind=kind), default_pin)
    for i, level in enumerate(frontier.ambiguity):
        add(
            f"ambiguity={level}",
            ("frontier", "ambiguity", i),
            Condition(ambiguity=level),
            default_pin,
        )
    for i, rule in enumerate(frontier.rules):
        add(
            rule.name or f"frontier.rules[{i}]",
            ("frontier", "rules", i),
            rule.when,
            rule.tier or default_pin,
        )
    return tuple(out)
