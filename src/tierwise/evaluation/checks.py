"""Validators for replayed benchmark answers, written as ``python`` validator callables.

A policy names them like any other Python check::

    [validators.choice]
    type = "python"
    callable = "tierwise.evaluation.checks:multiple_choice"

* :func:`multiple_choice` — the answer settles on one option letter (A–J).
* :func:`python_code` — MBPP-style code: the answer's code parses, defines a function and
  imports cleanly in a separate, isolated Python process with a timeout (the prompts carry no
  tests, so this is all that can be checked before running it for real).
* :func:`arithmetic` — a worked numeric answer: every ``<<expression=value>>`` calculator note
  is right and a final number is given.
* :func:`agreement_with_cheaper_tiers` — the tiers below the one that answered give the same
  answer (asked through the cascade, so each call is priced and recorded). It reads the ladder
  and the comparison mode from the task's metadata (``ladder``: ``cheap,mid,strong``;
  ``agreement``: ``choice`` or ``number``); the bottom tier (nobody cheaper to ask) and the top
  tier (nowhere to climb) pass unchecked.

They see the output (and, for agreement, the task) only — never a recorded score.
"""

from __future__ import annotations

import ast
import functools
import operator
import os
import re
import subprocess
import sys
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators import (
    AgreementValidator,
    ValidationContext,
    extract_choice,
    extract_number,
)

#: Seconds the code check lets the import run.
CODE_TIMEOUT_S = 5.0

_FENCED = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\r?\n(.*?)```", re.S)
_TAGGED = re.compile(r"\[PYTHON\](.*?)\[/PYTHON\]", re.S)
_IMPORT = "import sys; sys.path.insert(0, sys.argv[1]); import solution"
_CALC = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


def multiple_choice(output: str) -> tuple[bool, str]:
    """Pass when the answer settles on one option letter (A–J)."""
    letter = extract_choice(output)
    if letter is None:
        return False, f"no option letter (A–J) found in {_short(output)!r}"
    return True, f"answer {letter}"


def extract_code(output: str) -> str:
    """The code in an answer: the longest fenced block, a ``[PYTHON]`` block, or the text."""
    blocks = _FENCED.findall(output) or _TAGGED.findall(output)
    return max(blocks, key=len) if blocks else output


def python_code(output: str) -> tuple[bool, str]:
    """Pass when the answer's code parses, defines a function and imports cleanly.

    The import runs in a fresh ``python -I`` process, in an empty temporary directory, with
    an empty environment (no keys reach model-written code) and a timeout.
    """
    return _check_code(extract_code(output))


@functools.lru_cache(maxsize=4096)
def _check_code(code: str) -> tuple[bool, str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return False, f"code does not parse: {exc.msg} (line {exc.lineno})"
    except ValueError as exc:  # null bytes
        return False, f"code does not parse: {exc}"
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        return False, "the code defines no top-level function"
    with tempfile.TemporaryDirectory(prefix="tierwise-code-") as tmp:
        Path(tmp, "solution.py").write_text(code, encoding="utf-8")
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _IMPORT, tmp],
                cwd=tmp,
                env={"PATH": os.defpath, "PYTHONDONTWRITEBYTECODE": "1"},
                capture_output=True,
                text=True,
                timeout=CODE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"importing the code did not finish in {CODE_TIMEOUT_S:g} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["exit code " + str(done.returncode)])[-1]
        return False, f"importing the code failed: {_short(last)}"
    return True, f"defines {', '.join(functions[:3])}"


_OPS: dict[type[ast.AST], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> Decimal:
    """Evaluate plain arithmetic (numbers, + − × ÷ // % **, parentheses); anything else raises."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Decimal(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return Decimal(_OPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return Decimal(_OPS[type(node.op)](_evaluate(node.operand)))
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def arithmetic(output: str) -> tuple[bool, str]:
    """Pass when every ``<<expression=value>>`` note computes and a final number is given."""
    for expr, value in _CALC.findall(output):
        text = expr.replace(",", "").replace("^", "**").replace("x", "*").strip()
        try:
            got = _evaluate(ast.parse(text, mode="eval"))
            want = Decimal(value.replace(",", "").strip())
        except (SyntaxError, ValueError, InvalidOperation, ZeroDivisionError, ArithmeticError):
            return False, f"calculator note {_short(expr)}={_short(value)} cannot be checked"
        if abs(got - want) > Decimal("1e-6") * max(Decimal(1), abs(want)):
            return False, f"calculator note {_short(expr)}={_short(value)} is wrong ({got})"
    if extract_number(output) is None:
        return False, "no final number in the answer"
    return True, "arithmetic checks out"


def agreement_with_cheaper_tiers(output: str, ctx: ValidationContext) -> Verdict:
    """Pass when every tier below the one that answered gives the same answer.

    The ladder (``cheap,mid,strong``) and mode (``choice``/``number``/``lower``) come from the
    task's metadata keys ``ladder`` and ``agreement``. The bottom and the top tier pass
    unchecked; a task without a ladder passes.
    """
    ladder = [t for t in ctx.task.metadata.get("ladder", "").split(",") if t]
    mode = ctx.task.metadata.get("agreement", "lower")
    if ctx.tier not in ladder:
        return Verdict("agreement", True, "no ladder in the task; not checked")
    index = ladder.index(ctx.tier)
    if index == len(ladder) - 1:
        return Verdict("agreement", True, "top tier: not checked")
    cheaper = ladder[:index]
    if not cheaper:
        return Verdict("agreement", True, "bottom tier: nobody cheaper to ask")
    if mode not in ("exact", "lower", "choice", "number", "json"):
        mode = "lower"
    check = AgreementValidator("agreement", cheaper, normalise=mode)  # type: ignore[arg-type]
    return check.check(output, ctx)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "CODE_TIMEOUT_S",
    "agreement_with_cheaper_tiers",
    "arithmetic",
    "extract_code",
    "multiple_choice",
    "python_code",
]
