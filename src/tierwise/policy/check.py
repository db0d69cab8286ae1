"""Warnings about a valid policy: rules that can never match, tiers nothing routes to, and more.

A policy can be well-formed and still not do what its author meant. :func:`check_policy` reasons
about the conditions symbolically (sets of values, integer ranges) — it never samples tasks:

- a rule whose conditions cannot hold (an empty list, a range no integer fits);
- a rule *shadowed* by an earlier one: every task it matches meets every condition of an earlier
  rule, which wins first (first match wins);
- a rule whose tier never applies because every task it matches is pinned higher by a frontier
  constraint, and frontier pins at the bottom tier, which pin nothing;
- tiers that no rule, frontier pin, floor or doubt direction routes to;
- a kind named in a rule or the frontier that looks like a misspelling of a listed kind;
- ``[prices]`` entries no tier uses; validators that cannot be built (bad schema file, import).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.core import Policy
from tierwise.policy.locate import KeyPath, format_path, key_lines, line_of
from tierwise.policy.schema import Condition, Range, ValidatorSpec

_INT_ATTRIBUTES = ("input_tokens", "input_chars", "files", "severity")
_SEVERITY = (1, 5)


def check_policy(policy_or_path: Policy | str | Path) -> list[PolicyIssue]:
    """Every issue of a policy, warnings included, in file order.

    Given a path, a file that fails to load yields its errors (nothing is raised); given a
    :class:`Policy` (already valid), the result holds warnings, plus errors for validators that
    cannot be built.
    """
    if isinstance(policy_or_path, Policy):
        policy = policy_or_path
    else:
        from tierwise.policy.loader import load_policy

        try:
            policy = load_policy(policy_or_path)
        except PolicyError as exc:
            return list(exc.issues)
    return _Checker(policy).run()


# -- conditions as sets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Atom:
    """The values one condition accepts: a set of strings, an integer interval, or a bool."""

    values: frozenset[str] | None = None
    lo: float = -math.inf
    hi: float = math.inf
    flag: bool | None = None

    def empty(self) -> bool:
        if self.values is not None:
            return not self.values
        return self.flag is None and self.lo > self.hi

    def within(self, other: _Atom) -> bool:
        """Every value this atom accepts is accepted by *other*."""
        if self.empty():
            return True
        if self.values is not None or other.values is not None:
            return (
                self.values is not None and other.values is not None and self.values <= other.values
            )
        if self.flag is not None or other.flag is not None:
            return self.flag == other.flag
        return other.lo <= self.lo and self.hi <= other.hi


def _atoms(cond: Condition) -> dict[str, _Atom]:
    out: dict[str, _Atom] = {}
    for name, value in cond.fields_set().items():
        if isinstance(value, bool):
            out[name] = _Atom(flag=value)
        elif isinstance(value, str):
            out[name] = _Atom(values=frozenset([value]))
        elif isinstance(value, list):
            out[name] = _Atom(values=frozenset(value))
        else:
            lo, hi = (value, value) if isinstance(value, int) else _bounds(value)
            # integer attributes: round inwards; counts are never negative; severity is 1-5
            lo, hi = (
                math.ceil(lo) if lo != -math.inf else lo,
                math.floor(hi) if hi != math.inf else hi,
            )
            floor_, ceil_ = _SEVERITY if name == "severity" else (0, math.inf)
            out[name] = _Atom(lo=max(lo, floor_), hi=min(hi, ceil_))
    return out


def _bounds(r: Range) -> tuple[float, float]:
    return (
        r.min if r.min is not None else -math.inf,
        r.max if r.max is not None else math.inf,
    )


def _implies(narrow: Mapping[str, _Atom], wide: Mapping[str, _Atom]) -> bool:
    """Every task meeting *narrow* also meets *wide*."""
    if any(a.empty() for a in narrow.values()):
        return True
    return all(name in narrow and narrow[name].within(atom) for name, atom in wide.items())


# -- the checker ----------------------------------------------------------------------------------


class _Checker:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.model = policy.model
        self.lines = key_lines(policy.text) if policy.text else {}
        self.issues: list[PolicyIssue] = []

    def warn(self, path: KeyPath, message: str, severity: str = "warning") -> None:
        self.issues.append(
            PolicyIssue(format_path(path), message, line_of(self.lines, path), severity)
        )

    def run(self) -> list[PolicyIssue]:
        reachable = self._rules()
        self._frontier()
        self._idle_tiers(reachable)
        self._kind_typos()
        self._unused_prices()
        self._validators()
        return sorted(self.issues, key=lambda i: (i.line or 0, i.path))

    def _rules(self) -> list[int]:
        """Warn about rules that never match or never apply; return the rules that can match."""
        rules = self.model.rules
        atoms = [_atoms(r.when) for r in rules]
        reachable: list[int] = []
        for j, rule in enumerate(rules):
            label = f"rules[{j}]" + (f" ({rule.name})" if rule.name else "")
            empty = [name for name, atom in atoms[j].items() if atom.empty()]
            if empty:
                self.warn(
                    ("rules", j, "when", empty[0]),
                    f"{label} can never match: no task value satisfies its {empty[0]} condition",
                )
                continue
            shadow = next((i for i in range(j) if _implies(atoms[j], atoms[i])), None)
            if shadow is not None:
                earlier = rules[shadow]
                name = f" ({earlier.name})" if earlier.name else ""
                self.warn(
                    ("rules", j),
                    f"{label} can never match: every task it matches also meets every condition "
                    f"of rules[{shadow}]{name}, which comes first",
                )
                continue
            reachable.append(j)
            self._pinned_above(j, atoms[j])
        return reachable

    def _pinned_above(self, j: int, atoms: Mapping[str, _Atom]) -> None:
        rule = self.model.rules[j]
        tier = self.policy.tier_index(rule.tier)
        for c in self.policy.frontier_constraints:
            if self.policy.tier_index(c.tier) > tier and _implies(atoms, _atoms(c.when)):
                self.warn(
                    ("rules", j, "tier"),
                    f"tier {rule.tier!r} never applies: every task this rule matches is pinned to "
                    f"{c.tier!r} by must-stay-frontier constraint {c.name!r}",
                )
                return

    def _frontier(self) -> None:
        bottom = self.policy.ladder[0]
        frontier = self.model.frontier
        if frontier.tier == bottom and len(self.policy.ladder) > 1:
            self.warn(
                ("frontier", "tier"),
                f"frontier pins to the bottom tier {bottom!r}, which pins nothing",
            )
        for c in self.policy.frontier_constraints:
            empty = [name for name, atom in _atoms(c.when).items() if atom.empty()]
            if empty:
                self.warn(c.path, f"constraint {c.name!r} can never match ({empty[0]})")
            elif (
                c.path[:2] == ("frontier", "rules") and c.tier == bottom and frontier.tier != bottom
            ):
                self.warn(
                    (*c.path, "tier"),
                    f"constraint {c.name!r} pins to the bottom tier {bottom!r}, which pins nothing",
                )

    def _idle_tiers(self, reachable: list[int]) -> None:
        p = self.policy
        targets = {self.model.rules[j].tier for j in reachable}
        targets |= {c.tier for c in p.frontier_constraints}
        configs = [p.kind(k) for k in p.kinds] + [p.kind("\0unlisted")]
        for config in configs:
            if config.floor is not None:
                targets.add(config.floor)
            targets.add(p.doubt_tier(config.doubt, config.floor))
        for i, name in enumerate(p.ladder):
            if name not in targets:
                self.warn(
                    ("tiers", i),
                    f"nothing routes to tier {name!r} (no rule, frontier pin, floor or doubt "
                    "direction); tasks reach it only by escalation",
                )

    def _kind_typos(self) -> None:
        listed = list(self.policy.kinds)
        if not listed:
            return
        mentioned: list[tuple[KeyPath, str]] = []
        for j, rule in enumerate(self.model.rules):
            kinds = rule.when.kind
            for k in [kinds] if isinstance(kinds, str) else kinds or []:
                mentioned.append((("rules", j, "when", "kind"), k))
        for i, k in enumerate(self.model.frontier.kinds):
            mentioned.append((("frontier", "kinds", i), k))
        for path, kind in mentioned:
            if kind in listed:
                continue
            close = difflib.get_close_matches(kind, listed, n=1, cutoff=0.75)
            if close:
                self.warn(
                    path,
                    f"kind {kind!r} is not listed under [kinds]; did you mean {close[0]!r}?",
                )

    def _unused_prices(self) -> None:
        used = {t.model for t in self.model.tiers}
        used |= {a.model for t in self.model.tiers for a in t.alternate_specs()}
        for model_id in self.model.prices:
            if model_id not in used:
                self.warn(("prices", model_id), f"no tier uses model {model_id!r}")

    def _validators(self) -> None:
        from tierwise.cascade.validators import build_validator

        specs: list[tuple[KeyPath, ValidatorSpec, str | None]] = [
            (("validators", name), spec, name) for name, spec in self.model.validators.items()
        ]
        for kind, settings in self.model.kinds.items():
            for j, ref in enumerate(settings.validators or []):
                if not isinstance(ref, str):
                    specs.append((("kinds", kind, "validators", j), ref, None))
        for j, ref in enumerate(self.model.defaults.validators):
            if not isinstance(ref, str):
                specs.append((("defaults", "validators", j), ref, None))
        for path, spec, name in specs:
            try:
                build_validator(
                    spec, base_dir=self.policy.base_dir, name=name, path=format_path(path)
                )
            except PolicyError as exc:
                line = line_of(self.lines, path)
                for issue in exc.issues:
                    where = issue.path or format_path(path)
                    self.issues.append(PolicyIssue(where, issue.message, line, "error"))
            except Exception as exc:  # a user's callable or file: report, never crash the check
                self.warn(path, f"cannot build this validator: {exc}", "error")
