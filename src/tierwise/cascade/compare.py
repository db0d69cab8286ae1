"""Whether two tiers' answers to the same task agree, by the kind's answer format.

Shadow mode compares every pair of answers a task got (the live ones and the shadow ones) when
the shadow answer arrives, so only the verdict needs storing. The comparison follows the
kind's answer format (``[kinds.X] answer``):

* ``label`` — exact after normalisation: casefolded, whitespace collapsed, surrounding quotes,
  brackets and final punctuation removed (``"Billing."`` = ``billing``);
* ``choice`` — the same option letter (:func:`~tierwise.cascade.validators.extract_choice`);
* ``number`` — the same final number, compared numerically (``3.50`` = ``3.5``);
* ``json`` — equal parsed JSON (key order and spacing do not matter; one code fence allowed);
* ``text`` — free text: the token-set overlap (Jaccard: shared word tokens over all distinct
  word tokens, casefolded) is at least the threshold (``[shadow] similarity``, 0.6 by
  default). Two empty answers agree; it measures shared wording, not meaning, which is why the
  threshold is stated wherever the rate is shown.

An answer that has no value of the format (no option letter, no number, JSON that does not
parse) agrees with nothing; two such answers are ``None``: nothing to compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tierwise.cascade.validators import normalise_answer

__all__ = ["FORMATS", "Comparison", "compare_answers", "token_overlap"]

AnswerFormat = Literal["label", "choice", "json", "number", "text"]
FORMATS: tuple[str, ...] = ("label", "choice", "json", "number", "text")

_WORD = re.compile(r"\w+")
_EDGES = "\"'`“”‘’()[]{}<>*_ \t\r\n.,;:!?"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One comparison: agreed (``None``: neither answer had a value of the format), how, and
    for free text the overlap it was judged on."""

    agree: bool | None
    method: str
    similarity: float | None = None


def token_overlap(a: str, b: str) -> float:
    """Jaccard similarity of the casefolded word-token sets of *a* and *b* (1.0 for two empty)."""
    ta = set(_WORD.findall(a.casefold()))
    tb = set(_WORD.findall(b.casefold()))
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def _label(text: str) -> str:
    return " ".join(text.casefold().split()).strip(_EDGES)


def compare_answers(a: str, b: str, fmt: str, *, similarity: float = 0.6) -> Comparison:
    """Compare two answers under answer format *fmt* (see the module docstring).

    Raises:
        ValueError: *fmt* is not one of :data:`FORMATS`.
    """
    if fmt == "text":
        overlap = token_overlap(a, b)
        return Comparison(overlap >= similarity, f"text≥{similarity:g}", round(overlap, 6))
    if fmt == "label":
        return Comparison(_label(a) == _label(b), "label")
    if fmt not in FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; expected one of {', '.join(FORMATS)}")
    mode: Literal["choice", "number", "json"] = fmt  # type: ignore[assignment]
    na, nb = normalise_answer(a, mode), normalise_answer(b, mode)
    if na is None and nb is None:
        return Comparison(None, fmt)
    if na is None or nb is None:
        return Comparison(False, fmt)
    return Comparison(na[0] == nb[0], fmt)
