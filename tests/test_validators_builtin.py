"""The local built-in validators, building them from policy specs, and running a list of them."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierwise.cascade.validators import (
    BaseValidator,
    StaticContext,
    ValidationContext,
    Verdict,
    arun_validators,
    build_validator,
    run_validators,
)
from tierwise.errors import PolicyError
from tierwise.policy.schema import (
    ConfidenceValidatorSpec,
    JsonSchemaValidatorSpec,
    JsonValidatorSpec,
    RegexValidatorSpec,
)
from tierwise.pricing.usage import Usage
from tierwise.providers.base import Completion, StopReason
from tierwise.task import Task

INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "total": {"type": "number"},
        "lines": {"type": "array", "items": {"type": "object", "required": ["amount"]}},
    },
    "required": ["vendor", "total"],
}


def ctx(text: str = "", stop_reason: StopReason = "end") -> StaticContext:
    completion = Completion(
        text=text, model="m", provider="anthropic", usage=Usage(), stop_reason=stop_reason
    )
    return StaticContext(Task.create("extract", "read this invoice"), completion, "cheap")


def check(
    spec: Any,
    output: str,
    *,
    base_dir: Path = Path("."),
    name: str | None = None,
    context: StaticContext | None = None,
) -> Verdict:
    validator = build_validator(spec, base_dir=base_dir, name=name)
    return validator.check(output, context or ctx(output))


# -- json ----------------------------------------------------------------------------------------


def test_json_passes_valid_json_and_a_fenced_block() -> None:
    assert check({"type": "json"}, '{"a": 1}').ok
    assert check(JsonValidatorSpec(type="json"), '```json\n{"a": 1}\n```').ok


def test_json_fails_with_the_parse_error() -> None:
    verdict = check({"type": "json"}, '{"a": 1,}')
    assert verdict == Verdict("json", False, verdict.reason)
    assert "not valid JSON" in verdict.reason
    assert "line 1 column" in verdict.reason


def test_verdicts_carry_the_policy_name() -> None:
    assert check({"type": "json"}, "nope", name="strict_json").validator == "strict_json"


# -- json_schema -----------------------------------------------------------------------------------


def test_json_schema_inline_passes_and_fails_naming_the_json_path() -> None:
    spec = {"type": "json_schema", "schema": INVOICE_SCHEMA}
    assert check(spec, '{"vendor": "ACME", "total": 12.5}').ok
    verdict = check(spec, '{"vendor": "ACME", "total": "abc"}')
    assert not verdict.ok
    assert verdict.reason == "$.total: 'abc' is not of type 'number'"


def test_json_schema_reason_points_into_nested_arrays_and_counts_more_errors() -> None:
    spec = {"type": "json_schema", "schema": INVOICE_SCHEMA}
    nested = check(spec, '{"vendor": "ACME", "total": 2, "lines": [{"amount": 1}, {}]}')
    assert nested.reason == "$.lines[1]: 'amount' is a required property"
    two = check(spec, '{"vendor": 1, "total": 2, "lines": [{"amount": 1}, {}]}')
    assert not two.ok
    assert two.reason.endswith(" (and 1 more)")


def test_json_schema_fails_on_invalid_json_before_the_schema() -> None:
    verdict = check({"type": "json_schema", "schema": INVOICE_SCHEMA}, "vendor: ACME")
    assert not verdict.ok
    assert "not valid JSON" in verdict.reason


def test_json_schema_from_a_file_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "invoice.json").write_text(json.dumps(INVOICE_SCHEMA))
    spec = JsonSchemaValidatorSpec.model_validate(
        {"type": "json_schema", "schema": "schemas/invoice.json"}
    )
    validator = build_validator(spec, base_dir=tmp_path, name="invoice")
    assert validator.check('{"vendor": "ACME", "total": 3}', ctx()).ok
    verdict = validator.check('{"vendor": "ACME"}', ctx())
    assert verdict == Verdict("invoice", False, "$: 'total' is a required property")


def test_json_schema_checks_formats() -> None:
    spec = {"type": "json_schema", "schema": {"type": "string", "format": "ipv4"}}
    assert check(spec, '"10.0.0.1"').ok
    assert not check(spec, '"10.0.0.300"').ok


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "schema file not found"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "a JSON Schema is an object or a boolean"),
        ('{"type": "bogus"}', "invalid JSON Schema at $.type"),
        ('{"$schema": "https://example.com/nope", "type": "object"}', "unknown $schema"),
    ],
)
def test_json_schema_build_errors_are_policy_errors_with_a_key_path(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "s.json").write_text(content)
    with pytest.raises(PolicyError) as info:
        build_validator(
            {"type": "json_schema", "schema": "s.json"}, base_dir=tmp_path, name="invoice"
        )
    (issue,) = info.value.issues
    assert issue.path == "validators.invoice.schema"
    assert message in issue.message


def test_build_error_path_can_be_given_by_the_caller() -> None:
    with pytest.raises(PolicyError) as info:
        build_validator(
            {"type": "json_schema", "schema": {"type": 3}},
            base_dir=Path("."),
            path="kinds.extract.validators[0]",
        )
    assert info.value.issues[0].path == "kinds.extract.validators[0].schema"


def test_malformed_spec_mapping_is_a_policy_error() -> None:
    with pytest.raises(PolicyError) as info:
        build_validator({"type": "regex", "patern": "x"}, base_dir=Path("."), name="r")
    paths = {issue.path for issue in info.value.issues}
    assert "validators.r.patern" in paths
    assert "validators.r.pattern" in paths


# -- regex -------------------------------------------------------------------------------------


def test_regex_search_and_fullmatch_and_ignore_case() -> None:
    assert check({"type": "regex", "pattern": r"\bINV-\d+"}, "see INV-42 please").ok
    verdict = check({"type": "regex", "pattern": r"\bINV-\d+"}, "see inv-42")
    assert not verdict.ok
    assert "not found" in verdict.reason
    assert check({"type": "regex", "pattern": r"\bINV-\d+", "ignore_case": True}, "inv-42").ok
    full = RegexValidatorSpec(type="regex", pattern=r"(yes|no)", mode="fullmatch")
    assert check(full, "yes\n").ok
    verdict = check(full, "yes, definitely")
    assert not verdict.ok
    assert "as a whole" in verdict.reason


def test_regex_that_does_not_compile_is_a_policy_error() -> None:
    with pytest.raises(PolicyError) as info:
        build_validator({"type": "regex", "pattern": "(unclosed"}, base_dir=Path("."), name="r")
    assert info.value.issues[0].path == "validators.r.pattern"
    assert "invalid regular expression" in info.value.issues[0].message


# -- python ------------------------------------------------------------------------------------


@pytest.fixture
def module(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh module next to a would-be policy file (imported from base_dir)."""
    name = f"checks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        """
