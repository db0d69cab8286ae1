"""Read a policy file: TOML syntax, strict shape, cross-references — every problem with its place.

Errors are collected, not raised one at a time: a :class:`~tierwise.errors.PolicyError` lists
each :class:`~tierwise.errors.PolicyIssue` with the key path (``rules[2].when.knd``), the line
where the key was found, and a message that says what was expected, what was found and, for a
misspelt key or value, what was probably meant.
"""

from __future__ import annotations

import functools
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.core import RESERVED_KINDS, Policy
from tierwise.policy.locate import (
    MAX_DEPTH,
    KeyLines,
    KeyPath,
    format_path,
    line_of,
    too_deep_line,
)
from tierwise.policy.prices import price_issues, price_warnings
from tierwise.policy.schema import (
    AgreementValidatorSpec,
    LearnedValidatorSpec,
    PolicyModel,
    ValidatorRef,
)
from tierwise.policy.suggest import Suggester
from tierwise.policy.suggest import listing as _listing
from tierwise.policy.validator_specs import iter_specs, static_issues

_DEFAULT_RESOURCE = "default.toml"
_DOUBT_WORDS = ("cheap", "up")


# -- public API -----------------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at *path*.

    Raises:
        PolicyError: the file cannot be read, is not TOML, or is not a valid policy; every issue
            found is listed with its key path and line.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issue = PolicyIssue("", f"cannot read the policy file: {reason}")
        raise PolicyError([issue], str(file)) from None
    return loads_policy(text, source=file, base_dir=file.resolve().parent)


def loads_policy(
    text: str, *, source: str | Path | None = None, base_dir: str | Path | None = None
) -> Policy:
    """Validate policy TOML given as text.

    Args:
        text: the TOML document.
        source: the file it came from (for messages and ``Policy.source``).
        base_dir: where relative paths in the policy resolve; default: the source's directory,
            else the current directory.

    Returns:
        The policy; ``Policy.warnings`` holds what is valid but probably not meant (a
        ``[prices]`` entry without ``cache_read``).

    Raises:
        PolicyError: the text is not TOML or not a valid policy (nested more than
            :data:`~tierwise.policy.locate.MAX_DEPTH` levels deep included), or a validator
            cannot work as written (a pattern RE2 cannot run, a schema ``$ref`` to a host its
            ``allow_hosts`` does not name).
    """
    src = Path(source) if source is not None else None
    file = str(src) if src is not None else None
    if base_dir is not None:
        base = Path(base_dir)
    elif src is not None:
        base = src.resolve().parent
    else:
        base = Path.cwd()
    data = _parse_toml(text, file)
    lines = KeyLines(text)  # scanned only if an issue needs a line
    _check_depth(data, lines, file)
    model = _validate(data, lines, file)
    issues = reference_issues(model, lines)
    for path, spec, _ in iter_specs(model):
        issues.extend(static_issues(spec, path, base, lines))
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise PolicyError(sorted(errors, key=lambda i: (i.line or 0, i.path)), file)
    warnings = price_warnings(model, lines)
    return Policy(
        model, source=src, base_dir=base, text=text, warnings=tuple(warnings), key_lines=lines
    )


#: Policies ``tierwise init --preset NAME`` can write: the general default and the CI one.
PRESETS: dict[str, str] = {"default": _DEFAULT_RESOURCE, "ci": "ci.toml"}


def default_policy_text(preset: str = "default") -> str:
    """A packaged policy (what ``tierwise init`` writes), comments included.

    Raises:
        KeyError: *preset* is not one of :data:`PRESETS`.
    """
    resource = PRESETS[preset]
    return resources.files("tierwise.policy").joinpath(resource).read_text("utf-8")


def default_policy() -> Policy:
    """The embedded default policy; relative paths resolve against the current directory."""
    model, text = _default_model()
    return Policy(model, source=None, base_dir=Path.cwd(), text=text)


@functools.cache
def _default_model() -> tuple[PolicyModel, str]:
    text = default_policy_text()
    return loads_policy(text).model, text


# -- TOML -----------------------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_VOCAB_MESSAGE = re.compile(r"unknown \w+ '([^']*)'; expected one of (.*)$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _parse_toml(text: str, file: str | None) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        message = f"invalid TOML: nested more than {MAX_DEPTH} levels deep"
        raise PolicyError([PolicyIssue("", message, too_deep_line(text))], file) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line: int | None = None
        match = _TOML_POSITION.search(message)
        if match:
            line = int(match.group(1))
            message = f"{message[: match.start()]} (column {match.group(2)})"
        elif _TOML_END.search(message):
            line = text.count("\n") + 1
            message = _TOML_END.sub(" (at end of file)", message)
        issue = PolicyIssue("", f"invalid TOML: {message}", line)
        raise PolicyError([issue], file) from None


