"""From a policy's validator spec to a ready validator; build-time problems are PolicyErrors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tierwise.cascade.validators._agreement import AgreementValidator
from tierwise.cascade.validators._base import Validator
from tierwise.cascade.validators._builtin import (
    ConfidenceValidator,
    JsonValidator,
    NotRefusalValidator,
    NotTruncatedValidator,
    PythonValidator,
    RegexValidator,
)
from tierwise.cascade.validators._command import CommandValidator
from tierwise.cascade.validators._schema import JsonSchemaValidator, schema_checker
from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.patterns import compile_pattern
from tierwise.policy.schema import (
    AgreementValidatorSpec,
    CommandValidatorSpec,
    ConfidenceValidatorSpec,
    JsonSchemaValidatorSpec,
    JsonValidatorSpec,
    LearnedValidatorSpec,
    NotRefusalValidatorSpec,
    NotTruncatedValidatorSpec,
    PythonValidatorSpec,
    RegexValidatorSpec,
    ValidatorSpec,
)
from tierwise.policy.validator_specs import import_callable


def _error(path: str, message: str) -> PolicyError:
    return PolicyError([PolicyIssue(path, message)])


def build_validator(
    spec: ValidatorSpec | Mapping[str, Any],
    *,
    base_dir: Path,
    name: str | None = None,
    path: str | None = None,
) -> Validator:
    """Build the validator a policy describes, doing every check that can be done up front.

    Args:
        spec: a validator spec from the policy (or the same as a plain mapping, e.g.
            ``{"type": "regex", "pattern": "^OK"}``).
        base_dir: where relative paths start: ``json_schema`` files, ``command`` working
            directory, and the fallback location of ``python`` modules.
        name: the name verdicts carry — the policy's ``[validators.NAME]``; default: the type.
        path: the key path reported in errors; default ``validators.<name>``.

    Returns:
        A :class:`Validator` (a ``json_schema`` schema is read, checked and compiled once, a
        ``regex`` compiled once by RE2, a ``python`` function imported once).

    Raises:
        PolicyError: the spec is malformed, a schema file is missing or not a valid JSON Schema,
            a schema refers to a host not in its ``allow_hosts``, a pattern does not compile
            under RE2, or a ``python`` callable cannot be imported or called
            as ``fn(output)`` / ``fn(output, ctx)``. The issue's path is ``validators.<name>``
            plus the offending key.
    """
    if isinstance(spec, Mapping):
        where = path or f"validators.{name or spec.get('type', '?')}"
        try:
            spec = TypeAdapter(ValidatorSpec).validate_python(dict(spec))
        except ValidationError as exc:
            issues = [
                PolicyIssue(".".join([where, *map(str, e["loc"][1:])]), e["msg"])
                for e in exc.errors()
            ]
            raise PolicyError(issues) from None
    label = name or spec.type
    where = path or f"validators.{label}"
    if isinstance(spec, JsonValidatorSpec):
        return JsonValidator(label)
    if isinstance(spec, JsonSchemaValidatorSpec):
        checker, remote = schema_checker(
            spec.schema_, base_dir, f"{where}.schema", spec.allow_hosts
        )
        return JsonSchemaValidator(label, checker, remote=remote)
    if isinstance(spec, RegexValidatorSpec):
        pattern = compile_pattern(
            spec.pattern, ignore_case=spec.ignore_case, where=f"{where}.pattern"
        )
        return RegexValidator(label, pattern, spec.mode)
    if isinstance(spec, PythonValidatorSpec):
        function, arity = import_callable(spec.callable, base_dir, f"{where}.callable")
        return PythonValidator(label, spec.callable, function, arity)
    if isinstance(spec, ConfidenceValidatorSpec):
        return ConfidenceValidator(label, spec.min)
    if isinstance(spec, NotRefusalValidatorSpec):
        return NotRefusalValidator(label)
    if isinstance(spec, NotTruncatedValidatorSpec):
        return NotTruncatedValidator(label)
    if isinstance(spec, CommandValidatorSpec):
        return CommandValidator(
            label, spec.argv, timeout_s=spec.timeout_s, cwd=base_dir, pass_env=spec.pass_env
        )
    if isinstance(spec, AgreementValidatorSpec):
        return AgreementValidator(label, spec.tiers, spec.normalise)
    if isinstance(spec, LearnedValidatorSpec):
        raise _error(
            where,
            "a 'learned' validator is the saved response verifier: the cascade builds it from "
            "[learned] path (Cascade(policy, learned=tierwise.evaluation.load_learned(policy)))",
        )
    raise _error(where, f"unknown validator type {getattr(spec, 'type', spec)!r}")
