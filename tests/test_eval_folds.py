"""Folds: every row reported once by models that never saw it, figures with their spread, and
each fold's dev point set against its calibration target."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tierwise.evaluation.dataset import Dataset, Ladder, ModelResult, Row
from tierwise.evaluation.folds import split
from tierwise.evaluation.report import CLAIM_SHARE, EvalReport, evaluate

LADDER = Ladder(("cheap", "strong"), ("small", "big"))


def rows(n: int, seed: int = 0) -> list[Row]:
    """Number answers; the small model's hedges are its wrong answers, the big one is right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = "sum" if i % 3 else "count"
        right = rng.random() < 0.6
        small = f"so the answer is {rng.randint(1, 60)}" if right else "not sure, maybe"
        out.append(
            Row(
                f"r{i}",
                f"{kind} question {i} about {rng.choice(['apples', 'trains', 'coins'])}",
                kind,
                {
                    "small": ModelResult(float(right), small, Decimal("0.001")),
                    "big": ModelResult(1.0, "the answer is 4", Decimal("0.01")),
                },
            )
        )
    return out


def write_folder(folder: Path, data: list[Row]) -> Path:
    folder.mkdir()
    header = {
        "tierwise_eval": 1,
        "ladder": dict(LADDER),
        "formats": {"sum": "number", "count": "number"},
    }
    lines = [json.dumps(header)]
    for r in data:
        results = {
            m: {"score": x.score, "response": x.response, "cost_usd": str(x.cost_usd)}
            for m, x in r.results.items()
        }
        record = {"prompt_id": r.prompt_id, "prompt": r.prompt, "kind": r.kind, "results": results}
        lines.append(json.dumps(record))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(("folds", "limit"), [(1, None), (3, None), (5, None), (4, 30)])
def test_every_row_is_reported_once_and_never_trained_on(folds: int, limit: int | None) -> None:
    data = Dataset("t", tuple(rows(120)), LADDER.models, LADDER)
    specs, what = split(data, folds, seed=0, limit=limit, ladder=LADDER)
    reported = [r.prompt_id for s in specs for r in s.report]
    assert len(reported) == len(set(reported))
    for s in specs:
        assert not {r.prompt_id for r in s.train} & {r.prompt_id for r in s.report}
    if folds > 1 and limit is None:
        assert sorted(reported) == sorted(r.prompt_id for r in data.rows)
        assert all(len(s.train) == 120 - len(s.report) for s in specs)
        assert what.startswith(f"{folds} folds")
    if limit is not None:
        assert len(reported) == limit and all(len(s.train) <= 4 * limit for s in specs)
    if folds == 1:
        assert len(specs) == 1 and len(reported) == 24 and "dev split" in what


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> EvalReport:
    folder = write_folder(tmp_path_factory.mktemp("d") / "set", rows(150))
    return evaluate(folder, folds=3)


def test_pooled_figures_carry_their_fold_spread(folded: EvalReport) -> None:
    """Each strategy: three fold figures whose rows add up and whose mean is the pooled one."""
    report = folded
    assert report.folds == 3
    for s in report.strategies:
        assert [f.n for f in s.folds] == [50, 50, 50]
        assert s.quality.value == pytest.approx(np.mean([f.quality for f in s.folds]))
        found = s.spread()
        assert found is not None
        (low, high), shares = found
        assert low <= s.quality.value <= high
        assert shares is not None and shares[0] <= (s.cost_share or 0) + 1e-9 <= shares[1] + 2e-9


def test_each_fold_reports_its_calibration_target_and_dev_point(folded: EvalReport) -> None:
    """Router and verifier: the cross-validated calibration on the fold's training rows and the
    dev point on its own rows, which equals that strategy's fold figure."""
    report = folded
    info = report.router
    assert info is not None and len(info["folds"]) == 3
    by_name = {s.name: s for s in report.strategies}
    for i, fold in enumerate(info["folds"]):
        assert fold["train_rows"] == 100 and fold["report_rows"] == 50
        ver = fold["verifier"]
        cal = ver["calibration"]
        assert cal["folds"] == 5 and cal["rows"] == 100
        assert cal["held_out_quality"] is not None
        assert cal["target_quality"] == pytest.approx(cal["top_quality"] - 0.01)
        dev = ver["dev"]
        assert dev["rows"] == 50
        figure = by_name["cascade: learned verifier"].folds[i]
        assert dev["quality"] == pytest.approx(figure.quality)
        assert fold["router"]["calibration"]["folds"] == 5
    best = report.as_dict()["best_within"]
    assert best["max_cost_share"] == CLAIM_SHARE and best["strategy"] is not None


def test_a_cost_budget_calibrates_every_fold_within_it(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "set", rows(120, seed=4))
    report = evaluate(folder, folds=2, max_cost_share=0.3)
    assert report.objective["max_cost_share"] == 0.3
    assert report.router is not None
    for fold in report.router["folds"]:
        cal = fold["verifier"]["calibration"]
        assert cal["objective"]["max_cost_share"] == 0.3
        assert cal["cost"] <= 0.3 * cal["top_cost"] + 1e-12


def test_the_table_shows_fold_ranges_the_claim_and_the_calibration_per_fold(
    folded: EvalReport, capsys: pytest.CaptureFixture[str]
) -> None:
    from tierwise.cli.eval import render

    render(folded)
    out = capsys.readouterr().out
    assert "fold ranges over 3 folds" in out
    assert "best at ≤ 40% of big's cost:" in out
    assert "dev vs target" in out and "not chosen on" in out
    assert out.count(" verifier ") >= 3  # one calibration row per fold


def test_saved_models_from_a_folded_run_are_trained_on_every_training_row(tmp_path: Path) -> None:
    """With several folds, --save-router writes models fitted on all the rows the folds trained
    on (each fold's own models only ever saw 2/3 of them), and they load back."""
    from tierwise.evaluation.learned import LearnedRouter

    folder = write_folder(tmp_path / "set", rows(90, seed=5))
    saved = tmp_path / "router.json"
    report = evaluate(folder, folds=3, save_router=saved)
    assert report.router is not None and report.router["saved_to"] == str(saved)
    router = LearnedRouter.load(saved)
    assert router.calibration is not None and router.calibration.rows == 90
    verifier = json.loads(saved.read_text(encoding="utf-8"))["verifier"]
    assert verifier["calibration"]["rows"] == 90
    again = evaluate(folder, router_file=saved)
    assert again.evaluated_on == "all 90 rows" and again.folds == 1
