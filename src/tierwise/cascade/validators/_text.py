"""Pure text parsing the validators share: JSON fences, self-reported confidence, answers.

Everything here is total: malformed or hostile input gives ``None`` (or a failed parse result),
never an exception, so a validator built on these can only fail, not crash.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Normalise = Literal["exact", "lower", "choice", "number", "json"]

# -- JSON ---------------------------------------------------------------------------------------

_FENCE = re.compile(r"\A\s*```[ \t]*(?:json)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*\Z", re.S | re.I)


def strip_json_fence(text: str) -> str:
    """The inside of a Markdown code fence (```` ```json ```` or bare) when the whole text is one.

    Text that is not exactly one fenced block comes back unchanged.
    """
    match = _FENCE.match(text)
    if match is None or "```" in match.group(1):
        return text
    return match.group(1)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> tuple[bool, Any, str]:
    """Parse *text* as strict JSON (one fenced block allowed; NaN and Infinity rejected).

    Returns ``(ok, value, error)``: the parsed value when ``ok``, else a one-line reason.
    """
    body = strip_json_fence(text)
    if not body.strip():
        return False, None, "output is empty; expected JSON"
    try:
        return True, json.loads(body, parse_constant=_reject_constant), ""
    except json.JSONDecodeError as exc:
        return False, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return False, None, f"not valid JSON: {exc}"
    except RecursionError:
        return False, None, "not valid JSON: nested too deeply"


# -- self-reported confidence -------------------------------------------------------------------

#: Word levels and the number each stands for (documented in the policy guide).
CONFIDENCE_LEVELS: dict[str, float] = {"high": 0.9, "medium": 0.6, "low": 0.3}

_CONFIDENCE = re.compile(
    r"""\bconfidence(?:[ \t]+(?:level|score))?["'*_`\t ]*[:=][*_`"'\t ]*
        (?:(?P<level>high|medium|low)\b|(?P<num>\d{1,3}(?:\.\d+)?(?!\d)|\.\d+)[ \t]*(?P<pct>%)?)""",
    re.I | re.X,
)


def _confidence_number(value: float, percent: bool = False) -> float | None:
    if not math.isfinite(value) or value < 0:
        return None
    if percent:
        return value / 100 if value <= 100 else None
    if value <= 1:
        return value
    return value / 100 if value <= 100 else None  # "confidence: 85" means 85 %


def _confidence_value(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _confidence_number(float(value))
    if isinstance(value, str):
        text = value.strip().casefold()
        if text in CONFIDENCE_LEVELS:
            return CONFIDENCE_LEVELS[text]
        percent = text.endswith("%")
        try:
            number = float(text.rstrip("%").strip())
        except ValueError:
            return None
        return _confidence_number(number, percent)
    return None


def parse_confidence(text: str) -> float | None:
    """The confidence a model reported about its own answer, in [0, 1], or ``None``.

    Read, in order:

    1. an output that is a JSON object (optionally in one fenced block): its top-level
       ``"confidence"`` key — a number, a percentage string or a level word; a JSON object
       without that key reports nothing, whatever its nested objects say;
    2. otherwise the *last* ``confidence: …`` in the text (``Confidence = 0.8``,
       ``**Confidence:** high``, ``"confidence": 0.4`` inside prose, ``confidence level: 85%``).

    Levels map ``high`` → 0.9, ``medium`` → 0.6, ``low`` → 0.3. Numbers above 1 and up to 100 are
    percentages (``85`` → 0.85); negative or larger numbers are not a confidence. Never raises.
    """
    ok, value, _ = parse_json(text)
    if ok and isinstance(value, dict):
        return _confidence_value(value.get("confidence"))
    found: float | None = None
    for match in _CONFIDENCE.finditer(text):
        level = match.group("level")
        if level is not None:
            found = CONFIDENCE_LEVELS[level.casefold()]
            continue
        try:
            number = float(match.group("num"))
        except ValueError:  # pragma: no cover - the pattern only admits digits
            continue
        parsed = _confidence_number(number, match.group("pct") is not None)
        if parsed is not None:
            found = parsed
    return found


# -- answers, for agreement -----------------------------------------------------------------------

_WHOLE_CHOICE = re.compile(r"\A[\s*_(\[]*([A-J])[\s*_)\].:]*\Z")
_ANSWER_CHOICE = re.compile(
    r"\b[Aa]nswer\b(?:\s+is)?[\s:*_]*(?:(?:option|choice)\s+)?[(\[*_\s]*([A-J])(?![A-Za-z0-9])"
)
_BOLD_CHOICE = re.compile(r"\*\*\s*[(\[]?([A-J])[)\].:]?\s*\*\*")
_PAREN_CHOICE = re.compile(r"\(([A-J])\)")
_LINE_CHOICE = re.compile(r"^[ \t>*_-]*[(\[]?([A-J])[)\].:](?:\s|\Z)", re.M)


def extract_choice(text: str) -> str | None:
    """The multiple-choice letter (A–J) an answer settles on, or ``None``.

    Tried in order: the whole answer is a letter (``C``, ``(C)``, ``**C.**``); the last
    "answer is (C)" / "Answer: C" / "answer is **C**"; the last bold letter (``**C**``); the last
    parenthesised letter (``(C)``); the first line opening with a letter (``C) 42``, ``C. 42``).
    Letters must be capitals so that English words ("a") never count.
    """
    for pattern, last in (
        (_WHOLE_CHOICE, False),
        (_ANSWER_CHOICE, True),
        (_BOLD_CHOICE, True),
        (_PAREN_CHOICE, True),
        (_LINE_CHOICE, False),
    ):
        matches = pattern.findall(text)
        if matches:
            return str(matches[-1] if last else matches[0])
    return None


_NUMBER = re.compile(
    r"(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+(?!,?\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w)"
)


def extract_number(text: str) -> Decimal | None:
    """The last number in *text* (``1,234.5``, ``-3``, ``.5``, ``2e3``) as a Decimal, or ``None``.

    Thousands separators are dropped; numbers glued to letters (``v2``, ``3rd``) do not count.
    """
    for match in reversed(_NUMBER.findall(text)):
        try:
            value = Decimal(match.replace(",", ""))
        except InvalidOperation:  # pragma: no cover - the pattern only admits numbers
            continue
        if value.is_finite():
            return value
    return None


def _canonical_json(value: Any) -> Any:
    """A hashable form in which equal JSON values compare equal (``1 == 1.0``, ``true != 1``)."""
    if isinstance(value, bool) or value is None:
        return ("lit", value)
    if isinstance(value, int | float):
        return ("num", Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("list", tuple(_canonical_json(v) for v in value))
    if isinstance(value, dict):
        return ("obj", tuple(sorted((k, _canonical_json(v)) for k, v in value.items())))
    return ("other", repr(value))  # pragma: no cover - json.loads yields nothing else


def normalise_answer(text: str, mode: Normalise) -> tuple[object, str] | None:
    """Reduce an answer to what agreement compares, plus a short form for messages.

    Modes: ``exact`` (the text without surrounding whitespace), ``lower`` (casefolded, runs of
    whitespace collapsed), ``choice`` (:func:`extract_choice`), ``number`` (:func:`extract_number`,
    compared numerically) and ``json`` (parsed JSON, compared structurally; one fenced block
    allowed). Returns ``None`` when no answer of that form can be found.
    """
    if mode == "exact":
        value = text.strip()
        return value, value
    if mode == "lower":
        value = " ".join(text.casefold().split())
        return value, value
    if mode == "choice":
        letter = extract_choice(text)
        return None if letter is None else (letter, letter)
    if mode == "number":
        number = extract_number(text)
        return None if number is None else (number, str(number))
    ok, parsed, _ = parse_json(text)
    if not ok:
        return None
    try:
        return _canonical_json(parsed), json.dumps(parsed, separators=(",", ":"))
    except RecursionError:
        return None


def shorten(text: str, limit: int = 80) -> str:
    """*text* on one line, cut to *limit* characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
