"""The learned response verifier: it reads the answer (not only the prompt), learns agreement,
calibrates on training rows, survives JSON, and escalates inside the real cascade."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.loaders.jsonl import dump_rows
from tierwise.evaluation.report import evaluate
from tierwise.evaluation.strategies import Replayer, eval_policy
from tierwise.evaluation.verifier import ResponseVerifier, answer_of
from tierwise.ledger import open_ledger
from tierwise.task import Task

TWO = Ladder(("cheap", "strong"), ("small", "big"))
THREE = Ladder(("cheap", "mid", "strong"), ("small", "medium", "big"))
TOPICS = ["rivers", "planets", "verbs", "metals", "birds", "poems", "bridges", "clouds"]


def sure_rows(n: int, seed: int, prefix: str = "s") -> list[Row]:
    """Prompts carry no signal; the small model's answer says how it went: a worked answer
    ending in a number when right, a hedge when wrong. The big model is always right."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        right = rng.random() < 0.6
        prompt = f"question about {rng.choice(TOPICS)} number {rng.randint(0, 99)}"
        small = (
            f"working it out step by step the answer is {rng.randint(1, 50)}"
            if right
            else "i am not certain, perhaps it depends on the context"
        )
        rows.append(
            Row(
                f"{prefix}{i}",
                prompt,
                "math",
                {
                    "small": ModelResult(1.0 if right else 0.0, small, Decimal("0.001")),
                    "big": ModelResult(1.0, "the answer is 7", Decimal("0.01")),
                },
            )
        )
    return rows


def agree_rows(n: int, seed: int, prefix: str = "a") -> list[Row]:
    """Multiple choice where the answers are single random letters: the mid model is right
    exactly when the small model gave the same letter (nothing else tells it apart)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        mid = rng.choice("ABCD")
        right = rng.random() < 0.6
        small = mid if right else rng.choice([c for c in "ABCD" if c != mid])
        prompt = f"pick one about {rng.choice(TOPICS)} {rng.randint(0, 99)}\nA) x\nB) y\nC) z\nD) w"
        rows.append(
            Row(
                f"{prefix}{i}",
                prompt,
                "mc",
                {
                    "small": ModelResult(float(right), small, Decimal("0.001")),
                    "medium": ModelResult(float(right), mid, Decimal("0.002")),
                    "big": ModelResult(1.0, "A", Decimal("0.02")),
                },
            )
        )
    return rows


@pytest.fixture(scope="module")
def sure() -> ResponseVerifier:
    return ResponseVerifier.train(sure_rows(200, 1), TWO, {"math": "number"}, threshold=0.5)


def test_verifier_reads_the_answer_and_escalates_the_wrong_ones(sure: ResponseVerifier) -> None:
    """On unseen rows, right answers get a higher P(correct) than every wrong one, and the
    calibrated cascade keeps the big model's quality while answering most rows cheaply."""
    unseen = sure_rows(80, 99, prefix="u")
    probs = sure.probabilities_for(unseen)[:, 0]
    right = np.array([r.results["small"].score == 1.0 for r in unseen])
    assert probs[right].min() > probs[~right].max()
    sim = sure.simulate(unseen, sure.probabilities_for(unseen))
    assert sim.quality.mean() == 1.0
    assert np.array_equal(sim.tier == 0, right)  # exactly the right answers stay cheap
    assert sim.cost.mean() < 0.01 * 0.6  # cheaper than always big


def test_verifier_learns_agreement_with_the_cheaper_tier() -> None:
    """With random one-letter answers, only agreement separates right from wrong at mid."""
    verifier = ResponseVerifier.train(
        agree_rows(240, 2), THREE, {"mc": "choice"}, threshold=0.5, seed=0
    )
    unseen = agree_rows(60, 98, prefix="v")
    probs = verifier.probabilities_for(unseen)[:, 1]
    agreed = np.array([r.results["medium"].score == 1.0 for r in unseen])
    assert probs[agreed].min() > probs[~agreed].max()
    assert verifier.propose(Task.create("mc", "pick one")) == "mid"  # a cheaper tier to ask
    assert verifier.propose(Task.create("other", "free text")) == "cheap"
    sim = verifier.simulate(unseen, verifier.probabilities_for(unseen))
    assert sim.quality.mean() == 1.0
    # agreed rows pay mid + the cheap tier asked to agree; the others also pay the big model
    expected = np.where(agreed, 0.003, 0.023)
    assert np.allclose(sim.cost, expected)


