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
- ``[prices]`` entries no tier uses, and the loader's warnings (an entry without ``cache_read``);
- validators that cannot be built (bad schema file, import), and regex patterns with nested
  quantifiers (``(a+)+``).

Every check is linear in the size of the policy (the containment questions go through
:class:`~tierwise.policy.containment.ContainmentIndex`, suggestions through
:class:`~tierwise.policy.suggest.Suggester`): ``benchmarks/policy_check.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.containment import Atom, ContainmentIndex, atoms_of
from tierwise.policy.core import Policy
from tierwise.policy.locate import KeyPath, format_path, line_of
from tierwise.policy.patterns import nested_quantifier
from tierwise.policy.schema import RegexValidatorSpec
from tierwise.policy.suggest import Suggester
from tierwise.policy.validator_specs import build_issues, iter_specs


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


# -- the checker ----------------------------------------------------------------------------------


class _Checker:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.model = policy.model
        self.lines = policy.key_lines
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
        self._shadow()
        self.issues.extend(self.policy.warnings)
        return sorted(self.issues, key=lambda i: (i.line or 0, i.path))

    def _rules(self) -> list[int]:
        """Warn about rules that never match or never apply; return the rules that can match.

        Only rules that can match go into the index: the first earlier rule containing a rule
        is never one that is itself shadowed (its container would come first) or empty.
        """
        rules = self.model.rules
        earlier = ContainmentIndex()
        pins = self._pin_indexes()
        reachable: list[int] = []
        for j, rule in enumerate(rules):
            atoms = atoms_of(rule.when)
            label = f"rules[{j}]" + (f" ({rule.name})" if rule.name else "")
            empty = [name for name, atom in atoms.items() if atom.empty()]
            if empty:
                self.warn(
                    ("rules", j, "when", empty[0]),
                    f"{label} can never match: no task value satisfies its {empty[0]} condition",
                )
                continue
            shadow = earlier.first_containing(atoms)
            if shadow is not None:
                earlier_rule = rules[shadow]
                name = f" ({earlier_rule.name})" if earlier_rule.name else ""
                self.warn(
                    ("rules", j),
                    f"{label} can never match: every task it matches also meets every condition "
                    f"of rules[{shadow}]{name}, which comes first",
                )
                continue
            earlier.add(j, atoms)
            reachable.append(j)
            self._pinned_above(j, atoms, pins)
        return reachable

    def _pin_indexes(self) -> list[ContainmentIndex]:
        """Per tier (by ladder position), the frontier constraints that pin to it."""
        indexes = [ContainmentIndex() for _ in self.policy.ladder]
        for c in self.policy.frontier_constraints:
            atoms = atoms_of(c.when)
            if not any(a.empty() for a in atoms.values()):
                indexes[self.policy.tier_index(c.tier)].add(c.index, atoms)
        return indexes

    def _pinned_above(
        self, j: int, atoms: Mapping[str, Atom], pins: list[ContainmentIndex]
    ) -> None:
        rule = self.model.rules[j]
        tier = self.policy.tier_index(rule.tier)
        found = [k for pin in pins[tier + 1 :] if (k := pin.first_containing(atoms)) is not None]
        if found:
            c = self.policy.frontier_constraints[min(found)]
            self.warn(
                ("rules", j, "tier"),
                f"tier {rule.tier!r} never applies: every task this rule matches is pinned to "
                f"{c.tier!r} by must-stay-frontier constraint {c.name!r}",
            )

    def _frontier(self) -> None:
        bottom = self.policy.ladder[0]
        frontier = self.model.frontier
        if frontier.tier == bottom and len(self.policy.ladder) > 1:
            self.warn(
                ("frontier", "tier"),
                f"frontier pins to the bottom tier {bottom!r}, which pins nothing",
            )
        for c in self.policy.frontier_constraints:
            empty = [name for name, atom in atoms_of(c.when).items() if atom.empty()]
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
            targets.add(p.doubt_tier(config.doubt, config.floor, config.judge_fallback))
            if config.doubt == "judge":  # the layer-2 judge may pick any tier
                targets.update(p.ladder)
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
        listed_set = set(listed)
        suggester = Suggester(listed, cutoff=0.75)
        mentioned: list[tuple[KeyPath, str]] = []
        for j, rule in enumerate(self.model.rules):
            kinds = rule.when.kind
            for k in [kinds] if isinstance(kinds, str) else kinds or []:
                mentioned.append((("rules", j, "when", "kind"), k))
        for i, k in enumerate(self.model.frontier.kinds):
            mentioned.append((("frontier", "kinds", i), k))
        closest: dict[str, str | None] = {}
        for path, kind in mentioned:
            if kind in listed_set:
                continue
            if kind not in closest:
                closest[kind] = suggester.closest(kind)
            close = closest[kind]
            if close is not None:
                self.warn(
                    path,
                    f"kind {kind!r} is not listed under [kinds]; did you mean {close!r}?",
                )

    def _unused_prices(self) -> None:
        used = {t.model for t in self.model.tiers}
        used |= {a.model for t in self.model.tiers for a in t.alternate_specs()}
        for model_id in self.model.prices:
            if model_id not in used:
                self.warn(("prices", model_id), f"no tier uses model {model_id!r}")

    def _shadow(self) -> None:
        """Shadow mode with no budget of its own: its calls would have no spending limit."""
        if self.model.budgets.shadow_day_usd is not None:
            return
        paths: list[KeyPath] = [
            ("kinds", k, "shadow") for k, v in self.model.kinds.items() if v.shadow
        ]
        if self.model.defaults.shadow:
            paths.insert(0, ("defaults", "shadow"))
        if paths:
            self.warn(
                paths[0],
                "shadow mode is on but [budgets] shadow_day_usd is not set: shadow calls have "
                "no spending limit (they never count against callers' budgets)",
            )

    def _validators(self) -> None:
        base = self.policy.base_dir
        for path, spec, _ in iter_specs(self.model):
            try:
                issues = build_issues(spec, path, base, self.lines)
            except Exception as exc:  # a user's module raising on import: report, never crash
                self.warn(path, f"cannot build this validator: {exc}", "error")
                continue
            for issue in issues:
                where = issue.path or format_path(path)
                line = issue.line or line_of(self.lines, path)
                self.issues.append(PolicyIssue(where, issue.message, line, "error"))
            if isinstance(spec, RegexValidatorSpec) and not issues:
                nested = nested_quantifier(spec.pattern)
                if nested is not None:
                    self.warn(
                        (*path, "pattern"),
                        f"nested quantifier {nested!r}: a repetition inside a repetition is "
                        "ambiguous, and backtracking engines (Python's re and most others) take "
                        "exponential time on a near-miss; tierwise matches with RE2 in linear "
                        "time, but the pattern would hang any tool that reuses it — repeat "
                        "once (e.g. '(a+)+' → 'a+')",
                    )