import asyncio
from tierwise.cascade.result import Verdict


def is_upper(output):
    return output.isupper()


def with_reason(output, ctx):
    if ctx.task.kind != "extract":
        return False, "wrong kind"
    return ("total" in output, "no total", 0.5)


def as_mapping(output, ctx=None):
    return {"ok": False, "reason": "mapping says no", "score": 0.25}


def as_verdict(output, ctx):
    return Verdict("whatever", False, "verdict says no", 0.1)


def silent_no(output):
    return False


def crashes(output):
    raise KeyError("boom")


def returns_junk(output):
    return "yes"


async def async_check(output, ctx):
    await asyncio.sleep(0)
    return output.startswith("ok"), "does not start with ok"


def too_many(output, ctx, extra):
    return True


def kw_only(output, *, flag):
    return True


NOT_CALLABLE = 3
"""
    )
    yield name, tmp_path
    sys.modules.pop(name, None)


def test_python_validator_forms_of_return_value(module: tuple[str, Path]) -> None:
    name, base = module

    def run(fn: str, output: str) -> Verdict:
        return check({"type": "python", "callable": f"{name}:{fn}"}, output, base_dir=base)

    assert run("is_upper", "OK").ok
    assert run("is_upper", "ok") == Verdict("python", False, f"rejected by {name}:is_upper")
    assert run("with_reason", "the total is 3") == Verdict("python", True, "no total", 0.5)
    assert run("with_reason", "nothing") == Verdict("python", False, "no total", 0.5)
    assert run("as_mapping", "x") == Verdict("python", False, "mapping says no", 0.25)
    assert run("as_verdict", "x") == Verdict("python", False, "verdict says no", 0.1)
    assert run("silent_no", "x") == Verdict("python", False, f"rejected by {name}:silent_no")


def test_python_validator_crash_becomes_a_failed_verdict(module: tuple[str, Path]) -> None:
    name, base = module
    verdict = check({"type": "python", "callable": f"{name}:crashes"}, "x", base_dir=base)
    assert verdict == Verdict("python", False, "validator crashed: KeyError: 'boom'")
    junk = check({"type": "python", "callable": f"{name}:returns_junk"}, "x", base_dir=base)
    assert not junk.ok
    assert junk.reason.startswith("validator crashed: TypeError:")
    assert "returned str" in junk.reason


async def test_python_validator_async_paths(module: tuple[str, Path]) -> None:
    name, base = module
    sync_fn = build_validator({"type": "python", "callable": f"{name}:with_reason"}, base_dir=base)
    assert (await sync_fn.acheck("total", ctx())).ok
    async_fn = build_validator({"type": "python", "callable": f"{name}:async_check"}, base_dir=base)
    assert (await async_fn.acheck("ok then", ctx())).ok
    assert (await async_fn.acheck("nope", ctx())).reason == "does not start with ok"
    # The blocking path cannot run a coroutine inside a running loop: a failed verdict, no hang.
    assert not async_fn.check("ok then", ctx()).ok


def test_python_async_function_from_the_blocking_path(module: tuple[str, Path]) -> None:
    name, base = module
    async_fn = build_validator({"type": "python", "callable": f"{name}:async_check"}, base_dir=base)
    assert async_fn.check("ok then", ctx()).ok


def test_python_validator_importable_module_needs_no_base_dir() -> None:
    verdict = check({"type": "python", "callable": "os.path:isabs"}, "/abs", base_dir=Path("/"))
    assert verdict.ok


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "is a int, not a function"),
        ("{mod}:too_many", "must accept fn(output) or fn(output, ctx)"),
        ("{mod}:kw_only", "must accept fn(output) or fn(output, ctx)"),
    ],
)
def test_python_build_errors_are_policy_errors(
    module: tuple[str, Path], target: str, message: str
) -> None:
    name, base = module
    with pytest.raises(PolicyError) as info:
        build_validator(
            {"type": "python", "callable": target.format(mod=name)}, base_dir=base, name="mine"
        )
    (issue,) = info.value.issues
    assert issue.path == "validators.mine.callable"
    assert message in issue.message


def test_python_module_that_fails_to_import_is_a_policy_error(tmp_path: Path) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import no_such_dependency_xyz\n")
    try:
        with pytest.raises(PolicyError) as info:
            build_validator({"type": "python", "callable": f"{name}:f"}, base_dir=tmp_path)
    finally:
        sys.modules.pop(name, None)
    assert "ModuleNotFoundError" in info.value.issues[0].message
    assert str(tmp_path) not in sys.path


# -- confidence ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "ok", "score"),
    [
        ('{"answer": "B", "confidence": 0.9}', True, 0.9),
        ('{"answer": "B", "confidence": 0.3}', False, 0.3),
        ("B\nconfidence: high", True, 0.9),
        ("B\nconfidence: medium", False, 0.6),
        ("B\nconfidence: low", False, 0.3),
        ("B\nconfidence: 0.7", True, 0.7),
    ],
)
def test_confidence_threshold_default_0_7(output: str, ok: bool, score: float) -> None:
    verdict = check({"type": "confidence"}, output)
    assert verdict.ok is ok
    assert verdict.score == pytest.approx(score)
    if not ok:
        assert "below the minimum 0.7" in verdict.reason


def test_confidence_threshold_is_configurable() -> None:
    spec = ConfidenceValidatorSpec(type="confidence", min=0.5)
    assert check(spec, "confidence: medium").ok
    assert not check(spec, "confidence: low").ok


def test_confidence_missing_fails() -> None:
    assert check({"type": "confidence"}, "The answer is B.") == Verdict(
        "confidence", False, "no self-reported confidence"
    )


# -- not_refusal / not_truncated ---------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        "I can't help with that request.",
        "I cannot assist with creating malware.",
        "I’m sorry, but I can’t do that.",
        "  **I'm sorry, but I cannot** share that.",
        "Sorry, I can't provide that.",
        "I must decline.",
    ],
)
def test_not_refusal_catches_typical_openings(output: str) -> None:
    verdict = check({"type": "not_refusal"}, output)
    assert not verdict.ok
    assert "refusal" in verdict.reason


@pytest.mark.parametrize(
    "output",
    [
        "Here is the summary. I can't help with the other part, though.",
        "I can provide that: 42.",
        "Sorry for the delay — the total is 42.",
        "I cannot stress enough how simple this is: use a dict.",
    ],
)
def test_not_refusal_is_conservative(output: str) -> None:
    assert check({"type": "not_refusal"}, output).ok


def test_not_refusal_catches_the_fake_upstreams_refusal_sentence() -> None:
    from tierwise.testing import REFUSAL_TEXT

    assert not check({"type": "not_refusal"}, REFUSAL_TEXT).ok


def test_not_refusal_reads_the_stop_reason_and_empty_output() -> None:
    refused = check({"type": "not_refusal"}, "Here you go", context=ctx("Here", "refusal"))
    assert refused == Verdict("not_refusal", False, "the model refused (stop reason 'refusal')")
    assert check({"type": "not_refusal"}, "  ") == Verdict("not_refusal", False, "empty output")
    assert check({"type": "not_refusal"}, "", context=ctx("", "tool_use")).ok


def test_not_truncated_reads_the_stop_reason() -> None:
    assert check({"type": "not_truncated"}, "partial", context=ctx("partial", "end")).ok
    verdict = check({"type": "not_truncated"}, "partial", context=ctx("partial", "max_tokens"))
    assert verdict == Verdict("not_truncated", False, "the output was cut off at max_tokens")


# -- running lists -------------------------------------------------------------------------------


class Recording(BaseValidator):
    """Counts its calls; passes or fails as told."""

    def __init__(self, name: str, ok: bool) -> None:
        super().__init__(name)
        self.calls = 0
        self.result = ok

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        self.calls += 1
        return Verdict("ignored", self.result, "" if self.result else f"{self.name} failed")


class Raising:
    """A third-party validator that does not guard itself."""

    name = "raising"

    def check(self, output: str, ctx: ValidationContext) -> Verdict:
        raise ValueError("bad input")

    async def acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        raise ValueError("bad input")


class WrongType:
    """A third-party validator returning something that is not a Verdict."""

    name = "wrong"

    def check(self, output: str, ctx: ValidationContext) -> Verdict:
        return True  # type: ignore[return-value]

    async def acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        return True  # type: ignore[return-value]


def test_run_validators_stops_at_the_first_failure() -> None:
    first, second, third = Recording("a", True), Recording("b", False), Recording("c", True)
    verdicts = run_validators([first, second, third], "x", ctx())
    assert verdicts == (Verdict("a", True), Verdict("b", False, "b failed"))
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


async def test_arun_validators_same_order_same_stop() -> None:
    first, second, third = Recording("a", True), Recording("b", False), Recording("c", True)
    verdicts = await arun_validators([first, second, third], "x", ctx())
    assert [v.validator for v in verdicts] == ["a", "b"]
    assert third.calls == 0
    passing = await arun_validators([Recording("a", True), Recording("c", True)], "x", ctx())
    assert all(v.ok for v in passing)
    assert len(passing) == 2


async def test_validators_that_raise_or_return_junk_become_failed_verdicts() -> None:
    for runner_result in (
        run_validators([Raising()], "x", ctx()),
        await arun_validators([Raising()], "x", ctx()),
    ):
        assert runner_result == (
            Verdict("raising", False, "validator crashed: ValueError: bad input"),
        )
    junk = run_validators([WrongType()], "x", ctx())
    assert junk == (Verdict("wrong", False, "validator returned bool, expected a Verdict"),)
    assert (await arun_validators([WrongType()], "x", ctx())) == junk


def test_crash_reasons_are_clipped() -> None:
    class Loud(BaseValidator):
        def _check(self, output: str, ctx: ValidationContext) -> Verdict:
            raise RuntimeError("x" * 5000)

    verdict = Loud("loud").check("", ctx())
    assert not verdict.ok
    assert len(verdict.reason) == 500
