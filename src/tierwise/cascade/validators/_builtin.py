"""The local built-in validators: JSON, JSON Schema, regex, Python callable, confidence,
refusal and truncation. None of them calls a model; only ``python`` may block."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators._base import BaseValidator, ValidationContext, clip
from tierwise.cascade.validators._text import parse_confidence, parse_json, shorten

if TYPE_CHECKING:
    from tierwise.policy.patterns import CompiledPattern


class JsonValidator(BaseValidator):
    """Passes when the output is JSON (strict: no NaN/Infinity); one ```` ```json ```` fenced
    block around the whole output is allowed."""

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        ok, _, error = parse_json(output)
        return self.ok() if ok else self.fail(error)


class RegexValidator(BaseValidator):
    """Passes when the pattern is found (``search``) or matches the whole output (``fullmatch``;
    surrounding whitespace of the output is ignored, since models often add a final newline).

    The pattern is compiled by RE2 (:func:`tierwise.policy.patterns.compile_pattern`): matching
    takes time linear in the output whatever the pattern, so no output can make a check hang.
    """

    def __init__(self, name: str, pattern: CompiledPattern, mode: str = "search") -> None:
        super().__init__(name)
        self.pattern = pattern
        self.mode = mode

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        if self.mode == "fullmatch":
            if self.pattern.fullmatch(output.strip()):
                return self.ok()
            return self.fail(f"output does not match /{shorten(self.pattern.pattern)}/ as a whole")
        if self.pattern.search(output):
            return self.ok()
        return self.fail(f"pattern /{shorten(self.pattern.pattern)}/ not found in the output")


def _coerce(result: object, where: str) -> tuple[bool, str, float | None]:
    """Read a Python validator's return value: bool, (bool, reason[, score]) or Verdict-like."""
    ok: object
    reason: object = ""
    score: object = None
    if isinstance(result, bool):
        ok = result
    elif isinstance(result, tuple | list) and len(result) in (2, 3):
        ok, reason = result[0], result[1]
        score = result[2] if len(result) == 3 else None
    elif isinstance(result, Mapping) and "ok" in result:
        ok, reason, score = result["ok"], result.get("reason", ""), result.get("score")
    elif hasattr(result, "ok"):
        ok = result.ok
        reason = getattr(result, "reason", "")
        score = getattr(result, "score", None)
    else:
        raise TypeError(
            f"{where} returned {type(result).__name__}; "
            "expected bool, (bool, reason), (bool, reason, score) or a Verdict"
        )
    if not isinstance(ok, bool):
        raise TypeError(f"{where} returned ok={ok!r}; expected True or False")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise TypeError(f"{where} returned score={score!r}; expected a number or None")
    text = "" if reason is None else str(reason)
    if not ok and not text:
        text = f"rejected by {where}"
    return ok, text, None if score is None else float(score)


class PythonValidator(BaseValidator):
    """Calls a function of the policy author's: ``fn(output)`` or ``fn(output, ctx)``.

    ``ctx`` is the :class:`ValidationContext` (``ctx.task``, ``ctx.completion``, ``ctx.tier``,
    ``ctx.call_tier``). The function returns ``True``/``False``, ``(ok, reason)``,
    ``(ok, reason, score)``, a mapping with ``ok`` (and ``reason``, ``score``) or a Verdict.
    It may be ``async``. In the async path a plain function runs in a worker thread, since
    user code may block (run tests, read files).
    """

    def __init__(self, name: str, target: str, function: Callable[..., Any], arity: int) -> None:
        super().__init__(name)
        self.target = target
        self.function = function
        self.arity = arity
        self._is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - async callable objects count
        )

    def _args(self, output: str, ctx: ValidationContext) -> tuple[Any, ...]:
        return (output, ctx) if self.arity == 2 else (output,)

    def _verdict(self, result: object) -> Verdict:
        ok, reason, score = _coerce(result, self.target)
        return self.ok(score, reason) if ok else self.fail(reason, score)

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        result = self.function(*self._args(output, ctx))
        if inspect.isawaitable(result):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return self._verdict(asyncio.run(_await(result)))
            if inspect.iscoroutine(result):
                result.close()
            return self.fail(
                f"async {self.target} cannot run from the blocking path in an event loop"
            )
        return self._verdict(result)

    async def _acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        args = self._args(output, ctx)
        if self._is_async:
            result = await self.function(*args)
        else:
            result = await asyncio.to_thread(self.function, *args)
            if inspect.isawaitable(result):
                result = await result
        return self._verdict(result)


async def _await(awaitable: Any) -> object:
    return await awaitable


class ConfidenceValidator(BaseValidator):
    """Passes when the model's self-reported confidence is at least ``minimum``.

    See :func:`tierwise.cascade.validators.parse_confidence` for the accepted forms. The score is
    the reported confidence; an output that reports none fails with "no self-reported confidence".
    """

    def __init__(self, name: str, minimum: float = 0.7) -> None:
        super().__init__(name)
        self.minimum = minimum

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        value = parse_confidence(output)
        if value is None:
            return self.fail("no self-reported confidence")
        if value < self.minimum:
            return self.fail(
                f"self-reported confidence {value:g} is below the minimum {self.minimum:g}", value
            )
        return self.ok(value)


#: Openings of a refusal, compared casefolded with straight apostrophes. Kept short and
#: conservative: only the start of the output counts, and only phrasings that decline outright.
REFUSAL_OPENINGS: tuple[str, ...] = (
    "i can't help with",
    "i cannot help with",
    "i can not help with",
    "i can't assist",
    "i cannot assist",
    "i can't comply",
    "i cannot comply",
    "i won't be able to help with",
    "i will not help with",
    "i won't help with",
    "i'm not able to help with",
    "i am not able to help with",
    "i'm unable to help with",
    "i am unable to help with",
    "i'm unable to assist",
    "i am unable to assist",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i can't",
    "i am sorry, but i cannot",
    "i'm sorry, i can't",
    "i'm sorry, i cannot",
    "sorry, but i can't",
    "sorry, but i cannot",
    "sorry, i can't",
    "sorry, i cannot",
    "i apologize, but i can't",
    "i apologize, but i cannot",
    "i'm afraid i can't",
    "i'm afraid i cannot",
    "i must decline",
)

_LEAD = re.compile(r"\A[\s*_#>`\"]+")


