"""The ``command`` validator: pipe the output to an external program; exit status 0 passes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators._base import MAX_REASON, BaseValidator, ValidationContext

#: The only variables of this process a command sees, besides the spec's ``pass_env``: its
#: output goes to the next model's prompt, so it must not see credentials — and a deny-list of
#: names that look secret (``*_KEY``, ``*_TOKEN``) let ``DATABASE_URL`` and the like through.
BASE_ENV = ("PATH", "HOME", "LANG", "TMPDIR")
BASE_ENV_PREFIXES = ("LC_",)


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

    Exit status 0 passes. On a failure the verdict's ``reason`` — what callers and the ledger
    see — names the program and its exit status only; the last lines of its stdout and stderr
    (≤ 500 characters) go to ``detail``, for the next tier's prompt. The command runs in *cwd*
    (the policy file's directory, so ``./check.sh`` is found next to it) in its own process
    group, which is killed when it outlives ``timeout_s`` (a failed verdict). Its environment
    is an allow-list: ``PATH``, ``HOME``, ``LANG``, ``LC_*``, ``TMPDIR`` and the names in
    *pass_env*, plus ``TIERWISE_TASK_ID``, ``TIERWISE_KIND`` and ``TIERWISE_TIER``.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        timeout_s: float = 30.0,
        cwd: Path | None = None,
        pass_env: Sequence[str] = (),
    ) -> None:
        super().__init__(name)
        self.argv = tuple(argv)
        self.timeout_s = timeout_s
        self.cwd = cwd
        self.pass_env = frozenset(pass_env)

    def _passes(self, name: str) -> bool:
        return name in BASE_ENV or name.startswith(BASE_ENV_PREFIXES) or name in self.pass_env

    def _env(self, ctx: ValidationContext) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if self._passes(k)}
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
        reason = f"{self.argv[0]}: {status}"
        output = tail(stdout, stderr, MAX_REASON - 40)
        return self.fail(reason, detail=f"{reason}: {output}" if output else "")

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
