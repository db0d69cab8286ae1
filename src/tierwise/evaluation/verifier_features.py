"""What the response verifier reads of one answer: its normalised form, its text, and a few
dense signals (format, agreement with cheaper tiers, worked-arithmetic checks).

Features depend on the row and the tier only, never on a fitted model, so one
:class:`FeatureCache` serves every fold a training run fits.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tierwise.cascade.validators import normalise_answer
from tierwise.evaluation.dataset import Row

#: Only the end of long answers is read (the final answer sits there).
MAX_RESPONSE_CHARS = 3000
#: Answer forms that agreement compares, by the dataset's answer format.
AGREEMENT = {"choice": "choice", "number": "number"}
#: Dense features after the two TF-IDF blocks (see :func:`dense_features`).
DENSE = (
    "has_answer",
    "has_cheaper",
    "agrees_all",
    "agree_share",
    "log_length",
    "log_prompt_length",
    "log_lines",
    "log_calculator_notes",
    "calculator_notes_check",
    "log_prompt_numbers",
    "prompt_numbers_used",
    "final_is_integer",
    "final_in_prompt",
    "log_final_magnitude",
)


def answer_of(text: str, fmt: str) -> str | None:
    """The normalised answer of *text* for a dataset answer format, or ``None``.

    ``choice`` → the option letter, ``number`` → the number, ``code`` → ``"code"`` when it
    parses and defines a top-level function, anything else → ``"text"`` when not empty.
    """
    mode = AGREEMENT.get(fmt)
    if mode is not None:
        found = normalise_answer(text, mode)  # type: ignore[arg-type]
        return None if found is None else found[1]
    if fmt == "code":
        from tierwise.evaluation.checks import extract_code

        try:
            tree = ast.parse(extract_code(text))
        except (SyntaxError, ValueError):
            return None
        defines = any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in tree.body)
        return "code" if defines else None
    return "text" if text.strip() else None


def response_text(kind: str, answer: str | None, response: str) -> str:
    """What the verifier's answer TF-IDF reads: kind and answer tokens, then the answer's end."""
    safe_kind = "".join(c if c.isalnum() else "_" for c in kind)
    safe_answer = "".join(c if c.isalnum() else "_" for c in (answer or "none"))[:20]
    return f"kindtoken_{safe_kind} anstoken_{safe_answer} {response[-MAX_RESPONSE_CHARS:]}"


def dense_features(
    answer: str | None, response: str, cheaper: Sequence[str | None], prompt: str = ""
) -> list[float]:
    """The :data:`DENSE` features of one answer, given the cheaper tiers' answers (if asked).

    Besides format and agreement, a few numeric signals of worked answers: how many lines and
    calculator notes it has, whether its calculator notes check out, how many of the prompt's
    numbers it uses, and whether its final number is an integer or one of the prompt's own.
    """
    from tierwise.evaluation.checks import arithmetic

    agree = [answer is not None and a == answer for a in cheaper]
    prompt_numbers = set(_NUMBER.findall(prompt.replace(",", "")))
    answer_numbers = set(_NUMBER.findall(response.replace(",", "")))
    final = _final_number(response)
    return [
        1.0 if answer is not None else 0.0,
        1.0 if cheaper else 0.0,
        1.0 if cheaper and all(agree) else 0.0,
        sum(agree) / len(agree) if cheaper else 0.0,
        math.log1p(len(response)) / 10.0,
        math.log1p(len(prompt)) / 10.0,
        math.log1p(response.count("\n")) / 5.0,
        math.log1p(response.count("<<")) / 3.0,
        1.0 if "<<" in response and arithmetic(response)[0] else 0.0,
        math.log1p(len(prompt_numbers)) / 3.0,
        len(prompt_numbers & answer_numbers) / len(prompt_numbers) if prompt_numbers else 0.0,
        1.0 if final is not None and final == int(final) else 0.0,
        1.0 if final is not None and _plain(final) in prompt_numbers else 0.0,
        math.log1p(abs(final)) / 10.0 if final is not None else 0.0,
    ]


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _final_number(text: str) -> float | None:
    from tierwise.cascade.validators import extract_number

    found = extract_number(text)
    if found is None:
        return None
    value = float(found)
    return value if math.isfinite(value) and abs(value) < 1e15 else None


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else str(x)


@dataclass(slots=True)
class FeatureCache:
    """Per (row, tier, asks-cheaper) the verifier's inputs, computed once per training run."""

    entries: dict[tuple[str, int, bool], tuple[str, list[float]]] = field(default_factory=dict)


def tier_features(
    rows: Sequence[Row],
    models: Sequence[str],
    formats: Mapping[str, str],
    index: int,
    asks: Sequence[bool],
    cache: FeatureCache | None = None,
) -> tuple[list[str], list[str], list[str], list[list[float]]]:
    """Kinds, prompts, answer texts and dense features of tier *index*'s recorded answers;
    ``asks[j]`` says whether row *j*'s cheaper tiers are asked to agree."""
    kinds, prompts, texts, dense = [], [], [], []
    model = models[index]
    for r, ask in zip(rows, asks, strict=True):
        key = (r.prompt_id, index, ask)
        hit = cache.entries.get(key) if cache is not None else None
        if hit is None:
            fmt = formats.get(r.kind, "text")
            response = r.results[model].response or ""
            answer = answer_of(response, fmt)
            cheaper = (
                [answer_of(r.results[m].response or "", fmt) for m in models[:index]] if ask else []
            )
            hit = (
                response_text(r.kind, answer, response),
                dense_features(answer, response, cheaper, r.prompt or ""),
            )
            if cache is not None:
                cache.entries[key] = hit
        kinds.append(r.kind)
        prompts.append(r.prompt or "")
        texts.append(hit[0])
        dense.append(hit[1])
    return kinds, prompts, texts, dense


__all__ = [
    "AGREEMENT",
    "DENSE",
    "FeatureCache",
    "answer_of",
    "dense_features",
    "response_text",
    "tier_features",
]
