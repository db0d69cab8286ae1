"""The ``command`` validator: pipe the output to an external program; exit status 0 passes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators._base import MAX_REASON, BaseValidator, ValidationContext

#: Environment variables whose names match this are not passed to the command: its output ends
#: up in the ledger and in the next model's prompt, so it must never see credentials.
SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)


def tail(stdout: bytes, stderr: bytes, limit: int = MAX_REASON) -> str:
    """The last lines of a command's stdout then stderr, at most *limit* characters."""
    text = "\n".join(
        part.decode("utf-8", "replace").strip() for part in (stdout, stderr) if part.strip()
    )
    lines = text.splitlines()
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 1 > limit:
            if not kept:
                kept.append("…" + line[-(limit - 1) :])
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


class CommandValidator(BaseValidator):
    """Runs ``argv`` (from the policy, never from a request) with the output on stdin.

    Exit status 0 passes; otherwise the reason is the exit status and the last lines of the
    program's stdout and stderr (≤ 500 characters). The command runs in *cwd* (the policy file's
    directory, so ``./check.sh`` is found next to it) in its own process group, which is killed
    when it outlives ``timeout_s`` (a failed verdict). Its environment is this process's, minus
    variables that look like credentials (:data:`SECRET_ENV`), plus ``TIERWISE_TASK_ID``,
    ``TIERWISE_KIND`` and ``TIERWISE_TIER``.
    """

    def __init__(
        self, name: str, argv: Sequence[str], *, timeout_s: float = 30.0, cwd: Path | None = None
    ) -> None:
        super().__init__(name)
        self.argv = tuple(argv)
        self.timeout_s = timeout_s
        self.cwd = cwd

    def _env(self, ctx: ValidationContext) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k)}
        task = getattr(ctx, "task", None)
        if task is not None:
            env["TIERWISE_TASK_ID"] = str(task.id)
            env["TIERWISE_KIND"] = str(task.kind)
        env["TIERWISE_TIER"] = str(getattr(ctx, "tier", "") or "")
        return env

    def _verdict(self, returncode: int, stdout: bytes, stderr: bytes) -> Verdict:
        if returncode == 0:
            return self.ok()
        status = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
        detail = tail(stdout, stderr, MAX_REASON - 40)
        return self.fail(f"{self.argv[0]}: {status}" + (f": {detail}" if detail else ""))

    def _timed_out(self) -> Verdict:
        return self.fail(f"{self.argv[0]}: timed out after {self.timeout_s:g} s")

    def _not_started(self, exc: OSError) -> Verdict:
        if isinstance(exc, FileNotFoundError):
            return self.fail(f"command not found: {self.argv[0]}")
        return self.fail(f"cannot run {self.argv[0]}: {exc.strerror or exc}")

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=self._env(ctx),
                start_new_session=True,
            )
        except OSError as exc:
            return self._not_started(exc)
        with proc:
            try:
                stdout, stderr = proc.communicate(output.encode(), timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid, proc)
                proc.communicate()
                return self._timed_out()
            except BaseException:
                _kill_group(proc.pid, proc)
                proc.wait()
                raise
        return self._verdict(proc.returncode, stdout, stderr)

    async def _acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=self._env(ctx),
                start_new_session=True,
            )
        except OSError as exc:
            return self._not_started(exc)
        try:
            stdout, stderr = await asyncio.wait_for(
                proc.communicate(output.encode()), timeout=self.timeout_s
            )
        except TimeoutError:
            _kill_group(proc.pid, proc)
            await proc.communicate()
            return self._timed_out()
        except BaseException:  # cancelled: leave no process or pipe behind
            _kill_group(proc.pid, proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.communicate())
            raise
        assert proc.returncode is not None
        return self._verdict(proc.returncode, stdout, stderr)


def _kill_group(pid: int, proc: subprocess.Popen[bytes] | asyncio.subprocess.Process) -> None:
    """Kill the command and anything it started (its own process group)."""
    killpg: object = getattr(os, "killpg", None)
    if callable(killpg):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            killpg(pid, signal.SIGKILL)
            return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
