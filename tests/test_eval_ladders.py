"""A ladder per source for the verifier cascade: chosen on training folds only when it wins
there, replayed through the real cascade on each source's own ladder."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

from tierwise.evaluation.dataset import Ladder, ModelResult, Row
from tierwise.evaluation.ladders import VERIFIER_LADDERS, candidate_models, two_tier
from tierwise.evaluation.loaders.jsonl import dump_rows
from tierwise.evaluation.report import evaluate

TWO = Ladder(("cheap", "strong"), ("small", "big"))
TOPICS = ["rivers", "planets", "verbs", "metals", "birds", "poems", "bridges", "clouds"]
WORKED = "working it out step by step the answer is {}"
HEDGE = "i am not certain, perhaps it depends on the context"


def rows(n: int, seed: int, prefix: str, *, side: bool = True) -> list[Row]:
    """Two sources. On ``alpha`` the ladder's small model is right 60% of the time and says so
    by a worked answer; on ``beta`` it always hedges and is wrong, while the off-ladder ``side``
    model (as cheap) behaves like small does on alpha. The big model is always right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = "alpha" if i % 2 == 0 else "beta"
        right = rng.random() < 0.6
        good = (WORKED.format(rng.randint(1, 50)), 1.0) if right else (HEDGE, 0.0)
        small = good if kind == "alpha" else (HEDGE, 0.0)
        other = good if kind == "beta" else (HEDGE, 0.0)
        results = {
            "small": ModelResult(small[1], small[0], Decimal("0.001")),
            "big": ModelResult(1.0, "the answer is 7", Decimal("0.01")),
        }
        if side:
            results["side"] = ModelResult(other[1], other[0], Decimal("0.001"))
        prompt = f"question about {rng.choice(TOPICS)} number {rng.randint(0, 99)}"
        out.append(Row(f"{prefix}{i}", prompt, kind, results))
    return out


def write(folder: Path, data: list[Row]) -> Path:
    folder.mkdir()
    with (folder / "logs.jsonl").open("w", encoding="utf-8") as out:
        dump_rows(data, out, ladder=dict(TWO), formats={"alpha": "number", "beta": "number"})
    return folder


def test_each_source_s_best_cheap_model_off_the_ladder_is_a_candidate() -> None:
    """beta's best cheap model is `side`; alpha's is the ladder's own bottom (no candidate)."""
    assert candidate_models(rows(200, 1, "c"), TWO) == ["side"]
    assert candidate_models(rows(200, 1, "c", side=False), TWO) == []
    assert two_tier("org/side-1.5", TWO) == Ladder(
        ("alt-side-1-5", "strong"), ("org/side-1.5", "big")
    )


def test_a_source_climbs_its_own_ladder_when_that_wins_on_training_folds(tmp_path: Path) -> None:
    """Within a 40% budget, the verifier cascade on the run's ladder must send most beta rows
    to the top (its small model always hedges); with a ladder per source beta climbs side → big,
    so the same budget buys more quality. Every beta answer comes from side or big."""
    train = write(tmp_path / "train", rows(240, 2, "r"))
    test = write(tmp_path / "test", rows(120, 3, "t"))
    report = evaluate(test, train=train, max_cost_share=0.4)
    plain = report.strategy("cascade: learned verifier")
    per_source = report.strategy(VERIFIER_LADDERS)
    assert per_source.cost_share is not None and per_source.cost_share <= 0.42
    assert per_source.quality.value > plain.quality.value + 0.1
    assert report.router is not None
    [fold] = report.router["folds"]
    assert fold["ladders"]["by_kind"] == {"alpha": ["small", "big"], "beta": ["side", "big"]}


def test_each_row_is_replayed_on_its_own_source_s_ladder(tmp_path: Path) -> None:
    """Through the real cascade: alpha rows answered by small or big, beta rows by side or
    big, each priced as recorded (a side answer costs its call, a climb both calls)."""
    from tierwise.evaluation.calibration import Objective
    from tierwise.evaluation.dataset import Dataset
    from tierwise.evaluation.ladders import fit_source_ladders, replay_source_ladders
    from tierwise.evaluation.strategies import Replayer
    from tierwise.evaluation.verifier import ResponseVerifier
    from tierwise.ledger import open_ledger

    train, report = rows(240, 2, "r"), rows(60, 3, "t")
    formats = {"alpha": "number", "beta": "number"}
    goal = Objective(max_cost_share=0.4)
    verifier = ResponseVerifier.train(train, TWO, formats, threshold=0.5, objective=goal)
    found = fit_source_ladders(train, TWO, formats, verifier, threshold=0.5, objective=goal)
    assert found is not None
    dataset = Dataset("two", tuple(train + report), ("small", "big", "side"), TWO, formats=formats)
    with open_ledger(tmp_path / "replay.db") as ledger:
        run = replay_source_ladders(found, dataset, Replayer(dataset, TWO, ledger=ledger), report)
    assert [t.prompt_id for t in run.traces] == [r.prompt_id for r in report]
    for row, trace in zip(report, run.traces, strict=True):
        answers = [s.model for s in trace.steps if not s.validator]
        assert set(answers) <= ({"small", "big"} if row.kind == "alpha" else {"side", "big"})
        assert trace.cost is not None
        paid = sum(float(row.results[m].cost_usd or 0) for m in answers)
        assert abs(trace.cost - paid) < 1e-9
    assert any(t.model == "side" for t in run.traces)


def test_no_ladder_per_source_without_a_better_cheap_model(tmp_path: Path) -> None:
    """When no source has a cheap model better than the ladder's own, the strategy is absent."""
    train = write(tmp_path / "train", rows(240, 2, "r", side=False))
    test = write(tmp_path / "test", rows(60, 3, "t", side=False))
    report = evaluate(test, train=train, max_cost_share=0.4)
    assert VERIFIER_LADDERS not in [s.name for s in report.strategies]
