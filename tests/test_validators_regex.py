"""Regex validators run on RE2: no pattern hangs a check; what RE2 lacks is a policy error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tierwise.cascade.validators import StaticContext, build_validator
from tierwise.errors import PolicyError
from tierwise.policy import check_policy, loads_policy
from tierwise.policy.patterns import nested_quantifier
from tierwise.task import Task

HEAD = """\
version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"
[[tiers]]
name = "strong"
provider = "anthropic"
model = "claude-opus-4-6"
[[rules]]
when = { kind = "extract" }
tier = "cheap"
"""

CONTEXT = StaticContext(Task.create("extract", "x"), None, "cheap")

# Run in a child process: with a backtracking engine these checks do not finish in any useful
# time, and since the engine holds the GIL nothing in this process could stop them. The child's
# timeout is a safety net far above what RE2 needs (milliseconds), not a timing claim.
CATASTROPHIC = """
import json
from pathlib import Path
from tierwise.cascade.validators import StaticContext, build_validator
from tierwise.task import Task

ctx = StaticContext(Task.create("extract", "x"), None, "cheap")
cases = [
    ("(a+)+$", "search", "a" * 100_000 + "b"),
    ("(a+)+$", "search", "a" * 100_000),
    ("^(\\\\w+\\\\s?)*$", "search", "word " * 20_000 + "!"),
    ("(x|x)*y", "fullmatch", "x" * 50_000),
    ("(.*a){12}", "search", "a" * 11 + "b" * 50_000),
]
out = []
for pattern, mode, text in cases:
    v = build_validator({"type": "regex", "pattern": pattern, "mode": mode}, base_dir=Path("."))
    out.append(v.check(text, ctx).ok)
print(json.dumps(out))
"""


def test_catastrophic_patterns_on_long_outputs_get_the_right_verdicts() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CATASTROPHIC], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True, False, False, False]


def test_regex_validator_matches_like_python_re_on_ordinary_patterns() -> None:
    def ok(pattern: str, text: str, **extra: object) -> bool:
        spec = {"type": "regex", "pattern": pattern, **extra}
        return build_validator(spec, base_dir=Path(".")).check(text, CONTEXT).ok

    assert ok(r"(?P<id>INV-\d{2,})\b", "see INV-042.")
    assert ok(r"^total: \d+(\.\d\d)?$", "vendor: ACME\ntotal: 10.50", ignore_case=True) is False
    assert ok(r"(?m)^total: \d+(\.\d\d)?$", "vendor: ACME\ntotal: 10.50")
    assert ok(r"TOTAL", "total", ignore_case=True)
    # '$' matches before one final newline, as in Python's re; \Z only at the very end
    assert ok(r"yes$", "yes\n")
    assert not ok(r"yes\Z", "yes\n")
    assert ok(r"yes\Z", "yes")
    assert ok(r"\\Z", "a literal \\Z")  # an escaped backslash before Z is not \Z


@pytest.mark.parametrize(
    ("pattern", "feature"),
    [
        (r"(\w+) \1", "a backreference"),
        (r"(?P<w>\w+) (?P=w)", "a backreference"),
        (r"foo(?=bar)", "lookahead"),
        (r"(?<!un)safe", "lookbehind"),
        (r"(?>a+)b", "an atomic group"),
        (r"a++b", "a possessive quantifier"),
    ],
)
def test_features_re2_lacks_are_policy_errors_at_load_naming_the_key_path(
    pattern: str, feature: str
) -> None:
    text = HEAD + f"[validators.answer]\ntype = 'regex'\npattern = '{pattern}'\n"
    with pytest.raises(PolicyError) as info:
        loads_policy(text)
    (issue,) = info.value.issues
    assert issue.path == "validators.answer.pattern"
    assert issue.line == text.splitlines().index(f"pattern = '{pattern}'") + 1
    assert f"uses {feature}" in issue.message
    assert "RE2" in issue.message


def test_inline_regex_in_a_kind_is_checked_at_load_with_its_own_path() -> None:
    text = HEAD + '[kinds.extract]\nvalidators = [{ type = "regex", pattern = "a(?=b)" }]\n'
    with pytest.raises(PolicyError) as info:
        loads_policy(text)
    assert info.value.issues[0].path == "kinds.extract.validators[0].pattern"


def test_build_validator_refuses_them_too() -> None:
    with pytest.raises(PolicyError) as info:
        build_validator({"type": "regex", "pattern": r"(a)\1"}, base_dir=Path("."), name="r")
    assert info.value.issues[0].path == "validators.r.pattern"
    assert "backreference" in info.value.issues[0].message


def test_policy_check_warns_on_nested_quantifiers() -> None:
    text = (
        HEAD
        + "[validators.greedy]\ntype = 'regex'\npattern = '(a+)+$'\n"
        + "[validators.fine]\ntype = 'regex'\npattern = '(\\d{1,3}\\.){3}\\d{1,3}'\n"
    )
    issues = check_policy(loads_policy(text))
    assert [(i.path, i.severity) for i in issues] == [("validators.greedy.pattern", "warning")]
    assert "nested quantifier '(a+)+'" in issues[0].message


@pytest.mark.parametrize(
    ("pattern", "nested"),
    [
        ("(a+)+$", "(a+)+"),
        ("(a*)*", "(a*)*"),
        (r"^(\w+\s?)*$", r"(\w+\s?)*"),
        ("(x+y?){2,}", "(x+y?){2,}"),
        ("((a)+b)+", "((a)+b)+"),
        ("(?:a{2,5})+", "(?:a{2,5})+"),
        ("(a{2})+", None),  # a fixed count is not ambiguous
        (r"(\d{1,3}\.){3}", None),  # bounded outside
        ("[(a+)]+", None),  # a character class, not a group
        (r"\(a+\)+", None),  # escaped parentheses
        ("(ab)+", None),
    ],
)
def test_nested_quantifier_detection(pattern: str, nested: str | None) -> None:
    assert nested_quantifier(pattern) == nested