def test_thresholds_are_calibrated_on_the_calibration_rows_given() -> None:
    """The calibration record describes the calibration rows, and its quality meets the target
    there (the big model's quality minus the tolerance)."""
    cal = sure_rows(60, 7, prefix="c")
    verifier = ResponseVerifier.train(
        sure_rows(150, 3), TWO, {"math": "number"}, threshold=0.5, calibration=cal, tolerance=0.0
    )
    assert verifier.calibration is not None
    assert verifier.calibration.rows == 60
    assert verifier.calibration.quality >= verifier.calibration.target_quality == 1.0
    sim = verifier.simulate(cal, verifier.probabilities_for(cal))
    assert sim.quality.mean() == pytest.approx(verifier.calibration.quality)
    assert sim.cost.mean() == pytest.approx(verifier.calibration.cost)


def test_json_round_trip_scores_unseen_rows_the_same(sure: ResponseVerifier) -> None:
    data = json.loads(json.dumps(sure.to_json()))
    again = ResponseVerifier.from_json(data)
    unseen = sure_rows(30, 55, prefix="j")
    assert np.allclose(again.probabilities_for(unseen), sure.probabilities_for(unseen))
    assert again.thresholds == sure.thresholds
    with pytest.raises(DatasetError, match="not a tierwise response verifier"):
        ResponseVerifier.from_json({"format": "pickle"})
    broken = {**data, "coef": [[0.0]]}
    with pytest.raises(DatasetError, match="damaged"):
        ResponseVerifier.from_json(broken)


def test_too_few_answered_rows_is_an_error() -> None:
    rows = [
        Row(r.prompt_id, r.prompt, r.kind, {**r.results, "small": ModelResult(1.0)})
        for r in sure_rows(30, 4)
    ]
    with pytest.raises(DatasetError, match="0 usable training rows"):
        ResponseVerifier.train(rows, TWO, {"math": "number"}, threshold=0.5)


def test_answer_forms() -> None:
    assert answer_of("The answer is B.", "choice") == "B"
    assert answer_of("so 12 apples", "number") == "12"
    assert answer_of("```python\ndef f():\n    return 1\n```", "code") == "code"
    assert answer_of("x = (", "code") is None
    assert answer_of("  ", "text") is None


def test_in_the_cascade_it_escalates_and_asks_cheaper_tiers_as_priced_validator_calls(
    tmp_path: Path,
) -> None:
    """Replayed through the real cascade: agreed answers stop at mid, the others climb to the
    top; the cheap tier's answer is a recorded, priced validator attempt."""
    verifier = ResponseVerifier.train(
        agree_rows(240, 2), THREE, {"mc": "choice"}, threshold=0.5, seed=0
    )
    rows = agree_rows(12, 77, prefix="r")
    dataset = Dataset("agree", tuple(rows), THREE.models, THREE, formats={"mc": "choice"})
    with open_ledger(tmp_path / "replay.db") as ledger:
        run = Replayer(dataset, THREE, ledger=ledger).run(
            "cascade: learned verifier",
            eval_policy(dataset, THREE),
            rows,
            scorer=verifier,
            validators=(verifier.validator(),),
        )
        stats = ledger.engine.connect().exec_driver_sql(
            "select role, count(*) from attempts group by role"
        )
        roles = dict(stats.fetchall())
    for row, trace in zip(rows, run.traces, strict=True):
        right = row.results["medium"].score == 1.0
        assert trace.tier == ("mid" if right else "strong")
        assert trace.score == 1.0
        asked = [s for s in trace.steps if s.validator]
        assert [s.tier for s in asked] == ["cheap"]
        assert trace.cost == pytest.approx(0.003 if right else 0.023)
    assert roles["validator"] == len(rows)
    assert roles["replay"] == len(rows) + sum(r.results["medium"].score == 0.0 for r in rows)


