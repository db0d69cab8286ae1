"""The learned router: it learns text signals, calibrates on training rows, survives JSON."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tierwise.evaluation.dataset import DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.learned import LearnedRouter, TextFeatures, choose, router_text
from tierwise.task import Task

LADDER = Ladder(("cheap", "strong"), ("small", "big"))
EASY = ["what is the capital of france", "add two and three", "name a colour", "spell cat"]
HARD = ["prove the riemann hypothesis", "derive the navier stokes solution", "factor rsa numbers"]


def make_rows(n: int, seed: int, prefix: str = "r") -> list[Row]:
    """Easy prompts: both models right. Hard prompts: only the big model is right."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hard = rng.random() < 0.4
        text = rng.choice(HARD if hard else EASY) + f" variant {rng.randint(0, 9)}"
        rows.append(
            Row(
                f"{prefix}{i}",
                text,
                "qa",
                {
                    "small": ModelResult(0.0 if hard else 1.0, cost_usd=Decimal("0.001")),
                    "big": ModelResult(1.0, cost_usd=Decimal("0.01")),
                },
            )
        )
    return rows


@pytest.fixture(scope="module")
def router() -> LearnedRouter:
    return LearnedRouter.train(make_rows(300, seed=1), LADDER, threshold=0.5, seed=0)


def test_router_learns_which_prompts_need_the_strong_tier(router: LearnedRouter) -> None:
    """Hard prompts go to the strong tier, easy ones stay cheap, on rows never seen in training."""
    unseen = make_rows(60, seed=99, prefix="u")
    probs = router.probabilities_for(unseen)
    picked = router.tier_index(probs)
    for row, tier in zip(unseen, picked, strict=True):
        expected = 0 if row.results["small"].score == 1.0 else 1
        assert tier == expected, row.prompt
    assert router.propose(Task.create("qa", "prove the riemann hypothesis variant 3")) == "strong"
    assert router.propose(Task.create("qa", "name a colour variant 1")) == "cheap"


def test_calibration_reaches_the_target_on_training_rows_only(router: LearnedRouter) -> None:
    """The margin was chosen by 5-fold cross-validation over all the training rows (each scored
    by a router fitted without it) and met its target there."""
    cal = router.calibration
    assert cal is not None
    assert (cal.rows, cal.folds) == (300, 5)
    assert cal.quality >= cal.target_quality == pytest.approx(cal.top_quality - 0.01)
    assert cal.cost < cal.top_cost  # cheaper than always-strong at the same quality


def test_a_cost_budget_calibrates_for_the_best_quality_within_it() -> None:
    """With a budget the margin keeps the cross-validated cost within it, even if quality drops."""
    from tierwise.evaluation.calibration import Objective

    rows = make_rows(300, seed=1)
    budget = Objective(max_cost_share=0.3)
    router = LearnedRouter.train(rows, LADDER, threshold=0.5, objective=budget)
    cal = router.calibration
    assert cal is not None and cal.objective["max_cost_share"] == 0.3
    assert cal.cost <= 0.3 * cal.top_cost
    assert cal.quality < cal.top_quality  # 40% of rows need the big model; 30% cannot buy them


def test_save_load_round_trip_scores_unseen_data(router: LearnedRouter, tmp_path: Path) -> None:
    """A saved router (JSON, no pickle) loads and scores data it never saw exactly as before."""
    path = tmp_path / "router.json"
    router.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "tierwise-learned-router/1"
    assert data["tiers"] == ["cheap", "strong"] and len(data["vocabulary"]) == len(data["idf"])
    loaded = LearnedRouter.load(path)
    unseen = make_rows(40, seed=123, prefix="v")
    np.testing.assert_allclose(
        loaded.probabilities_for(unseen), router.probabilities_for(unseen), rtol=0, atol=1e-12
    )
    assert loaded.margin == router.margin
    assert loaded.calibration == router.calibration


def test_features_match_scikit_learn_tfidf() -> None:
    """The JSON-friendly transform equals scikit-learn's TfidfVectorizer on the same settings."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [router_text("k", t) for t in EASY + HARD] * 3
    ours = TextFeatures.fit(texts)
    ref = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit(texts)
    new = ["add two and three please", "derive everything"]
    order = [ref.vocabulary_[t] for t in sorted(ours.vocabulary, key=ours.vocabulary.__getitem__)]
    np.testing.assert_allclose(
        ours.transform(new).toarray(), ref.transform(new).toarray()[:, order], atol=1e-12
    )


def test_choose_cheapest_within_margin() -> None:
    """Per row, the cheapest tier within the margin of the best probability."""
    probs = np.array([[0.9, 0.95], [0.2, 0.9], [0.5, 0.5]])
    assert choose(probs, 0.0).tolist() == [1, 1, 0]
    assert choose(probs, 0.1).tolist() == [0, 1, 0]
    assert choose(probs, 1.0).tolist() == [0, 0, 0]


def test_bad_router_files(tmp_path: Path) -> None:
    """Missing, non-JSON or foreign files are DatasetErrors that say what is wrong."""
    with pytest.raises(DatasetError, match="does not exist"):
        LearnedRouter.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read JSON"):
        LearnedRouter.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "pickle"}))
    with pytest.raises(DatasetError, match="not a tierwise learned router"):
        LearnedRouter.load(tmp_path / "y.json")


def test_too_little_text_to_learn_from() -> None:
    """Rows without prompt text cannot train a router."""
    rows = [
        Row(f"r{i}", None, "k", {"small": ModelResult(1.0), "big": ModelResult(1.0)})
        for i in range(50)
    ]
    with pytest.raises(DatasetError, match="needs prompt text"):
        LearnedRouter.train(rows, LADDER, threshold=0.5)