def _check_depth(data: dict[str, Any], lines: Mapping[KeyPath, int], file: str | None) -> None:
    """Refuse data nested deeper than MAX_DEPTH (dotted keys nest without recursion in tomllib).

    Everything after parsing — validation, hashing the revision, checks — walks the data
    recursively; a policy needs a handful of levels, an inline JSON Schema a few dozen.
    """
    stack: list[tuple[Any, KeyPath]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            shown = format_path(path[:6]) + ".…"
            issue = PolicyIssue(
                shown, f"nested more than {MAX_DEPTH} levels deep", line_of(lines, path)
            )
            raise PolicyError([issue], file)
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))


# -- shape (pydantic) -----------------------------------------------------------------------------

# Errors that only say "this input is not of that type"; inside a union they are noise when
# another branch explains the real problem, and are merged into one message otherwise.
_TYPE_NOUNS = {
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "is_instance_of": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}


def _validate(data: dict[str, Any], lines: Mapping[KeyPath, int], file: str | None) -> PolicyModel:
    try:
        return PolicyModel.model_validate(data)
    except ValidationError as exc:
        issues = validation_issues(exc, data, lines)
        raise PolicyError(issues, file) from None


def validation_issues(
    exc: ValidationError, data: Any, lines: Mapping[KeyPath, int] | None = None
) -> list[PolicyIssue]:
    """Turn a pydantic ``ValidationError`` into issues with key paths, suggestions and lines."""
    lines = {} if lines is None else lines
    raw: list[tuple[KeyPath, bool, dict[str, Any]]] = []
    for detail in exc.errors(include_url=False):
        path, via_union = _clean_loc(detail["loc"], data, missing=detail["type"] == "missing")
        raw.append((path, via_union, {**detail}))

    # Every prefix of a path whose error says more than "wrong type" (one pass, not pairwise).
    explained: set[KeyPath] = set()
    for p, _, e in raw:
        if e["type"] not in _TYPE_NOUNS:
            explained.update(p[:k] for k in range(len(p) + 1))

    def explained_deeper(path: KeyPath) -> bool:
        return path in explained

    issues: list[PolicyIssue] = []
    merged: dict[KeyPath, list[dict[str, Any]]] = {}
    for path, via_union, err in raw:
        if via_union and err["type"] in _TYPE_NOUNS:
            if not explained_deeper(path):
                merged.setdefault(path, []).append(err)
            continue
        issues.append(_issue(path, err, lines))
    for path, errs in merged.items():
        nouns = list(dict.fromkeys(_TYPE_NOUNS[e["type"]] for e in errs))
        message = f"expected {' or '.join(nouns)}, found {_show(errs[0]['input'])}"
        issues.append(PolicyIssue(format_path(path), message, line_of(lines, path)))
    unique = {(i.path, i.message): i for i in issues}
    return sorted(unique.values(), key=lambda i: (i.line or 0, i.path))


def _clean_loc(loc: Sequence[str | int], data: Any, *, missing: bool) -> tuple[KeyPath, bool]:
    """Drop pydantic's union-branch labels from *loc* by walking the input data alongside it.

    A segment that is not in the data is a branch label or discriminator tag — except the last
    one of a "missing" error, which is the missing key. Returns the path and whether a label was
    skipped (the error came from one branch of a union).
    """
    path: list[str | int] = []
    node = data
    via_union = False
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict):
            if seg in node:
                path.append(seg)
                node = node[seg]
            elif last and missing:
                path.append(seg)
            else:
                via_union = True  # a branch label or discriminator tag
        elif isinstance(node, list):
            if isinstance(seg, int) and 0 <= seg < len(node):
                path.append(seg)
                node = node[seg]
            else:
                via_union = True
        else:
            via_union = True  # labels after a scalar: which union branches rejected it
            break
    return tuple(path), via_union


