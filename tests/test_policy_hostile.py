"""Hostile or accidental policy files: one clean line and exit 2, never a traceback.

And the checks stay linear: the number of condition comparisons ``policy check`` makes grows in
proportion to the number of rules (counted, not timed; ``benchmarks/policy_check.py`` times it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import tierwise.policy.containment as containment
from tierwise.errors import PolicyError
from tierwise.policy import check_policy, default_policy_text, load_policy, loads_policy
from tierwise.policy.locate import MAX_DEPTH, key_lines

runner = CliRunner()

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
"""

DEEP = {
    "arrays": HEAD + "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "inline tables": HEAD + "x = " + "{ a = " * 5000 + "1" + " }" * 5000 + "\n",
    "dotted keys": HEAD + "x" + ".a" * 5000 + " = 1\n",
    "table header": HEAD + "[" + ".".join(["t"] * 5000) + "]\nk = 1\n",
    "inline schema": HEAD
    + "[validators.v]\ntype = 'json_schema'\nschema = "
    + "{ not = " * 200
    + "{}"
    + " }" * 200
    + "\n",
}


def app():  # type: ignore[no-untyped-def]
    from tierwise.cli import build_app

    return build_app()


@pytest.mark.parametrize("shape", list(DEEP))
def test_deeply_nested_policy_is_a_policy_error(shape: str) -> None:
    with pytest.raises(PolicyError) as info:
        loads_policy(DEEP[shape], source="deep.toml")
    (issue,) = info.value.issues
    assert f"nested more than {MAX_DEPTH} levels deep" in issue.message
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("deep.toml")


@pytest.mark.parametrize(
    "command",
    [
        ["policy", "check"],
        ["route", "--kind", "extract", "--policy"],
        ["serve", "--port", "0", "--policy"],
        ["policy", "show", "--policy"],
    ],
)
def test_deep_toml_gives_one_line_and_exit_2_on_every_command(
    command: list[str], tmp_path: Path
) -> None:
    file = tmp_path / "deep.toml"
    file.write_text(DEEP["arrays"])
    result = runner.invoke(app(), [*command, str(file)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    line = DEEP["arrays"].count("\n")  # the deep array is on the last line
    expected = f"{file}:{line}: error: invalid TOML: nested more than {MAX_DEPTH} levels deep"
    assert expected in result.output


def test_key_lines_stops_at_the_depth_limit_without_recursing_further() -> None:
    lines = key_lines(DEEP["arrays"])
    assert max(len(path) for path in lines) <= MAX_DEPTH + 3  # the key, then the levels


def test_a_policy_at_the_depth_limit_still_loads() -> None:
    depth = 20
    schema = "{ not = " * depth + "{}" + " }" * depth
    policy = loads_policy(HEAD + f"[validators.v]\ntype = 'json_schema'\nschema = {schema}\n")
    assert "v" in policy.model.validators


def test_a_huge_string_value_is_a_normal_error(tmp_path: Path) -> None:
    text = default_policy_text() + '\n[kinds.extract2]\ndescription = "' + "a" * 3_000_000 + '"\n'
    text += "floar = 1\n"
    file = tmp_path / "big.toml"
    file.write_text(text)
    issues = check_policy(file)
    assert [i.path for i in issues] == ["kinds.extract2.floar"]
    assert issues[0].message.endswith("did you mean 'floor'?")
    assert issues[0].line == text.count("\n")


def rules_policy(n: int) -> str:
    """A policy with *n* rules over distinct kinds, some with ranges, every tenth shadowed."""
    parts = [HEAD]
    for i in range(n):
        when = f'kind = "k{i}"'
        if i % 10 == 9:
            when = f'kind = "k{i - 1}", files = {{ min = 1, max = 2 }}'
        elif i % 3 == 0:
            when += f", files = {{ max = {i % 7 + 3} }}"
        parts.append(f'[[rules]]\nwhen = {{ {when} }}\ntier = "cheap"\n')
    parts.append('[[frontier.rules]]\nwhen = { kind = "k0", severity = 5 }\n')
    return "".join(parts)


def comparisons(n: int, monkeypatch: pytest.MonkeyPatch) -> int:
    calls = 0
    real = containment.implies

    def counting(narrow: containment.Atoms, wide: containment.Atoms) -> bool:
        nonlocal calls
        calls += 1
        return real(narrow, wide)

    monkeypatch.setattr(containment, "implies", counting)
    issues = check_policy(loads_policy(rules_policy(n)))
    assert sum("can never match" in i.message for i in issues) == n // 10
    return calls


def test_policy_check_compares_rules_a_linear_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small, large = comparisons(300, monkeypatch), comparisons(3000, monkeypatch)
    # pairwise checking makes ~n²/2 comparisons: 100× more for 10× the rules
    assert small > 0
    assert large <= 12 * small, (small, large)


def test_many_unknown_validator_names_give_short_messages() -> None:
    names = [f"v{i}" for i in range(3000)]
    text = HEAD + "".join(f"[validators.{n}]\ntype = 'json'\n" for n in names)
    text += "[defaults]\nvalidators = [" + ", ".join(f'"x{i}"' for i in range(3000)) + "]\n"
    with pytest.raises(PolicyError) as info:
        loads_policy(text)
    assert len(info.value.issues) == 3000
    assert max(len(i.message) for i in info.value.issues) < 300
    assert "(2990 more)" in info.value.issues[0].message


def test_load_policy_of_a_directory_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert "cannot read the policy file" in str(info.value)
