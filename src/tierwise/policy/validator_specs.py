"""Validator specs as the policy layer sees them: where they are, and whether they can work.

The cascade builds running validators from specs; the policy must be able to say, without
importing the cascade (a higher layer), whether a spec is usable. This module holds every check
that can be made on a spec, and the preparation the cascade reuses:

- :func:`static_issues` — checks that run no user code and touch no network: the pattern
  compiles under RE2, an inline or file schema's ``$ref`` s stay on allowed hosts. The loader
  runs them, so a policy with such a problem never loads.
- :func:`build_issues` — everything :func:`static_issues` checks, plus what building does: the
  schema file exists and is a valid JSON Schema, the ``python`` callable imports and has a
  usable signature. ``tierwise policy check`` runs them.
- :func:`import_callable` — the import the ``python`` validator uses.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy.locate import KeyPath, format_path, line_of
from tierwise.policy.patterns import compile_pattern
from tierwise.policy.schema import (
    JsonSchemaValidatorSpec,
    PolicyModel,
    PythonValidatorSpec,
    RegexValidatorSpec,
    ValidatorSpec,
)
from tierwise.policy.schemas import check_schema, read_schema, ref_issues

__all__ = ["build_issues", "import_callable", "iter_specs", "static_issues"]


def iter_specs(model: PolicyModel) -> Iterator[tuple[KeyPath, ValidatorSpec, str | None]]:
    """Every validator spec written in the policy: named ones, then inline ones in kinds/defaults.

    Yields (key path, spec, name) — the name is ``None`` for an inline spec.
    """
    for name, spec in model.validators.items():
        yield ("validators", name), spec, name
    for kind, settings in model.kinds.items():
        for j, ref in enumerate(settings.validators or []):
            if not isinstance(ref, str):
                yield ("kinds", kind, "validators", j), ref, None
    for j, ref in enumerate(model.defaults.validators):
        if not isinstance(ref, str):
            yield ("defaults", "validators", j), ref, None


def static_issues(
    spec: ValidatorSpec,
    path: KeyPath,
    base_dir: Path,
    lines: Mapping[KeyPath, int] | None = None,
) -> list[PolicyIssue]:
    """Problems found without running user code or touching the network (see module doc).

    A schema file that cannot be read is not reported here (:func:`build_issues` does), so a
    policy still loads before its schema file is written. With *lines* (from
    :func:`~tierwise.policy.locate.key_lines`), each issue carries the line of its key.
    """
    return _located(_static(spec, path, base_dir), spec, path, lines)


def build_issues(
    spec: ValidatorSpec,
    path: KeyPath,
    base_dir: Path,
    lines: Mapping[KeyPath, int] | None = None,
) -> list[PolicyIssue]:
    """Every problem that would stop the cascade from building this validator."""
    where = format_path(path)
    try:
        if isinstance(spec, JsonSchemaValidatorSpec):
            document = read_schema(spec.schema_, base_dir, f"{where}.schema")
            check_schema(document, f"{where}.schema")
            issues = ref_issues(document, spec.allow_hosts, f"{where}.schema")
        elif isinstance(spec, PythonValidatorSpec):
            import_callable(spec.callable, base_dir, f"{where}.callable")
            issues = []
        else:
            issues = _static(spec, path, base_dir)
    except PolicyError as exc:
        issues = list(exc.issues)
    return _located(issues, spec, path, lines)


def _located(
    issues: list[PolicyIssue],
    spec: ValidatorSpec,
    path: KeyPath,
    lines: Mapping[KeyPath, int] | None,
) -> list[PolicyIssue]:
    if lines is None or not issues:
        return issues
    key = _KEY.get(spec.type)
    line = line_of(lines, (*path, key) if key else path)
    return [replace(i, line=line) for i in issues]


#: The key each validator type's build problems are about (for line numbers).
_KEY = {"regex": "pattern", "json_schema": "schema", "python": "callable"}


def _static(spec: ValidatorSpec, path: KeyPath, base_dir: Path) -> list[PolicyIssue]:
    where = format_path(path)
    try:
        if isinstance(spec, RegexValidatorSpec):
            compile_pattern(spec.pattern, ignore_case=spec.ignore_case, where=f"{where}.pattern")
        elif isinstance(spec, JsonSchemaValidatorSpec):
            try:
                document = read_schema(spec.schema_, base_dir, f"{where}.schema")
            except PolicyError:
                return []
            return ref_issues(document, spec.allow_hosts, f"{where}.schema")
    except PolicyError as exc:
        return list(exc.issues)
    return []


# -- python callables -----------------------------------------------------------------------------


def import_callable(target: str, base_dir: Path, where: str) -> tuple[Callable[..., Any], int]:
    """Import ``module:function``; return it and how many arguments to pass it (1 or 2).

    A module not importable otherwise is looked for in *base_dir* (next to the policy file).

    Raises:
        PolicyError: the module does not import, has no such attribute, the attribute is not
            callable, or it cannot be called as ``fn(output)`` or ``fn(output, ctx)``.
    """
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


def _error(where: str, message: str) -> PolicyError:
    return PolicyError([PolicyIssue(where, message)])
