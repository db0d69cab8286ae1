"""`tierwise route` through the real CLI app: decisions, explanations, bad input, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.routing import EXAMPLE_TASKS

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERWISE_POLICY", raising=False)


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(build_app(), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_route_prints_tier_model_and_reason() -> None:
    code, out, _ = invoke("route", "--kind", "debug", "--attr", "severity=5")
    assert code == 0
    assert "strong (claude-opus-4-6, anthropic)" in out
    assert "rule 12 (severe bug)" in out


def test_route_json_is_the_decision_with_model_and_attributes() -> None:
    code, out, _ = invoke(
        "route", "--kind", "code_edit", "--attr", "files=1",
        "--annotate", "[scope: single-file] [domain: tests] [ambiguity: low]", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["tier"] == "cheap" and data["model"] == "claude-haiku-4-5"
    assert data["step"] == "rule" and data["rule_index"] == 0
    assert data["rule_name"] == "routine single-file work"
    assert data["attributes"] == {
        "files": 1, "scope": "single-file", "domain": "tests", "ambiguity": "low",
    }  # fmt: skip
    for key in ("constraint_index", "floor", "floor_source", "doubt", "kind_known", "explanation"):
        assert key in data


def test_route_reads_annotations_from_the_prompt() -> None:
    code, out, _ = invoke(
        "route", "--kind", "code_edit", "--prompt", "Fix the login [domain: security]", "--json"
    )
    data = json.loads(out)
    assert (code, data["tier"], data["step"]) == (0, "strong", "frontier")
    assert data["constraint_name"] == "domain=security"
    assert data["attributes"]["input_chars"] == len("Fix the login [domain: security]")


def test_route_unknown_kind_uses_defaults() -> None:
    code, out, _ = invoke("route", "--kind", "tone_check", "--json")
    data = json.loads(out)
    assert (code, data["tier"], data["kind_known"], data["doubt"]) == (0, "mid", False, "up")


def test_route_start_tier_is_raised_to_a_frontier_pin() -> None:
    code, out, _ = invoke(
        "route", "--kind", "classify", "--attr", "ambiguity=high", "--start", "cheap", "--json"
    )
    data = json.loads(out)
    assert (code, data["tier"], data["step"]) == (0, "strong", "frontier")
    code, _, err = invoke("route", "--kind", "classify", "--start", "gold")
    assert code == 2 and "unknown tier 'gold'" in err


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("file=2", "unknown attribute 'file'"),
        ("files=two", "files must be an integer, found 'two'"),
        ("files=-1", "files must be 0 or more"),
        ("severity=9", "severity must be 1 to 5"),
        ("requires_code=maybe", "requires_code must be true or false"),
        ("scope=singlefile", "did you mean 'single-file'?"),
        ("files", "expected key=value"),
    ],
)
def test_bad_attr_is_one_line_on_stderr_and_exit_2(attr: str, message: str) -> None:
    code, out, err = invoke("route", "--kind", "debug", "--attr", attr)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_route_needs_a_kind_and_a_sensible_annotation() -> None:
    code, _, err = invoke("route")
    assert code == 2 and "--kind" in err
    code, _, err = invoke("route", "--kind", "x", "--annotate", "scope single-file")
    assert code == 2 and "no annotation found" in err


def test_route_with_an_invalid_policy_exits_2(tmp_path: Path) -> None:
    (tmp_path / "tierwise.toml").write_text("version = 1\n")
    code, _, err = invoke("route", "--kind", "classify")
    assert code == 2
    assert "tierwise.toml" in err and "tiers" in err


def test_route_table_json_routes_every_example_task() -> None:
    code, out, _ = invoke("route", "--table", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["task_id"] for r in rows] == [t.id for t in EXAMPLE_TASKS]
    assert {r["tier"] for r in rows} == {"cheap", "mid", "strong"}
    assert all({"kind", "prompt", "model", "tier", "explanation"} <= set(r) for r in rows)


def test_route_table_text_and_conflicting_flags() -> None:
    code, out, _ = invoke("route", "--table")
    assert code == 0
    assert "Routing of the example tasks" in out and "claude-haiku-4-5" in out
    assert invoke("route", "--table", "--kind", "classify")[0] == 2