def refusal_opening(text: str) -> str | None:
    """The refusal phrase *text* opens with (from :data:`REFUSAL_OPENINGS`), or ``None``."""
    head = _LEAD.sub("", text[:300]).replace("\u2019", "'").replace("\u2018", "'")
    head = " ".join(head.casefold().split())
    return next((p for p in REFUSAL_OPENINGS if head.startswith(p)), None)


class NotRefusalValidator(BaseValidator):
    """Fails on a refusal: stop reason ``refusal``, an output opening with a typical refusal
    sentence (see :data:`REFUSAL_OPENINGS`), or an empty output (unless the model stopped to
    use a tool, where empty text is normal)."""

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        completion = ctx.completion
        stop = completion.stop_reason if completion is not None else None
        if stop == "refusal":
            return self.fail("the model refused (stop reason 'refusal')")
        if not output.strip():
            if stop == "tool_use":
                return self.ok()
            return self.fail("empty output")
        phrase = refusal_opening(output)
        if phrase is not None:
            return self.fail(f"the output is a refusal: {clip(shorten(output), 120)!r}")
        return self.ok()


class NotTruncatedValidator(BaseValidator):
    """Fails when the model stopped because it hit ``max_tokens``."""

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        completion = ctx.completion
        if completion is not None and completion.stop_reason == "max_tokens":
            return self.fail("the output was cut off at max_tokens")
        return self.ok()
