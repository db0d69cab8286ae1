"""The ``command`` validator: real subprocesses, output on stdin, exit status, timeouts."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tierwise.cascade.validators import StaticContext, Validator, build_validator
from tierwise.errors import PolicyError
from tierwise.task import Task

PY = sys.executable


def context() -> StaticContext:
    return StaticContext(Task.create("code_edit", "fix it", id="task-7"), None, "cheap")


def command(
    script: str, *, timeout_s: float = 10.0, base_dir: Path = Path("."), name: str = "cmd"
) -> Validator:
    spec = {"type": "command", "argv": [PY, "-c", script], "timeout_s": timeout_s}
    return build_validator(spec, base_dir=base_dir, name=name)


PASS_WHEN_STDIN_HAS_DEF = (
    "import sys\n"
    "src = sys.stdin.read()\n"
    "if 'def ' not in src:\n"
    "    print('checked', len(src), 'chars')\n"
    "    print('no function defined', file=sys.stderr)\n"
    "    sys.exit(1)\n"
)


def test_command_passes_on_exit_zero_with_the_output_on_stdin() -> None:
    validator = command(PASS_WHEN_STDIN_HAS_DEF)
    verdict = validator.check("def f():\n    return 1\n", context())
    assert verdict.ok
    assert verdict.validator == "cmd"


def test_command_fails_with_exit_status_and_last_output_lines_in_the_detail() -> None:
    verdict = command(PASS_WHEN_STDIN_HAS_DEF).check("x = 1", context())
    assert not verdict.ok
    assert verdict.reason == f"{PY}: exit 1"  # what callers see: no output
    assert verdict.detail.startswith(f"{PY}: exit 1: ")  # what the next tier sees
    assert verdict.detail.endswith("checked 5 chars\nno function defined")


def test_command_detail_keeps_the_last_500_characters() -> None:
    script = "import sys\nfor i in range(200): print('line', i)\nsys.exit(2)"
    verdict = command(script).check("", context())
    assert not verdict.ok
    assert len(verdict.detail) <= 500
    assert verdict.detail.endswith("line 199")
    assert "line 0\n" not in verdict.detail
    assert "line" not in verdict.reason


def test_command_times_out_as_a_failed_verdict() -> None:
    verdict = command("import time; time.sleep(30)", timeout_s=0.5).check("x", context())
    assert not verdict.ok
    assert verdict.reason == f"{PY}: timed out after 0.5 s"


def _alive(pid: int) -> bool:
    """Whether *pid* is a running (not zombie) process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # A grandchild that does not hold the pipes would otherwise outlive the timeout unnoticed.
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(30)'],"
        " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(30)\n"
    )
    verdict = command(script, timeout_s=1.0).check("x", context())
    assert "timed out" in verdict.reason
    grandchild = int(pid_file.read_text())
    for _ in range(500):  # SIGKILL is asynchronous; wait for the kernel to finish it
        if not _alive(grandchild):
            break
        time.sleep(0.01)
    assert not _alive(grandchild)


async def test_command_async_pass_fail_and_timeout() -> None:
    validator = command(PASS_WHEN_STDIN_HAS_DEF)
    assert (await validator.acheck("def g(): pass", context())).ok
    failed = await validator.acheck("nothing", context())
    assert not failed.ok
    assert failed.reason == f"{PY}: exit 1"
    assert failed.detail.endswith("no function defined")
    slow = command("import time; time.sleep(30)", timeout_s=0.5)
    timed_out = await slow.acheck("x", context())
    assert timed_out.reason == f"{PY}: timed out after 0.5 s"


@pytest.mark.parametrize("use_async", [False, True])
async def test_command_not_found_fails_clearly(use_async: bool) -> None:
    validator = build_validator(
        {"type": "command", "argv": ["definitely-not-a-program-xyz"]}, base_dir=Path(".")
    )
    verdict = (
        await validator.acheck("x", context()) if use_async else validator.check("x", context())
    )
    assert verdict.reason == "command not found: definitely-not-a-program-xyz"