def _issue(path: KeyPath, err: dict[str, Any], lines: Mapping[KeyPath, int]) -> PolicyIssue:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    found = err.get("input")
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        fields = _field_names(err["loc"][:-1])
        message = "unknown field" + _suggest(key, fields, listing=True)
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "union_tag_invalid":
        tag = str(ctx.get("tag", found))
        expected = _tags(str(ctx.get("expected_tags", "")))
        field = str(ctx.get("discriminator", "type")).strip("'\"")
        path = (*path, field)
        message = f"unknown {field} {tag!r}; expected one of {', '.join(expected)}"
        message += _suggest(tag, expected)
    elif kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "type")).strip("'\"")
        path = (*path, field)
        message = "required field is missing"
    elif kind == "literal_error":
        expected_text = str(ctx.get("expected", ""))
        message = f"expected {expected_text}, found {_show(found)}"
        if isinstance(found, str):
            message += _suggest(found, _tags(expected_text))
    elif kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
        vocab = _VOCAB_MESSAGE.match(message)
        if vocab:
            message += _suggest(vocab.group(1), vocab.group(2).split(", "))
    elif kind in _TYPE_NOUNS:
        message = f"expected {_TYPE_NOUNS[kind]}, found {_show(found)}"
    else:
        msg = str(err["msg"])
        message = (
            "expected " + msg.removeprefix("Input should be ") if msg.startswith("Input") else msg
        )
        if not isinstance(found, dict | list):
            message += f", found {_show(found)}"
    return PolicyIssue(format_path(path), message, line_of(lines, path))


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)


