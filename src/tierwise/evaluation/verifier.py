"""A learned response verifier: from the prompt AND a tier's answer, ``P(the answer is right)``.

Where the learned router (:mod:`~tierwise.evaluation.learned`) reads only the prompt, the
verifier reads what the cheap tier actually answered. Per tier below the top, one logistic
regression over:

* TF-IDF of the kind and the end of the prompt (as the router reads it);
* TF-IDF of the answer, led by tokens for the kind and the normalised answer (``anstoken_B``);
* answer-format features: an answer of the kind's form was found (option letter, number,
  code that parses and defines a function), the answer's length;
* agreement features (multiple choice and numbers only): whether the tiers below gave the
  same answer, and the share that did. They are asked through the cascade, so each of those
  calls is priced and recorded like any validator call.

In the cascade it is a validator (:meth:`ResponseVerifier.validator`): the answer passes when
its predicted probability reaches the tier's threshold, else the cascade climbs one tier. It is
also the cascade's scorer (:meth:`ResponseVerifier.propose`): kinds with an agreement form start
one tier below the top (so there is a cheaper tier to agree with), other kinds at the bottom.
The thresholds are calibrated on a calibration part of the **training** data only: the
cheapest thresholds whose simulated cascade keeps the top tier's calibration quality (minus a
tolerance). Saved as JSON, never pickle::

    verifier = ResponseVerifier.train(train_rows, ladder, formats, threshold=0.5)
    data = verifier.to_json()
    cascade = Cascade(policy, scorer=verifier, ...)   # plus verifier.validator()

scikit-learn and numpy are needed (the ``eval`` extra).
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators import BaseValidator, ValidationContext, normalise_answer
from tierwise.errors import BudgetExceededError, ProviderError
from tierwise.evaluation.dataset import DatasetError, Ladder, Row
from tierwise.evaluation.learned import (
    FloatArray,
    IntArray,
    TextFeatures,
    _fit_logistic,
    _stratified_split,
    cheapest_meeting,
    router_text,
)

if TYPE_CHECKING:
    from tierwise.task import Task

FORMAT = "tierwise-response-verifier/1"
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
#: Threshold grid the calibration searches (per tier below the top).
GRID = tuple(float(x) for x in np.round(np.linspace(0.0, 1.0, 41), 3))


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


@dataclass(frozen=True, slots=True)
class VerifierCalibration:
    """How the thresholds were chosen, on the calibration rows."""

    rows: int
    thresholds: tuple[float, ...]
    quality: float
    cost: float
    target_quality: float
    top_cost: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "thresholds": list(self.thresholds),
            "quality": self.quality,
            "cost": self.cost,
            "target_quality": self.target_quality,
            "top_cost": self.top_cost,
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    """A verifier cascade replayed from recorded scores: per row quality, cost, tier reached."""

    quality: FloatArray
    cost: FloatArray
    tier: IntArray


class ResponseVerifier:
    """Per-tier ``P(answer correct)`` from prompt, answer and agreement; thresholds per tier.

    Args:
        tiers: the ladder's tiers bottom to top; models: the model each was trained on.
        formats: answer format per kind (``choice``, ``number``, ``code``, ``text``).
        prompt_features / response_features: the two TF-IDF transforms.
        coef / intercept: one logistic regression per tier below the top.
        thresholds: per tier below the top, the probability an answer needs to pass.
    """

    def __init__(
        self,
        tiers: Sequence[str],
        models: Sequence[str],
        formats: Mapping[str, str],
        prompt_features: TextFeatures,
        response_features: TextFeatures,
        coef: FloatArray,
        intercept: FloatArray,
        thresholds: Sequence[float],
        *,
        calibration: VerifierCalibration | None = None,
    ) -> None:
        width = len(prompt_features.vocabulary) + len(response_features.vocabulary) + len(DENSE)
        judged = len(tiers) - 1
        if coef.shape != (judged, width) or intercept.shape != (judged,):
            raise ValueError("coefficients do not match the tiers and the vocabularies")
        if len(thresholds) != judged:
            raise ValueError(f"need {judged} thresholds (one per tier below the top)")
        self.tiers = tuple(tiers)
        self.models = tuple(models)
        self.formats = dict(formats)
        self.prompt_features = prompt_features
        self.response_features = response_features
        self.coef = coef
        self.intercept = intercept
        self.thresholds = tuple(float(t) for t in thresholds)
        self.calibration = calibration

    def __repr__(self) -> str:
        return (
            f"ResponseVerifier(tiers={'/'.join(self.tiers)}, thresholds="
            f"{'/'.join(f'{t:.3f}' for t in self.thresholds)})"
        )

    # -- where a kind starts, what agreement it uses ----------------------------------------

    def mode(self, kind: str) -> str | None:
        """The agreement form of *kind* (``choice``/``number``), or ``None``."""
        return AGREEMENT.get(self.formats.get(kind, "text"))

    def start_index(self, kind: str) -> int:
        """Kinds with an agreement form start one below the top on ladders of 3+; else bottom."""
        if len(self.tiers) >= 3 and self.mode(kind) is not None:
            return len(self.tiers) - 2
        return 0

    def propose(self, task: Task) -> str | None:
        """The cascade's scorer hook: the tier *task* starts at."""
        return self.tiers[self.start_index(task.kind)]

    def asks_cheaper(self, kind: str, index: int) -> bool:
        """Whether judging tier *index*'s answer to *kind* asks the cheaper tiers to agree."""
        return index > 0 and self.mode(kind) is not None

    # -- probabilities ----------------------------------------------------------------------

    def _matrix(
        self, kinds: Sequence[str], prompts: Sequence[str], responses: Sequence[str], dense: Any
    ) -> Any:
        import scipy.sparse as sp  # type: ignore[import-untyped]

        p = self.prompt_features.transform(
            [router_text(k, t) for k, t in zip(kinds, prompts, strict=True)]
        )
        r = self.response_features.transform(responses)
        return sp.hstack([p, r, sp.csr_matrix(np.asarray(dense, dtype=float))]).tocsr()

    def probability(
        self, index: int, kind: str, prompt: str, response: str, cheaper: Sequence[str]
    ) -> float:
        """``P(correct)`` of tier *index*'s *response*; *cheaper*: the cheaper tiers' texts
        (pass them only when :meth:`asks_cheaper`)."""
        fmt = self.formats.get(kind, "text")
        answer = answer_of(response, fmt)
        others = [answer_of(c, fmt) for c in cheaper]
        dense = [dense_features(answer, response, others, prompt)]
        x = self._matrix([kind], [prompt], [response_text(kind, answer, response)], dense)
        z = float((x @ self.coef[index])[0]) + float(self.intercept[index])
        return 1.0 / (1.0 + math.exp(-z))

    def probabilities_for(self, rows: Sequence[Row]) -> FloatArray:
        """Per row and tier below the top, ``P(correct)`` of the recorded answer (agreement
        features from the cheaper tiers' recorded answers, as the cascade would ask them)."""
        out = np.zeros((len(rows), len(self.tiers) - 1))
        for i in range(len(self.tiers) - 1):
            kinds, prompts, texts, dense = _features(rows, self.models, self.formats, i, self)
            x = self._matrix(kinds, prompts, texts, dense)
            z = np.asarray(x @ self.coef[i]).ravel() + self.intercept[i]
            out[:, i] = 1.0 / (1.0 + np.exp(-z))
        return out

    # -- simulation and calibration ---------------------------------------------------------

    def simulate(
        self,
        rows: Sequence[Row],
        probs: FloatArray,
        thresholds: Sequence[float] | None = None,
        *,
        pass_threshold: float = 0.5,
    ) -> Simulation:
        """The verifier cascade on recorded rows: what each row would score and cost.

        Mirrors the replayed cascade: start at :meth:`start_index`, pay the tier's answer and,
        when :meth:`asks_cheaper`, every cheaper tier's; accept at ``P ≥ threshold``; the top
        tier is accepted unchecked. Quality is the recorded score (≥ *pass_threshold* counts
        as 1 for binary sets; graded scores are kept as they are).
        """
        del pass_threshold  # scores are used as recorded
        ts = self.thresholds if thresholds is None else tuple(thresholds)
        top = len(self.tiers) - 1
        scores = np.array([[r.results[m].score for m in self.models] for r in rows], dtype=float)
        costs = _costs(rows, self.models)
        quality = np.zeros(len(rows))
        cost = np.zeros(len(rows))
        tier = np.zeros(len(rows), dtype=int)
        for j, r in enumerate(rows):
            spent = 0.0
            for i in range(self.start_index(r.kind), top + 1):
                spent += costs[j, i]
                if i == top:
                    break
                if self.asks_cheaper(r.kind, i):
                    spent += float(costs[j, :i].sum())
                if probs[j, i] >= ts[i]:
                    break
            quality[j], cost[j], tier[j] = scores[j, i], spent, i
        return Simulation(quality, cost, tier)

    def calibrate(self, rows: Sequence[Row], tolerance: float) -> None:
        """Choose the thresholds: the cheapest whose simulated calibration quality is at least
        the top tier's minus *tolerance*; when none is, the best quality."""
        if not rows:
            return
        probs = self.probabilities_for(rows)
        top_scores = np.array([r.results[self.models[-1]].score for r in rows], dtype=float)
        top_cost = float(_costs(rows, self.models)[:, -1].mean())
        target = float(top_scores.mean()) - tolerance
        judged = len(self.tiers) - 1
        grid = (
            itertools.product(GRID, repeat=judged) if judged <= 2 else ((t,) * judged for t in GRID)
        )

        def outcome(ts: tuple[float, ...]) -> tuple[tuple[float, ...], float, float]:
            sim = self.simulate(rows, probs, ts)
            return ts, float(sim.quality.mean()), float(sim.cost.mean())

        picked = cheapest_meeting((outcome(ts) for ts in grid), target, tie=1e-15)
        self.thresholds = picked[0]
        self.calibration = VerifierCalibration(
            rows=len(rows),
            thresholds=picked[0],
            quality=picked[1],
            cost=picked[2],
            target_quality=target,
            top_cost=top_cost,
        )

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        rows: Sequence[Row],
        ladder: Ladder,
        formats: Mapping[str, str],
        *,
        threshold: float,
        calibration: Sequence[Row] | None = None,
        calibration_fraction: float = 0.25,
        seed: int = 0,
        c: float = 0.5,
        tolerance: float = 0.01,
    ) -> ResponseVerifier:
        """Fit on *rows* and calibrate the thresholds on *calibration* (default: a seeded part
        of *rows*, stratified by kind, left out of the fit).

        Raises:
            DatasetError: fewer than 20 rows with prompt text and every non-top tier's answer.
        """
        below = ladder.models[:-1]

        def usable(r: Row) -> bool:
            return (
                bool(r.prompt)
                and all(m in r.results and r.results[m].response is not None for m in below)
                and ladder.models[-1] in r.results
            )

        good = [r for r in rows if usable(r)]
        if len(good) < 20:
            raise DatasetError(
                "a response verifier needs prompt text and the answers of every tier below the "
                f"top; {len(good)} usable training rows"
            )
        if calibration is None:
            fit_rows, cal_rows = _stratified_split(good, calibration_fraction, seed)
        else:
            fit_rows, cal_rows = good, [r for r in calibration if usable(r)]
        kinds = sorted({r.kind for r in good})
        fmts = {k: formats.get(k, "text") for k in kinds}
        prompt_features = TextFeatures.fit([router_text(r.kind, r.prompt) for r in fit_rows])
        texts: list[str] = []
        for i in range(len(below)):
            texts.extend(_features(fit_rows, ladder.models, fmts, i, None)[2])
        response_features = TextFeatures.fit(texts)
        width = len(prompt_features.vocabulary) + len(response_features.vocabulary) + len(DENSE)
        coef = np.zeros((len(below), width))
        intercept = np.zeros(len(below))
        verifier = cls(
            ladder.tiers,
            ladder.models,
            fmts,
            prompt_features,
            response_features,
            coef,
            intercept,
            [0.5] * len(below),
        )
        for i, model in enumerate(below):
            kinds_i, prompts, rtexts, dense = _features(fit_rows, ladder.models, fmts, i, verifier)
            x = verifier._matrix(kinds_i, prompts, rtexts, dense)
            y = np.array([r.results[model].score >= threshold for r in fit_rows], dtype=int)
            coef[i], intercept[i] = _fit_logistic(x, y, c, seed)
        verifier.calibrate(cal_rows, tolerance)
        return verifier

    # -- the cascade validator --------------------------------------------------------------

    def validator(self, name: str = "verifier") -> VerifierValidator:
        """This verifier as a cascade validator."""
        return VerifierValidator(name, self)

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The whole verifier as JSON-ready data (no pickle)."""

        def vocab(f: TextFeatures) -> list[str]:
            return [t for t, _ in sorted(f.vocabulary.items(), key=lambda kv: kv[1])]

        return {
            "format": FORMAT,
            "tiers": list(self.tiers),
            "models": list(self.models),
            "formats": self.formats,
            "thresholds": list(self.thresholds),
            "dense": list(DENSE),
            "prompt": {
                "vocabulary": vocab(self.prompt_features),
                "idf": self.prompt_features.idf.tolist(),
                "ngram_range": list(self.prompt_features.ngram_range),
            },
            "response": {
                "vocabulary": vocab(self.response_features),
                "idf": self.response_features.idf.tolist(),
                "ngram_range": list(self.response_features.ngram_range),
            },
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "calibration": self.calibration.as_dict() if self.calibration else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> ResponseVerifier:
        """Rebuild a verifier from :meth:`to_json` output.

        Raises:
            DatasetError: the data is not a tierwise response verifier.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"not a tierwise response verifier (expected format {FORMAT!r})")
        try:
            if list(data["dense"]) != list(DENSE):
                raise ValueError(f"dense features {data['dense']} are not {list(DENSE)}")

            def feats(d: dict[str, Any]) -> TextFeatures:
                return TextFeatures(
                    {str(t): i for i, t in enumerate(d["vocabulary"])},
                    np.asarray(d["idf"], dtype=float),
                    (int(d["ngram_range"][0]), int(d["ngram_range"][1])),
                )

            cal = data.get("calibration")
            return cls(
                data["tiers"],
                data["models"],
                {str(k): str(v) for k, v in data["formats"].items()},
                feats(data["prompt"]),
                feats(data["response"]),
                np.asarray(data["coef"], dtype=float),
                np.asarray(data["intercept"], dtype=float),
                data["thresholds"],
                calibration=(
                    VerifierCalibration(**{**cal, "thresholds": tuple(cal["thresholds"])})
                    if isinstance(cal, dict)
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(
                f"response verifier data is damaged: {type(exc).__name__}: {exc}"
            ) from None


class VerifierValidator(BaseValidator):
    """A :class:`ResponseVerifier` as a cascade validator.

    The top tier passes unchecked (nowhere to climb). For kinds with an agreement form it first
    asks every cheaper tier through the context (priced, budgeted, recorded as validator
    attempts); a failed call fails the check. The verdict's score is ``P(correct)``.
    """

    def __init__(self, name: str, verifier: ResponseVerifier) -> None:
        super().__init__(name)
        self.verifier = verifier

    def _judge(self, output: str, ctx: ValidationContext, cheaper: Sequence[str]) -> Verdict:
        v = self.verifier
        index = v.tiers.index(ctx.tier)
        p = v.probability(index, ctx.task.kind, ctx.task.prompt, output, cheaper)
        threshold = v.thresholds[index]
        agreed = ""
        if cheaper:
            fmt = v.formats.get(ctx.task.kind, "text")
            mine = answer_of(output, fmt)
            same = sum(1 for c in cheaper if mine is not None and answer_of(c, fmt) == mine)
            agreed = f", {same}/{len(cheaper)} cheaper tiers agree"
        if p >= threshold:
            return self.ok(p, f"P(correct) {p:.2f} ≥ {threshold:.2f}{agreed}")
        return self.fail(f"P(correct) {p:.2f} < {threshold:.2f}{agreed}", p)

    def _unchecked(self, ctx: ValidationContext) -> Verdict | None:
        if ctx.tier not in self.verifier.tiers:
            return self.ok(None, f"tier {ctx.tier} is not on the verifier's ladder; not checked")
        if ctx.tier == self.verifier.tiers[-1]:
            return self.ok(None, "top tier: not checked")
        return None

    def _failed_call(self, tier: str, exc: Exception) -> Verdict:
        if isinstance(exc, ProviderError | BudgetExceededError):
            return self.fail(f"could not ask tier {tier}: {type(exc).__name__}: {exc}")
        raise exc

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        skip = self._unchecked(ctx)
        if skip is not None:
            return skip
        index = self.verifier.tiers.index(ctx.tier)
        cheaper: list[str] = []
        if self.verifier.asks_cheaper(ctx.task.kind, index):
            for tier in self.verifier.tiers[:index]:
                try:
                    cheaper.append(ctx.call_tier(tier, ctx.task).text)
                except Exception as exc:
                    return self._failed_call(tier, exc)
        return self._judge(output, ctx, cheaper)

    async def _acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        skip = self._unchecked(ctx)
        if skip is not None:
            return skip
        index = self.verifier.tiers.index(ctx.tier)
        cheaper: list[str] = []
        if self.verifier.asks_cheaper(ctx.task.kind, index):
            for tier in self.verifier.tiers[:index]:
                try:
                    cheaper.append((await ctx.acall_tier(tier, ctx.task)).text)
                except Exception as exc:
                    return self._failed_call(tier, exc)
        return self._judge(output, ctx, cheaper)


def _features(
    rows: Sequence[Row],
    models: Sequence[str],
    formats: Mapping[str, str],
    index: int,
    verifier: ResponseVerifier | None,
) -> tuple[list[str], list[str], list[str], list[list[float]]]:
    """Kinds, prompts, answer texts and dense features of tier *index*'s recorded answers."""
    kinds, prompts, texts, dense = [], [], [], []
    model = models[index]
    for r in rows:
        fmt = formats.get(r.kind, "text")
        response = r.results[model].response or ""
        answer = answer_of(response, fmt)
        asks = (
            verifier.asks_cheaper(r.kind, index)
            if verifier is not None
            else index > 0 and fmt in AGREEMENT
        )
        cheaper = (
            [answer_of(r.results[m].response or "", fmt) for m in models[:index]] if asks else []
        )
        kinds.append(r.kind)
        prompts.append(r.prompt or "")
        texts.append(response_text(r.kind, answer, response))
        dense.append(dense_features(answer, response, cheaper, r.prompt or ""))
    return kinds, prompts, texts, dense


def _costs(rows: Sequence[Row], models: Sequence[str]) -> FloatArray:
    from tierwise.evaluation.learned import tier_costs

    return tier_costs(rows, models)


__all__ = [
    "FORMAT",
    "ResponseVerifier",
    "Simulation",
    "VerifierCalibration",
    "VerifierValidator",
    "answer_of",
    "dense_features",
    "response_text",
]
