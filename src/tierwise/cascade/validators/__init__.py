"""Validators: prove an output good enough before the cascade accepts it.

A validator judges one output and returns a :class:`~tierwise.cascade.result.Verdict`
``(validator, ok, reason, score)``. It never raises to steer control flow: an exception inside
one becomes ``Verdict(ok=False, reason="validator crashed: <ExcType>: <message>")``.

The policy lists validators per kind, as tables with a ``type``; :func:`build_validator` turns
one into a :class:`Validator` (checking schemas, patterns and imports up front, as
:class:`~tierwise.errors.PolicyError`), and :func:`run_validators` / :func:`arun_validators` run
a kind's list in order and **stop at the first failure** — list cheap local checks first, so a
priced check (``agreement``) only runs for outputs the free ones accept.

Built-in types:

- ``json``: the output parses as strict JSON (one ```` ```json ```` fence around it allowed).
- ``json_schema``: … and the schema (a file relative to the policy, or inline) accepts it; the
  reason names the JSON path: ``$.total: 'abc' is not of type 'number'``. A ``$ref`` is fetched
  only from hosts the spec's ``allow_hosts`` names.
- ``regex``: ``search`` (default) or ``fullmatch`` (of the stripped output), ``ignore_case``;
  compiled by RE2, so matching is linear in the output's length.
- ``python``: ``module:function`` called as ``fn(output)`` or ``fn(output, ctx)``; returns a
  bool, ``(ok, reason[, score])``, a mapping with ``ok`` or a Verdict; may be async. A module
  not importable otherwise is looked for next to the policy file.
- ``confidence``: self-reported confidence ≥ ``min`` (default 0.7); ``high``/``medium``/``low``
  count as 0.9/0.6/0.3; none reported fails (:func:`parse_confidence`).
- ``not_refusal``: stop reason ``refusal``, a refusal opening, or an empty output fails.
- ``not_truncated``: stop reason ``max_tokens`` fails.
- ``command``: the output piped to ``argv`` (from the policy only); exit 0 passes; a timeout
  fails and kills the command's process group. Its environment is an allow-list (``PATH``,
  ``HOME``, ``LANG``, ``LC_*``, ``TMPDIR`` and the spec's ``pass_env``); its output goes to the
  verdict's ``detail`` (for the next tier), never to its ``reason`` (which callers see).
- ``agreement``: other tiers answer the same task through the cascade (priced, budgeted,
  recorded as ``validator`` attempts); all must agree under ``exact``, ``lower``, ``choice``,
  ``number`` or ``json`` normalisation (:func:`normalise_answer`).

Example::

    from tierwise.cascade.validators import StaticContext, build_validator, run_validators

    check = build_validator({"type": "json_schema", "schema": "invoice.schema.json"},
                            base_dir=Path("."), name="invoice")
    verdicts = run_validators([check], output, StaticContext(task))
"""

from __future__ import annotations

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators._agreement import AgreementValidator
from tierwise.cascade.validators._base import (
    BaseValidator,
    StaticContext,
    ValidationContext,
    Validator,
    arun_validators,
    run_validators,
)
from tierwise.cascade.validators._build import build_validator
from tierwise.cascade.validators._builtin import (
    REFUSAL_OPENINGS,
    ConfidenceValidator,
    JsonValidator,
    NotRefusalValidator,
    NotTruncatedValidator,
    PythonValidator,
    RegexValidator,
    refusal_opening,
)
from tierwise.cascade.validators._command import CommandValidator
from tierwise.cascade.validators._schema import JsonSchemaValidator
from tierwise.cascade.validators._text import (
    CONFIDENCE_LEVELS,
    Normalise,
    extract_choice,
    extract_number,
    normalise_answer,
    parse_confidence,
    parse_json,
    strip_json_fence,
)

__all__ = [
    "CONFIDENCE_LEVELS",
    "REFUSAL_OPENINGS",
    "AgreementValidator",
    "BaseValidator",
    "CommandValidator",
    "ConfidenceValidator",
    "JsonSchemaValidator",
    "JsonValidator",
    "Normalise",
    "NotRefusalValidator",
    "NotTruncatedValidator",
    "PythonValidator",
    "RegexValidator",
    "StaticContext",
    "ValidationContext",
    "Validator",
    "Verdict",
    "arun_validators",
    "build_validator",
    "extract_choice",
    "extract_number",
    "normalise_answer",
    "parse_confidence",
    "parse_json",
    "refusal_opening",
    "run_validators",
    "strip_json_fence",
]