def _tags(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _suggest(
    word: str,
    choices: Sequence[str],
    *,
    listing: bool = False,
    suggester: Suggester | None = None,
) -> str:
    close = (suggester or Suggester(choices)).closest(word)
    if close is not None:
        return f"; did you mean {close!r}?"
    if listing and choices:
        return f"; expected one of {_listing(choices)}"
    return ""


def _field_names(loc: Sequence[str | int]) -> list[str]:
    """Field names (aliases where set) of the model found by walking *loc* from PolicyModel."""
    tp = _walk(PolicyModel, loc)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _walk(tp: Any, loc: Sequence[str | int]) -> Any:
    for seg in loc:
        tp = _strip(tp)
        members = _union_members(tp)
        if members:
            chosen = _pick_member(members, seg)
            if chosen is None:
                return None
            tp, consumed = chosen
            if consumed:
                continue
            tp = _strip(tp)
        tp = _step(tp, seg)
        if tp is None:
            return None
    return _strip(tp)


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(_strip(m) for m in typing.get_args(tp) if m is not type(None))
    return ()


def _pick_member(members: Sequence[Any], seg: str | int) -> tuple[Any, bool] | None:
    """The union member a loc segment selects: by branch label or tag, else by what fits."""
    for m in members:
        if seg in (getattr(m, "__name__", None), str(m)):
            return m, True
        if (
            isinstance(m, type)
            and issubclass(m, BaseModel)
            and "type" in m.model_fields
            and seg in typing.get_args(m.model_fields["type"].annotation)
        ):
            return m, True
    for m in members:
        if _step(m, seg) is not None:
            return m, False
    return None


def _step(tp: Any, seg: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if seg in (name, f.alias):
                return f.annotation
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and isinstance(seg, int):
        return args[0]
    if origin is dict and isinstance(seg, str):
        return args[1]
    return None


# -- cross-references -----------------------------------------------------------------------------


def reference_issues(
    model: PolicyModel, lines: Mapping[KeyPath, int] | None = None
) -> list[PolicyIssue]:
    """Check the names one part of a valid-shaped policy uses for another part.

    Tier names (rules, frontier pins, floors, doubt and judge fallbacks, the judge's and the
    planner's tiers, agreement validators), validator names, duplicate tiers, reserved kind
    names, and that every tier model has a price (catalog or ``[prices]``).
    """
    lines = {} if lines is None else lines
    issues: list[PolicyIssue] = []
    names = _Names(model)

    def error(path: KeyPath, message: str) -> None:
        issues.append(PolicyIssue(format_path(path), message, line_of(lines, path)))

    def check_tier(
        path: KeyPath, name: str | None, *, doubt: bool = False, judge: bool = False
    ) -> None:
        words = (*_DOUBT_WORDS, "judge") if judge else _DOUBT_WORDS
        if name is None or name in names.tiers or (doubt and name in words):
            return
        if doubt:
            said = "'cheap', 'up', 'judge'" if judge else "'cheap', 'up'"
            expected = f"{said} or a tier name ({names.ladder_text})"
            message = f"unknown doubt direction {name!r}; expected {expected}"
            error(path, message + names.suggest_doubt(name))
        else:
            message = f"unknown tier {name!r}; the ladder is {names.ladder_text}"
            error(path, message + names.suggest_tier(name))

    seen: dict[str, int] = {}
    for i, tier in enumerate(model.tiers):
        if tier.name in seen:
            error(
                ("tiers", i, "name"),
                f"duplicate tier name {tier.name!r} (tiers[{seen[tier.name]}])",
            )
        else:
            seen[tier.name] = i

    def check_refs(path: KeyPath, refs: Iterable[ValidatorRef]) -> None:
        for j, ref in enumerate(refs):
            if isinstance(ref, str):
                if ref not in model.validators:
                    error(
                        (*path, j),
                        f"unknown validator {ref!r}; define it under [validators.{ref}] "
                        f"(defined: {names.validators_text})" + names.suggest_validator(ref),
                    )
            elif isinstance(ref, AgreementValidatorSpec):
                for k, tier_name in enumerate(ref.tiers):
                    check_tier((*path, j, "tiers", k), tier_name)
            elif isinstance(ref, LearnedValidatorSpec) and model.learned.path is None:
                error(
                    (*path, j, "type"),
                    "a 'learned' validator needs the saved verifier: set [learned] path to the "
                    "file `tierwise eval --save-router FILE` wrote",
                )

    check_tier(("frontier", "tier"), model.frontier.tier)
    for i, frule in enumerate(model.frontier.rules):
        check_tier(("frontier", "rules", i, "tier"), frule.tier)
    for i, rule in enumerate(model.rules):
        check_tier(("rules", i, "tier"), rule.tier)
    check_tier(("defaults", "floor"), model.defaults.floor)
    check_tier(("defaults", "doubt"), model.defaults.doubt, doubt=True, judge=True)
    check_tier(("defaults", "judge_fallback"), model.defaults.judge_fallback, doubt=True)
    check_refs(("defaults", "validators"), model.defaults.validators)
    check_tier(("judge", "tier"), model.judge.tier)
    check_tier(("plan", "planner_tier"), model.plan.planner_tier)
    check_tier(("plan", "reviewer_tier"), model.plan.reviewer_tier)
    for kind, settings in model.kinds.items():
        if kind in RESERVED_KINDS:
            error(
                ("kinds", kind),
                f"the kind name {kind!r} is reserved: the gateway's model id tierwise/{kind} "
                "runs plan-execute-review; choose another name",
            )
        check_tier(("kinds", kind, "floor"), settings.floor)
        check_tier(("kinds", kind, "doubt"), settings.doubt, doubt=True, judge=True)
        check_tier(("kinds", kind, "judge_fallback"), settings.judge_fallback, doubt=True)
        if settings.validators is not None:
            check_refs(("kinds", kind, "validators"), settings.validators)
        for j, tier_name in enumerate(settings.shadow_tiers or ()):
            check_tier(("kinds", kind, "shadow_tiers", j), tier_name)
        if settings.start == "learned" and model.learned.path is None:
            error(
                ("kinds", kind, "start"),
                "start = 'learned' needs the saved router: set [learned] path to the file "
                "`tierwise eval --save-router FILE` wrote",
            )
    if model.defaults.start == "learned" and model.learned.path is None:
        error(
            ("defaults", "start"),
            "start = 'learned' needs the saved router: set [learned] path to the file "
            "`tierwise eval --save-router FILE` wrote",
        )
    if model.learned.path is None:
        for name, spec in model.validators.items():
            if isinstance(spec, LearnedValidatorSpec):
                error(
                    ("validators", name, "type"),
                    "a 'learned' validator needs the saved verifier: set [learned] path to the "
                    "file `tierwise eval --save-router FILE` wrote",
                )
    for name, spec in model.validators.items():
        if isinstance(spec, AgreementValidatorSpec):
            for j, tier_name in enumerate(spec.tiers):
                check_tier(("validators", name, "tiers", j), tier_name)
    issues.extend(price_issues(model, lines))
    return sorted(issues, key=lambda i: (i.line or 0, i.path))


class _Names:
    """The tier and validator names of a policy, with suggesters built once (not per issue)."""

    def __init__(self, model: PolicyModel) -> None:
        self.ladder = [t.name for t in model.tiers]
        self.tiers = frozenset(self.ladder)
        self.validators = list(model.validators)
        self.ladder_text = _listing(self.ladder)
        self.validators_text = _listing(self.validators) if self.validators else "none are defined"
        self._tier: Suggester | None = None
        self._doubt: Suggester | None = None
        self._validator: Suggester | None = None

    def suggest_tier(self, name: str) -> str:
        self._tier = self._tier or Suggester(self.ladder)
        return _suggest(name, self.ladder, suggester=self._tier)

    def suggest_doubt(self, name: str) -> str:
        allowed = list(dict.fromkeys([*_DOUBT_WORDS, "judge", *self.ladder]))
        self._doubt = self._doubt or Suggester(allowed)
        return _suggest(name, allowed, suggester=self._doubt)

    def suggest_validator(self, name: str) -> str:
        self._validator = self._validator or Suggester(self.validators)
        return _suggest(name, self.validators, suggester=self._validator)
