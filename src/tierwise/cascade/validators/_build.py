"""From a policy's validator spec to a ready validator; build-time problems are PolicyErrors."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tierwise.cascade.validators._agreement import AgreementValidator
from tierwise.cascade.validators._base import Validator
from tierwise.cascade.validators._builtin import (
    ConfidenceValidator,
    JsonSchemaValidator,
    JsonValidator,
    NotRefusalValidator,
    NotTruncatedValidator,
    PythonValidator,
    RegexValidator,
)
from tierwise.cascade.validators._command import CommandValidator
from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.schema import (
    AgreementValidatorSpec,
    CommandValidatorSpec,
    ConfidenceValidatorSpec,
    JsonSchemaValidatorSpec,
    JsonValidatorSpec,
    NotRefusalValidatorSpec,
    NotTruncatedValidatorSpec,
    PythonValidatorSpec,
    RegexValidatorSpec,
    ValidatorSpec,
)


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
        ``regex`` compiled once, a ``python`` function imported once).

    Raises:
        PolicyError: the spec is malformed, a schema file is missing or not a valid JSON Schema,
            a pattern does not compile, or a ``python`` callable cannot be imported or called
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
        return JsonSchemaValidator(
            label, _schema_checker(spec.schema_, base_dir, f"{where}.schema")
        )
    if isinstance(spec, RegexValidatorSpec):
        try:
            pattern = re.compile(spec.pattern, re.IGNORECASE if spec.ignore_case else 0)
        except re.error as exc:
            raise _error(f"{where}.pattern", f"invalid regular expression: {exc}") from None
        return RegexValidator(label, pattern, spec.mode)
    if isinstance(spec, PythonValidatorSpec):
        function, arity = _import_callable(spec.callable, base_dir, f"{where}.callable")
        return PythonValidator(label, spec.callable, function, arity)
    if isinstance(spec, ConfidenceValidatorSpec):
        return ConfidenceValidator(label, spec.min)
    if isinstance(spec, NotRefusalValidatorSpec):
        return NotRefusalValidator(label)
    if isinstance(spec, NotTruncatedValidatorSpec):
        return NotTruncatedValidator(label)
    if isinstance(spec, CommandValidatorSpec):
        return CommandValidator(label, spec.argv, timeout_s=spec.timeout_s, cwd=base_dir)
    if isinstance(spec, AgreementValidatorSpec):
        return AgreementValidator(label, spec.tiers, spec.normalise)
    raise _error(where, f"unknown validator type {getattr(spec, 'type', spec)!r}")


# -- json_schema -------------------------------------------------------------------------------


def _schema_checker(schema: str | dict[str, Any], base_dir: Path, where: str) -> Any:
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    document: Any = schema
    if isinstance(schema, str):
        file = base_dir / schema
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _error(where, f"schema file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _error(where, f"cannot read schema file {file}: {exc}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error(
                where,
                f"schema file {file} is not JSON: {exc.msg} "
                f"at line {exc.lineno} column {exc.colno}",
            ) from None
    if not isinstance(document, dict | bool):
        raise _error(
            where, f"a JSON Schema is an object or a boolean, found {type(document).__name__}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls = validator_for(document)
    if caught and isinstance(document, dict):
        raise _error(where, f"unknown $schema {document.get('$schema')!r}")
    try:
        if isinstance(document, dict):  # true and false are valid schemas as they stand
            cls.check_schema(document)
    except SchemaError as exc:
        raise _error(where, f"invalid JSON Schema at {exc.json_path}: {exc.message}") from None
    return cls(document, format_checker=cls.FORMAT_CHECKER)


# -- python --------------------------------------------------------------------------------------


def _import_module(module_name: str, base_dir: Path) -> Any:
    """Import *module_name*; when it is not importable, try again from *base_dir*.

    The fallback lets a policy name ``checks:valid_invoice`` for a ``checks.py`` kept next to
    the policy file; ``sys.path`` is restored right after.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise  # the module exists but imports something missing
        folder = str(base_dir.resolve())
        sys.path.insert(0, folder)
        try:
            importlib.invalidate_caches()
            return importlib.import_module(module_name)
        finally:
            if folder in sys.path:
                sys.path.remove(folder)


def _import_callable(target: str, base_dir: Path, where: str) -> tuple[Callable[..., Any], int]:
    module_name, _, attr = target.partition(":")
    try:
        module = _import_module(module_name, base_dir)
    except Exception as exc:
        raise _error(
            where, f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, attr, None)
    if function is None:
        raise _error(where, f"module {module_name!r} has no attribute {attr!r}")
    if not callable(function):
        raise _error(where, f"{target} is a {type(function).__name__}, not a function")
    return function, _arity(function, target, where)


def _arity(function: Callable[..., Any], target: str, where: str) -> int:
    """How many arguments to pass: 1 for ``fn(output)``, 2 for ``fn(output, ctx)``."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return 2  # no introspectable signature (a builtin): pass both
    kinds = inspect.Parameter
    positional = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is kinds.empty]
    star = any(p.kind == kinds.VAR_POSITIONAL for p in params)
    keyword_only = [p for p in params if p.kind == kinds.KEYWORD_ONLY and p.default is kinds.empty]
    if keyword_only or len(required) > 2 or (not positional and not star):
        raise _error(
            where,
            f"{target} must accept fn(output) or fn(output, ctx); found {target}"
            f"{inspect.signature(function)}",
        )
    return 2 if star or len(positional) >= 2 else 1
