"""`tierwise init`, `tierwise policy check` and `tierwise policy show` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.policy import default_policy, default_policy_text

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every command in an empty directory with no $TIERWISE_POLICY."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERWISE_POLICY", raising=False)


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(build_app(), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


# -- init ------------------------------------------------------------------------------------------


def test_init_writes_the_commented_default_policy(tmp_path: Path) -> None:
    code, out, _ = invoke("init")
    assert code == 0
    written = (tmp_path / "tierwise.toml").read_text()
    assert written == default_policy_text()
    assert "tierwise policy check" in out


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "team.toml"
    target.write_text("mine")
    code, _, err = invoke("init", str(target))
    assert code == 2
    assert "already exists" in err and "--force" in err
    assert target.read_text() == "mine"
    assert invoke("init", str(target), "--force")[0] == 0
    assert target.read_text() == default_policy_text()


def test_init_creates_parent_directories(tmp_path: Path) -> None:
    assert invoke("init", "policies/prod/tierwise.toml")[0] == 0
    assert (tmp_path / "policies/prod/tierwise.toml").exists()


# -- policy check ----------------------------------------------------------------------------------


def test_check_of_the_written_default_is_clean() -> None:
    invoke("init")
    code, out, err = invoke("policy", "check")  # finds ./tierwise.toml
    assert code == 0, err
    assert "tierwise.toml: ok, 0 warnings" in out
    assert default_policy().revision in out


def test_check_without_any_file_checks_the_embedded_default() -> None:
    code, out, _ = invoke("policy", "check", "--strict")
    assert code == 0
    assert "<embedded default>: ok" in out


def test_check_invalid_policy_prints_file_line_and_key_path_and_exits_2(tmp_path: Path) -> None:
    text = default_policy_text().replace(
        'kind = "classify", ambiguity', 'knd = "classify", ambiguity'
    )
    (tmp_path / "bad.toml").write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "knd =" in s)
    code, _, err = invoke("policy", "check", "bad.toml")
    assert code == 2
    assert f"bad.toml:{line}: error: rules[1].when.knd: unknown field; did you mean 'kind'?" in err
    assert "Traceback" not in err


def test_check_toml_syntax_error_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("version = 1\n[[tiers]\n")
    code, _, err = invoke("policy", "check", "bad.toml")
    assert code == 2
    assert "bad.toml:2: error: invalid TOML" in err


def test_check_missing_file_exits_2() -> None:
    code, _, err = invoke("policy", "check", "nope.toml")
    assert code == 2
    assert "cannot read the policy file" in err


def _with_warning(tmp_path: Path) -> Path:
    # a rule after the catch-all "extraction" rule for the same kind can never match
    text = default_policy_text().replace(
        "# -- Validators",
        '[[rules]]\nname = "dead"\nwhen = { kind = "extract", files = 1 }\ntier = "mid"\n\n'
        "# -- Validators",
    )
    path = tmp_path / "warn.toml"
    path.write_text(text)
    return path


def test_warnings_exit_0_normally_and_1_with_strict(tmp_path: Path) -> None:
    path = _with_warning(tmp_path)
    code, out, _ = invoke("policy", "check", str(path))
    assert code == 0
    assert "warning: rules[16]: rules[16] (dead) can never match" in out
    assert "ok, 1 warning;" in out
    assert invoke("policy", "check", str(path), "--strict")[0] == 1


def test_check_json_shape(tmp_path: Path) -> None:
    path = _with_warning(tmp_path)
    code, out, _ = invoke("policy", "check", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"file", "ok", "revision", "errors", "warnings"}
    assert data["ok"] is True and data["errors"] == []
    (warning,) = data["warnings"]
    assert set(warning) == {"path", "line", "severity", "message"}
    assert warning["path"] == "rules[16]" and isinstance(warning["line"], int)

    (tmp_path / "bad.toml").write_text('version = 1\n[[tiers]]\nname = "a"\n')
    code, out, _ = invoke("policy", "check", "bad.toml", "--json")
    data = json.loads(out)
    assert code == 2
    assert data["ok"] is False and data["revision"] is None
    assert {e["path"] for e in data["errors"]} == {"tiers[0].provider", "tiers[0].model"}


def test_check_uses_the_policy_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _with_warning(tmp_path)
    monkeypatch.setenv("TIERWISE_POLICY", str(path))
    assert invoke("policy", "check", "--strict")[0] == 1


# -- policy show -----------------------------------------------------------------------------------


def test_show_json_has_ladder_frontier_rules_and_kinds() -> None:
    code, out, _ = invoke("policy", "show", "--json")
    assert code == 0
    data = json.loads(out)
    assert [t["model"] for t in data["ladder"]] == [
        "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6",
    ]  # fmt: skip
    assert data["revision"] == default_policy().revision
    assert data["frontier"][0] == {
        "index": 0, "name": "domain=security", "when": "domain=security", "tier": "strong",
    }  # fmt: skip
    assert data["rules"][8]["when"] == "kind=code_edit, files<=2"
    assert data["kinds"]["extract"]["validators"] == ["not_truncated", "json"]
    assert data["kinds"]["debug"]["doubt_tier"] == "mid"
    assert data["kinds"]["[defaults]"]["doubt"] == "up"


def test_show_table_and_invalid_policy(tmp_path: Path) -> None:
    code, out, _ = invoke("policy", "show")
    assert code == 0
    assert "claude-opus-4-6" in out and "first match wins" in out
    (tmp_path / "bad.toml").write_text("version = 3\n")
    code, _, err = invoke("policy", "show", "--policy", "bad.toml")
    assert code == 2
    assert "bad.toml:1: error: version" in err


@pytest.mark.parametrize(
    "args", [("init",), ("policy", "check"), ("policy", "show"), ("route",)], ids=" ".join
)
def test_help_has_an_example(args: tuple[str, ...]) -> None:
    code, out, _ = invoke(*args, "--help")
    assert code == 0
    assert "Example: tierwise " + args[0] in out


def test_init_ci_preset_keeps_the_critical_path_frontier(tmp_path: Path) -> None:
    """The CI preset: code review and security scans stay frontier, auxiliary work goes cheap."""
    from typer.testing import CliRunner

    from tierwise.cli import build_app

    path = tmp_path / "ci.toml"
    runner = CliRunner()
    assert runner.invoke(build_app(), ["init", str(path), "--preset", "ci"]).exit_code == 0
    assert runner.invoke(build_app(), ["policy", "check", str(path), "--strict"]).exit_code == 0

    def tier(*args: str) -> str:
        out = runner.invoke(build_app(), ["route", "--policy", str(path), *args, "--json"])
        assert out.exit_code == 0, out.output
        return str(json.loads(out.stdout)["tier"])

    assert tier("--kind", "code_review", "--annotate", "[ambiguity: low]") == "strong"
    assert tier("--kind", "security_scan") == "strong"
    assert tier("--kind", "changelog") == "cheap"
    assert tier("--kind", "summarize_failures") == "cheap"
    assert tier("--kind", "docs", "--annotate", "[scope: single-file]") == "cheap"
    bad = runner.invoke(build_app(), ["init", str(tmp_path / "x.toml"), "--preset", "nightly"])
    assert bad.exit_code == 2 and "--preset" in bad.stderr