def test_command_runs_in_base_dir_with_task_env_and_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    monkeypatch.setenv("SOME_TOKEN", "tok-secret")
    script = (
        "import os, sys\n"
        "print(os.getcwd())\n"
        "print(sorted(k for k in os.environ if k.startswith('TIERWISE_')))\n"
        "print(os.environ['TIERWISE_TASK_ID'], os.environ['TIERWISE_KIND'],"
        " os.environ['TIERWISE_TIER'])\n"
        "print(any('-secret' in v for v in os.environ.values()))\n"
        "sys.exit(1)\n"
    )
    verdict = command(script, base_dir=tmp_path).check("x", context())
    lines = verdict.detail.split(": ", 2)[2].splitlines()
    assert Path(lines[0]).resolve() == tmp_path.resolve()
    assert lines[1] == "['TIERWISE_KIND', 'TIERWISE_TASK_ID', 'TIERWISE_TIER']"
    assert lines[2] == "task-7 code_edit cheap"
    assert lines[3] == "False"


PRINT_ENV = (
    "import os, sys\nfor k in sorted(os.environ): print(f'{k}={os.environ[k]}')\nsys.exit(3)"
)


def printed_env(detail: str) -> dict[str, str]:
    body = detail.split(": ", 2)[2]
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


@pytest.mark.parametrize("use_async", [False, True])
async def test_command_environment_is_an_allow_list(
    use_async: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that prints its environment sees PATH, HOME, LANG, LC_* and TMPDIR — never
    DATABASE_URL or other settings — and its output stays out of the reason callers see."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db.internal/prod")
    monkeypatch.setenv("HARMLESS_SETTING", "not-listed")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TMPDIR", "/tmp")
    validator = command(PRINT_ENV, name="env")
    verdict = (
        await validator.acheck("x", context()) if use_async else validator.check("x", context())
    )
    assert not verdict.ok
    assert verdict.reason == f"{PY}: exit 3"
    assert "hunter2" not in verdict.detail
    seen = printed_env(verdict.detail)
    assert (seen["LC_ALL"], seen["LANG"], seen["TMPDIR"]) == ("C.UTF-8", "C.UTF-8", "/tmp")
    assert "PATH" in seen
    extra = {
        k
        for k in seen
        if k not in {"PATH", "HOME", "LANG", "TMPDIR"} and not k.startswith(("LC_", "TIERWISE_"))
    }
    assert not extra, extra


def test_command_pass_env_adds_the_names_the_policy_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/test")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    spec = {"type": "command", "argv": [PY, "-c", PRINT_ENV], "pass_env": ["HARMLESS_SETTING"]}
    verdict = build_validator(spec, base_dir=Path("."), name="env").check("x", context())
    seen = printed_env(verdict.detail)
    assert seen["HARMLESS_SETTING"] == "visible"
    assert "DATABASE_URL" not in seen
    assert "visible" not in verdict.reason


def test_command_pass_env_lists_names_only() -> None:
    with pytest.raises(PolicyError) as info:
        build_validator(
            {"type": "command", "argv": ["true"], "pass_env": ["NOT A NAME"]},
            base_dir=Path("."),
            name="c",
        )
    assert "validators.c.pass_env" in str(info.value)


def test_command_relative_program_is_found_next_to_the_policy(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\ngrep -q OK\n")
    script.chmod(0o755)
    validator = build_validator({"type": "command", "argv": ["./check.sh"]}, base_dir=tmp_path)
    assert validator.check("all OK", context()).ok
    assert not validator.check("all bad", context()).ok


def test_command_that_ignores_stdin_and_large_outputs_still_works() -> None:
    verdict = command("import sys; sys.exit(0)").check("x" * 1_000_000, context())
    assert verdict.ok