def _write_jsonl(path: Path, rows: list[Row]) -> None:
    with path.open("w", encoding="utf-8") as out:
        dump_rows(rows, out, ladder=dict(TWO), formats={"math": "number"})


def test_evaluate_runs_the_verifier_cascade_and_saves_it_with_the_router(tmp_path: Path) -> None:
    """`tierwise eval` has the strategy and its swept routing curve; --save-router keeps the
    verifier in the same JSON file, and --router reuses it on a folder it never saw."""
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    _write_jsonl(train_dir / "logs.jsonl", sure_rows(200, 5))
    _write_jsonl(test_dir / "logs.jsonl", sure_rows(60, 6, prefix="t"))
    saved = tmp_path / "router.json"
    report = evaluate(test_dir, train=train_dir, save_router=saved)
    run = report.strategy("cascade: learned verifier")
    assert run.quality.value == 1.0
    assert run.cost_share is not None and run.cost_share < 0.5
    section = report.routing[0]
    curve = next(r for r in section.routers if r.name.startswith("learned verifier"))
    oracle = next(r for r in section.routers if r.name.startswith("oracle"))
    random_ = next(r for r in section.routers if r.name.startswith("random"))
    assert curve.apgr is not None and oracle.apgr is not None and random_.apgr is not None
    assert curve.apgr == pytest.approx(oracle.apgr, abs=0.01) and curve.apgr > random_.apgr + 0.2
    assert curve.operating_point is not None
    assert "verifier" in json.loads(saved.read_text(encoding="utf-8"))
    again = evaluate(test_dir, router_file=saved)
    assert again.strategy("cascade: learned verifier").quality.value == 1.0
    assert again.strategy("cascade: learned verifier").cost_per_query == run.cost_per_query


def test_replayed_cascade_matches_the_simulation_with_per_source_settings(tmp_path: Path) -> None:
    """A verifier with a start tier and thresholds per source and isotonic maps: the real
    cascade reaches the tier and pays the cost the calibration's simulation says, row by row."""
    from tierwise.evaluation.calibration import Isotonic

    trained = ResponseVerifier.train(
        agree_rows(240, 2), THREE, {"mc": "choice", "other": "choice"}, threshold=0.5, seed=0
    )
    trained.groups = {"mc": "first", "other": "second"}
    trained.settings = {"first": (1, (0.0, 0.6)), "second": (0, (0.45, 0.3))}
    trained.calibrators = tuple(Isotonic((0.0, 0.5, 1.0), (0.1, 0.4, 0.9)) for _ in range(2))
    rows = agree_rows(10, 71, prefix="x") + [
        Row(r.prompt_id.replace("y", "z"), r.prompt, "other", r.results)
        for r in agree_rows(10, 72, prefix="y")
    ]
    dataset = Dataset("agree", tuple(rows), THREE.models, THREE, formats=trained.formats)
    sim = trained.simulate(rows, trained.probabilities_for(rows))
    with open_ledger(tmp_path / "replay.db") as ledger:
        run = Replayer(dataset, THREE, ledger=ledger).run(
            "cascade: learned verifier",
            eval_policy(dataset, THREE),
            rows,
            scorer=trained,
            validators=(trained.validator(),),
        )
    for trace, tier, cost, quality in zip(run.traces, sim.tier, sim.cost, sim.quality, strict=True):
        assert trace.tier == THREE.tiers[tier]
        assert trace.cost == pytest.approx(cost)
        assert trace.score == quality
    assert {t.steps[0].tier for t in run.traces[:10]} == {"mid"}  # "first" starts at mid
    assert {t.steps[0].tier for t in run.traces[10:]} == {"cheap"}  # "second" at the bottom
    assert len(set(sim.tier[:10])) == 2 and len(set(sim.tier[10:])) >= 2  # some climb, some not
