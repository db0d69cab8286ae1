"""A learned response verifier: from the prompt AND a tier's answer, ``P(the answer is right)``.

Where the learned router (:mod:`~tierwise.evaluation.learned`) reads only the prompt, the
verifier reads what the cheap tier actually answered. Per tier below the top, one logistic
regression over (:mod:`~tierwise.evaluation.verifier_features`):

* TF-IDF of the kind and the end of the prompt (as the router reads it);
* TF-IDF of the answer, led by tokens for the kind and the normalised answer (``anstoken_B``);
* answer-format features: an answer of the kind's form was found (option letter, number,
  code that parses and defines a function), the answer's length;
* agreement features (multiple choice and numbers only): whether the tiers below gave the
  same answer, and the share that did. They are asked through the cascade, so each of those
  calls is priced and recorded like any validator call.

In the cascade it is a validator (:meth:`ResponseVerifier.validator`): the answer passes when
its predicted probability reaches the tier's threshold, else the cascade climbs one tier. It is
also the cascade's scorer (:meth:`ResponseVerifier.propose`): it says where each kind starts.
By default kinds with an agreement form start one tier below the top (so there is a cheaper
tier to agree with), other kinds at the bottom; a verifier calibrated per source carries a start
tier and thresholds for each source (``groups``: kind → source, ``settings``: source → start and
thresholds). Probabilities may pass through a monotone isotonic map per tier (``calibrators``).
How it is trained and calibrated — by cross-validation inside the training rows — is
:mod:`~tierwise.evaluation.verifier_train`. Saved as JSON, never pickle::

    verifier = ResponseVerifier.train(train_rows, ladder, formats, threshold=0.5)
    data = verifier.to_json()
    cascade = Cascade(policy, scorer=verifier, ...)   # plus verifier.validator()

scikit-learn and numpy are needed (the ``eval`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators import BaseValidator, ValidationContext
from tierwise.errors import BudgetExceededError, ProviderError
from tierwise.evaluation.calibration import OTHER, CascadeArrays, Isotonic, Setting, apply_maps
from tierwise.evaluation.dataset import DatasetError, Ladder, Row
from tierwise.evaluation.learned import FloatArray, IntArray, TextFeatures, router_text, tier_costs
from tierwise.evaluation.verifier_features import (
    AGREEMENT,
    DENSE,
    FeatureCache,
    answer_of,
    dense_features,
    response_text,
    tier_features,
)

if TYPE_CHECKING:
    from tierwise.evaluation.calibration import Objective
    from tierwise.evaluation.verifier_train import VerifierCalibration
    from tierwise.task import Task

FORMAT = "tierwise-response-verifier/2"
#: Saved verifiers this version reads (version 1 had one threshold per tier and no groups).
READS = ("tierwise-response-verifier/1", FORMAT)


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
        thresholds: per tier below the top, the probability an answer needs to pass (kinds
            without a setting of their own, starting where :meth:`rule_start` says).
        groups: kind → source group with its own setting in *settings*.
        settings: group → (start tier index, one threshold per tier below the top).
        calibrators: one isotonic map per tier below the top, applied to every probability.
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
        groups: Mapping[str, str] | None = None,
        settings: Mapping[str, Setting] | None = None,
        calibrators: Sequence[Isotonic] | None = None,
        calibration: VerifierCalibration | None = None,
    ) -> None:
        width = len(prompt_features.vocabulary) + len(response_features.vocabulary) + len(DENSE)
        judged = len(tiers) - 1
        if coef.shape != (judged, width) or intercept.shape != (judged,):
            raise ValueError("coefficients do not match the tiers and the vocabularies")
        if len(thresholds) != judged:
            raise ValueError(f"need {judged} thresholds (one per tier below the top)")
        for group, (start, ts) in (settings or {}).items():
            if not 0 <= start < max(judged, 1) or len(ts) != judged:
                raise ValueError(f"setting of {group!r} does not fit a {len(tiers)}-tier ladder")
        if calibrators is not None and len(calibrators) != judged:
            raise ValueError(f"need {judged} calibrators (one per tier below the top)")
        self.tiers = tuple(tiers)
        self.models = tuple(models)
        self.formats = dict(formats)
        self.prompt_features = prompt_features
        self.response_features = response_features
        self.coef = coef
        self.intercept = intercept
        self.thresholds = tuple(float(t) for t in thresholds)
        self.groups = dict(groups or {})
        self.settings: dict[str, Setting] = {
            g: (int(s), tuple(float(t) for t in ts)) for g, (s, ts) in (settings or {}).items()
        }
        self.calibrators = tuple(calibrators) if calibrators is not None else None
        self.calibration = calibration

    def __repr__(self) -> str:
        per = f", {len(self.settings)} source settings" if self.settings else ""
        return (
            f"ResponseVerifier(tiers={'/'.join(self.tiers)}, thresholds="
            f"{'/'.join(f'{t:.3f}' for t in self.thresholds)}{per})"
        )

    @classmethod
    def train(
        cls,
        rows: Sequence[Row],
        ladder: Ladder,
        formats: Mapping[str, str],
        *,
        threshold: float,
        calibration: Sequence[Row] | None = None,
        objective: Objective | None = None,
        folds: int | None = None,
        seed: int = 0,
        c: float = 0.5,
        tolerance: float = 0.01,
    ) -> ResponseVerifier:
        """Fit on *rows* and calibrate by cross-validation inside them (or on *calibration*
        rows when given); see :func:`~tierwise.evaluation.verifier_train.train_verifier`."""
        from tierwise.evaluation.calibration import CV_FOLDS, Objective
        from tierwise.evaluation.verifier_train import train_verifier

        return train_verifier(
            rows,
            ladder,
            formats,
            threshold=threshold,
            calibration=calibration,
            objective=objective or Objective(tolerance=tolerance),
            folds=folds or CV_FOLDS,
            seed=seed,
            c=c,
        )

    # -- where a kind starts, what agreement it uses, what it must reach --------------------

    def mode(self, kind: str) -> str | None:
        """The agreement form of *kind* (``choice``/``number``), or ``None``."""
        return AGREEMENT.get(self.formats.get(kind, "text"))

    def rule_start(self, kind: str) -> int:
        """Kinds with an agreement form start one below the top on ladders of 3+; else bottom."""
        if len(self.tiers) >= 3 and self.mode(kind) is not None:
            return len(self.tiers) - 2
        return 0

    def setting(self, kind: str) -> Setting:
        """The start tier index and thresholds *kind* runs with."""
        found = self.settings.get(self.groups.get(kind, OTHER))
        return found if found is not None else (self.rule_start(kind), self.thresholds)

    def start_index(self, kind: str) -> int:
        """The tier index *kind* starts at."""
        return self.setting(kind)[0]

    def threshold(self, kind: str, index: int) -> float:
        """The probability tier *index*'s answer to *kind* needs to pass."""
        return self.setting(kind)[1][index]

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
        dense = dense_features(answer, response, others, prompt)
        # One answer's row by TextFeatures.transform_one (no scikit-learn set-up per call): the
        # same columns as _matrix's [prompt | response | dense], which a test holds it to.
        pc, pv = self.prompt_features.transform_one(router_text(kind, prompt))
        rc, rv = self.response_features.transform_one(response_text(kind, answer, response))
        w = self.coef[index]
        split = len(self.prompt_features.vocabulary)
        tail = split + len(self.response_features.vocabulary)
        z = float(w[pc] @ pv + w[split + rc] @ rv + w[tail:] @ np.asarray(dense, dtype=float))
        z += float(self.intercept[index])
        p = 1.0 / (1.0 + math.exp(-z))
        if self.calibrators is not None:
            p = float(self.calibrators[index](np.array([p]))[0])
        return p

    def raw_probabilities_for(
        self, rows: Sequence[Row], cache: FeatureCache | None = None
    ) -> FloatArray:
        """Per row and tier below the top, the regression's ``P(correct)`` of the recorded answer
        before any calibrator (agreement features from the cheaper tiers' recorded answers, as
        the cascade would ask them)."""
        out = np.zeros((len(rows), len(self.tiers) - 1))
        for i in range(len(self.tiers) - 1):
            asks = [self.asks_cheaper(r.kind, i) for r in rows]
            kinds, prompts, texts, dense = tier_features(
                rows, self.models, self.formats, i, asks, cache
            )
            x = self._matrix(kinds, prompts, texts, dense)
            z = np.asarray(x @ self.coef[i]).ravel() + self.intercept[i]
            out[:, i] = 1.0 / (1.0 + np.exp(-z))
        return out

    def probabilities_for(self, rows: Sequence[Row]) -> FloatArray:
        """:meth:`raw_probabilities_for`, through the calibrators when there are any."""
        raw = self.raw_probabilities_for(rows)
        return apply_maps(raw, self.calibrators) if self.calibrators is not None else raw

    # -- simulation -------------------------------------------------------------------------

    def arrays(self, rows: Sequence[Row], probs: FloatArray) -> CascadeArrays:
        """The recorded scores, costs and asks of *rows* with the given probabilities."""
        scores = np.array([[r.results[m].score for m in self.models] for r in rows], dtype=float)
        asks = np.array(
            [[self.asks_cheaper(r.kind, i) for i in range(len(self.tiers) - 1)] for r in rows],
            dtype=bool,
        ).reshape(len(rows), len(self.tiers) - 1)
        return CascadeArrays(scores, tier_costs(rows, self.models), probs, asks)

    def simulate(
        self,
        rows: Sequence[Row],
        probs: FloatArray,
        thresholds: Sequence[float] | None = None,
    ) -> Simulation:
        """The verifier cascade on recorded rows: what each row would score and cost.

        Mirrors the replayed cascade: start at the kind's start tier, pay the tier's answer and,
        when :meth:`asks_cheaper`, every cheaper tier's; accept at ``P ≥ threshold``; the top
        tier is accepted unchecked. *thresholds* replaces every kind's setting with the rule's
        start and these thresholds.
        """
        if thresholds is None:
            picked = [self.setting(r.kind) for r in rows]
        else:
            fixed = tuple(float(t) for t in thresholds)
            picked = [(self.rule_start(r.kind), fixed) for r in rows]
        start = np.array([s for s, _ in picked], dtype=np.int64)
        ts = np.array([t for _, t in picked], dtype=float).reshape(len(rows), len(self.tiers) - 1)
        quality, cost, tier = self.arrays(rows, probs).run(start, ts)
        return Simulation(quality, cost, tier)

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
            "groups": self.groups,
            "settings": {
                g: {"start": s, "thresholds": list(ts)} for g, (s, ts) in self.settings.items()
            },
            "calibrators": (
                [m.as_dict() for m in self.calibrators] if self.calibrators is not None else None
            ),
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
        if not isinstance(data, dict) or data.get("format") not in READS:
            raise DatasetError(f"not a tierwise response verifier (expected format {FORMAT!r})")
        from tierwise.evaluation.verifier_train import VerifierCalibration

        try:
            if list(data["dense"]) != list(DENSE):
                raise ValueError(f"dense features {data['dense']} are not {list(DENSE)}")

            def feats(d: dict[str, Any]) -> TextFeatures:
                return TextFeatures(
                    {str(t): i for i, t in enumerate(d["vocabulary"])},
                    np.asarray(d["idf"], dtype=float),
                    (int(d["ngram_range"][0]), int(d["ngram_range"][1])),
                )

            maps = data.get("calibrators")
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
                groups={str(k): str(v) for k, v in data.get("groups", {}).items()},
                settings={
                    str(g): (int(v["start"]), tuple(v["thresholds"]))
                    for g, v in data.get("settings", {}).items()
                },
                calibrators=(
                    [Isotonic(tuple(m["x"]), tuple(m["y"])) for m in maps]
                    if maps is not None
                    else None
                ),
                calibration=VerifierCalibration.from_dict(cal) if isinstance(cal, dict) else None,
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
        threshold = v.threshold(ctx.task.kind, index)
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


__all__ = [
    "FORMAT",
    "ResponseVerifier",
    "Simulation",
    "VerifierValidator",
    "answer_of",
    "dense_features",
    "response_text",
]
