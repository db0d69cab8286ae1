"""Regular expressions in a policy: compiled by RE2, so that no output can make a check hang.

Python's ``re`` backtracks: ``(a+)+$`` against 30 ``a`` and a ``b`` takes minutes, and since it
holds the GIL, a worker thread does not help — a gateway running such a check stops answering.
RE2 (``google-re2``) matches in time linear in the input for every pattern it accepts, and
refuses the few features that need backtracking (backreferences, lookaround, atomic groups,
possessive quantifiers). :func:`compile_pattern` turns those refusals into policy errors that
name the feature and the key path; :func:`nested_quantifier` finds the patterns that would be
catastrophic under a backtracking engine, for ``tierwise policy check`` to warn about.

Two differences from ``re`` are smoothed over: ``\\Z`` is rewritten to RE2's ``\\z``, and a
``search`` for a pattern with ``$`` retries without one final newline, so that ``$`` matches
before it as in Python. Others remain (documented in docs/policy-reference.md): ``\\w``, ``\\d``
and ``\\b`` are ASCII.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from tierwise.errors import PolicyError, PolicyIssue

__all__ = ["CompiledPattern", "compile_pattern", "nested_quantifier"]


class _Re2(Protocol):
    def search(self, text: str) -> Any: ...

    def fullmatch(self, text: str) -> Any: ...


class CompiledPattern:
    """A pattern compiled by RE2, matching with Python's meaning of ``$`` and ``\\Z``."""

    __slots__ = ("_compiled", "_dollar", "pattern")

    def __init__(self, pattern: str, compiled: _Re2) -> None:
        self.pattern = pattern  # as written in the policy
        self._compiled = compiled
        # Python's '$' also matches before a final newline; RE2's only at the very end.
        self._dollar = "$" in pattern and "\\Z" not in pattern and "\\z" not in pattern

    def search(self, text: str) -> bool:
        """Whether the pattern occurs in *text*."""
        if self._compiled.search(text) is not None:
            return True
        return self._dollar and text.endswith("\n") and self._compiled.search(text[:-1]) is not None

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches the whole of *text*."""
        return self._compiled.fullmatch(text) is not None


# Features of Python's syntax that RE2 refuses, found in the pattern itself (escapes and
# character classes are skipped as whole tokens, so '\\(?=' or '[(?=]' are not lookaheads).
_FEATURES = re.compile(
    r"(?P<backreference>\\[1-9]|\\k<|\(\?P=)"
    r"|(?P<lookbehind>\(\?<[=!])"
    r"|(?P<lookahead>\(\?[=!])"
    r"|(?P<atomic>\(\?>)"
    r"|(?P<conditional>\(\?\()"
    r"|(?P<comment>\(\?#)"
    r"|(?P<verbose>\(\?[a-zA-Z]*x)"
    r"|(?P<possessive>[*+?}]\+)"
    r"|\\.|\[\^?\]?(?:\\.|[^\]])*\]"
)
_FEATURE_NAMES = {
    "backreference": "a backreference",
    "lookbehind": "lookbehind",
    "lookahead": "lookahead",
    "atomic": "an atomic group",
    "conditional": "a conditional group",
    "comment": "an inline comment (?#…)",
    "verbose": "the verbose flag (?x)",
    "possessive": "a possessive quantifier",
}


def _unsupported_feature(pattern: str) -> str | None:
    """The first feature in *pattern* that RE2 does not have, as words, or None."""
    for match in _FEATURES.finditer(pattern):
        if match.lastgroup is not None:
            return _FEATURE_NAMES[match.lastgroup]
    return None


def compile_pattern(pattern: str, *, ignore_case: bool = False, where: str = "") -> CompiledPattern:
    """Compile *pattern* with RE2.

    Args:
        pattern: a regular expression in Python syntax (``\\Z`` is accepted).
        ignore_case: match without regard to case.
        where: the key path reported in errors (``validators.answer.pattern``).

    Raises:
        PolicyError: the pattern is not a valid regular expression, or uses a feature RE2 does
            not have; the message names the feature.
    """
    import re2

    try:
        re.compile(pattern)
    except re.error as exc:
        raise _error(where, f"invalid regular expression: {exc}") from None
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refusal to stderr
    options.case_sensitive = not ignore_case
    try:
        compiled = re2.compile(_to_re2(pattern), options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        feature = _unsupported_feature(pattern)
        if feature is None:
            raise _error(where, f"invalid regular expression for RE2: {reason}") from None
        raise _error(
            where,
            f"the pattern uses {feature}, which tierwise's regex engine (RE2) does not support: "
            "patterns run in linear time so that no output can make a check hang, and this "
            f"feature needs backtracking; rewrite the pattern without it (RE2: {reason})",
        ) from None
    return CompiledPattern(pattern, compiled)


def _to_re2(pattern: str) -> str:
    """Rewrite Python's ``\\Z`` (end of text) to RE2's spelling ``\\z``; leave ``\\\\Z`` alone."""
    if "\\Z" not in pattern:
        return pattern
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("\\z" if nxt == "Z" else ch + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _error(where: str, message: str) -> PolicyError:
    return PolicyError([PolicyIssue(where, message)])


# -- nested quantifiers ---------------------------------------------------------------------------

_QUANTIFIER = re.compile(r"\*|\+|\?|\{(\d*)(,?)(\d*)\}")


def nested_quantifier(pattern: str) -> str | None:
    """The first group that repeats without bound around something that repeats too, or None.

    ``(a+)+``, ``(\\w*\\s?)*``, ``(x+y?){2,}``: a backtracking engine tries every way of splitting
    the input between the inner and the outer repetition, which is exponential when the match
    fails. RE2 runs them in linear time, but they are almost always a mistake, and the same
    pattern copied into other tools is a denial-of-service. The scan is lexical (escapes,
    character classes and group prefixes are understood); it does not look for overlapping
    alternatives such as ``(a|a)+``.
    """
    n = len(pattern)
    inner_repeats = [False]  # per open group: does its body contain a repetition?
    starts: list[int] = []
    i = 0
    while i < n:
        ch = pattern[i]
        if ch == "(":
            starts.append(i)
            inner_repeats.append(False)
            i += 1
            continue
        if ch == ")" and starts:
            start = starts.pop()
            inner = inner_repeats.pop()
            i += 1
            end, repeats, unbounded = _quantifier_at(pattern, i)
            if unbounded and inner:
                return pattern[start:end]
            inner_repeats[-1] = inner_repeats[-1] or inner or repeats
            i = end
            continue
        if ch == "\\":
            i += 2
        elif ch == "[":
            i = _class_end(pattern, i)
        else:
            i += 1
        end, repeats, _ = _quantifier_at(pattern, i)
        inner_repeats[-1] = inner_repeats[-1] or repeats
        i = end
    return None


def _quantifier_at(pattern: str, i: int) -> tuple[int, bool, bool]:
    """(end, varies in count, repeats without bound) of a quantifier starting at *i*.

    ``{3}`` repeats a fixed number of times, which makes nothing ambiguous; ``?`` varies only
    between zero and one, which on its own does not either.
    """
    match = _QUANTIFIER.match(pattern, i)
    if match is None:
        return i, False, False
    token = match.group(0)
    end = match.end()
    if end < len(pattern) and pattern[end] in "?+":  # lazy or possessive suffix
        end += 1
    if token in ("*", "+"):
        return end, True, True
    if token == "?":
        return end, False, False
    low, comma, high = match.group(1), match.group(2), match.group(3)
    if not low and not high:
        return i, False, False  # a literal '{'
    if comma and not high:
        return end, True, True
    top = int(high) if high else int(low)
    return end, bool(comma) and top > int(low or 0), False


def _class_end(pattern: str, i: int) -> int:
    """The index after the character class opening at *i* (``[``)."""
    n = len(pattern)
    j = i + 1
    if j < n and pattern[j] == "^":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1  # a ']' first in the class is a literal
    while j < n and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1
