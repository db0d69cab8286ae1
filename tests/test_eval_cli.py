"""`tierwise eval` on the shared data folders (small --limit), its JSON, plots and errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app

runner = CliRunner()
DataPath = Callable[[str], Path]


@pytest.fixture(scope="module")
def rb(data_path: DataPath) -> Path:
    return data_path("routerbench_subset")


def run_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(build_app(), ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["strategies"]}


@pytest.fixture(scope="module")
def routerbench_report(rb: Path) -> dict[str, Any]:
    return run_json(str(rb), "--train", str(rb), "--limit", "40")


def test_routerbench_runs_every_strategy(routerbench_report: dict[str, Any]) -> None:
    """Single models, bounds, policy, both cascades and the learned router, on dev rows only."""
    s = by_name(routerbench_report)
    assert routerbench_report["reference"] == "gpt-4-1106-preview"
    assert s["gpt-4-1106-preview"]["cost_share"] == pytest.approx(1.0)
    for name in (
        "oracle (bound)",
        "perfect-verifier cascade (bound)",
        "policy by kind (fitted)",
        "cascade: checks",
        "cascade: checks + agreement",
        "learned router",
        "learned router + cascade",
    ):
        assert name in s, name
        assert {"quality", "cost_per_query_usd", "cost_share"} <= s[name].keys()
        assert s[name]["n"] == 40
        # Five folds of 8 rows, each reported by models trained without them.
        assert [f["n"] for f in s[name]["folds"]] == [8] * 5
        assert s[name]["quality"] == pytest.approx(
            np.mean([f["quality"] for f in s[name]["folds"]])
        )
    assert routerbench_report["evaluated_on"].startswith("5 folds of the folder")
    assert routerbench_report["folds"] == 5
    assert s["oracle (bound)"]["quality"] >= max(v["quality"] for v in s.values())
    assert len(s["mistralai/mixtral-8x7b-chat"]["quality_ci"]) == 2
    assert "temporary" in routerbench_report["ledger"]


def test_same_seed_same_numbers(rb: Path) -> None:
    """A second run with the same seed reproduces every number; another seed draws other folds."""
    args = (str(rb), "--limit", "12", "--folds", "2")
    first = run_json(*args)
    assert run_json(*args)["strategies"] == first["strategies"]
    other = run_json(*args, "--seed", "1")
    assert other["strategies"] != first["strategies"]


def test_two_model_set_has_routing_curves_and_random_sanity_line(data_path: DataPath) -> None:
    """GSM8K (RouteLLM): APGR/CPT for the learned router, with a random router near 0.5."""
    report = run_json(
        str(data_path("routellm") / "gsm8k"),
        "--limit",
        "150",
        "--folds",
        "1",
        "--prices",
        str(data_path("routerarena_partial") / "cost.json"),
    )
    [section] = report["routing"]
    routers = {r["name"]: r for r in section["routers"]}
    assert routers["random router (mean of 100)"]["apgr"] == pytest.approx(0.5, abs=0.05)
    assert routers["oracle router (bound)"]["apgr"] > 1.0
    assert routers["learned router"]["apgr"] is not None
    assert routers["cascade: checks"]["operating_point"] is not None
    assert by_name(report)["gpt-4-1106-preview"]["cost_per_query_usd"] > 0  # priced by file


def test_quality_only_set_without_text(tmp_path: Path, data_path: DataPath) -> None:
    """WildBench: no prompt text and no prices — singles, bounds, quality only; a plot still."""
    plot = tmp_path / "wb.png"
    report = run_json(str(data_path("wildbench_partial")), "--limit", "80", "--plot", str(plot))
    s = by_name(report)
    assert "learned router" not in s and "cascade: checks" not in s
    assert "perfect-verifier cascade (bound)" in s
    assert s["reka-core-20240501"]["cost_per_query_usd"] is None
    assert any("no prompt text" in n for n in report["notes"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_router_runs_unchanged_on_a_test_folder(tmp_path: Path, rb: Path) -> None:
    """--save-router on the train folder; --router (or --train) on a same-format test folder."""
    test_dir = tmp_path / "rb_test"
    test_dir.mkdir()
    with (rb / "arc_challenge_train.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [next(reader) for _ in range(30)]
    with (test_dir / "arc_challenge_test.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    saved = tmp_path / "router.json"
    first = run_json(str(rb), "--limit", "30", "--folds", "1", "--save-router", str(saved))
    assert first["router"]["saved_to"] == str(saved)
    with_router = run_json(str(test_dir), "--router", str(saved))
    assert with_router["evaluated_on"] == "all 30 rows"
    assert "learned router" in by_name(with_router)
    with_train = run_json(str(test_dir), "--train", str(rb), "--limit", "30", "--folds", "1")
    assert "trained on" in with_train["evaluated_on"]
    assert "learned router + cascade" in by_name(with_train)


def test_out_folder_and_table(tmp_path: Path, data_path: DataPath) -> None:
    """--out writes report.json and plot.png; without --json a table is printed."""
    out = tmp_path / "out"
    arena = str(data_path("routerarena_partial"))
    result = runner.invoke(
        build_app(), ["eval", arena, "--limit", "40", "--folds", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "strategies" in result.stdout and "oracle (bound)" in result.stdout
    saved = json.loads((out / "report.json").read_text())
    assert {s["name"] for s in saved["strategies"]} >= {"claude-3-haiku-20240307", "oracle (bound)"}
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/data"], "does not exist"),
        (["RB", "--tiers", "cheap"], "expected NAME=MODEL"),
        (["RB", "--tiers", "cheap=nope,strong=gpt-4-1106-preview"], "without results"),
        (["RB", "--prices", "/nonexistent/cost.json"], "price file"),
    ],
)
def test_invalid_input_is_one_line_and_exit_2(
    args: list[str], message: str, data_path: DataPath
) -> None:
    """Bad paths and options fail with exit code 2 and one clear line, no traceback."""
    args = [str(data_path("routerbench_subset")) if a == "RB" else a for a in args]
    result = runner.invoke(build_app(), ["eval", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_router_for_another_ladder_is_refused(tmp_path: Path, rb: Path) -> None:
    """A router trained on other tiers cannot be used silently."""
    saved = tmp_path / "r.json"
    run_json(str(rb), "--limit", "20", "--folds", "1", "--save-router", str(saved))
    result = runner.invoke(
        build_app(),
        [
            "eval",
            str(rb),
            "--router",
            str(saved),
            "--tiers",
            "cheap=claude-v1,strong=gpt-4-1106-preview",
        ],
    )
    assert result.exit_code == 2 and "was trained for the ladder" in result.output


def test_help_has_an_example() -> None:
    """--help explains the command and shows an example."""
    result = runner.invoke(build_app(), ["eval", "--help"])
    assert result.exit_code == 0
    assert "Example: tierwise eval" in result.output


def test_replay_rows_go_to_the_given_ledger_marked_replay(
    tmp_path: Path, data_path: DataPath
) -> None:
    """--ledger keeps the replay ledger: every attempt is a replay (or validator) row."""
    import sqlalchemy as sa

    from tierwise.ledger import open_ledger

    book = tmp_path / "replay.db"
    arena = str(data_path("routerarena_partial"))
    report = run_json(arena, "--limit", "20", "--folds", "1", "--ledger", str(book))
    assert report["ledger"] == str(book)
    with open_ledger(book) as ledger, ledger.engine.connect() as conn:
        roles = dict(conn.execute(sa.text("select role, count(*) from tasks group by role")).all())
        assert set(roles) == {"replay"} and roles["replay"] >= 20
        assert ledger.stats()["tasks"] == 0  # live statistics do not see replays


README_RUNS = [
    ("routerbench_subset", []),
    ("routellm", ["--prices", "routerarena_partial/cost.json"]),
    ("mmlu_pro_31models", []),
    ("routerarena_partial", []),
]


@pytest.mark.parametrize(("folder", "extra"), README_RUNS)
def test_every_strategy_has_a_cost_on_every_dataset_with_tokens_or_costs(
    folder: str, extra: list[str], data_path: DataPath
) -> None:
    """The README's commands: every strategy, bound and ladder model is priced (RouteLLM's MMLU
    and MT-Bench rows included; MMLU-Pro's automatic ladder picks priced models)."""
    args = [
        str(data_path(a.split("/")[0]) / a.split("/", 1)[1]) if a.endswith(".json") else a
        for a in extra
    ]
    report = run_json(str(data_path(folder)), "--limit", "20", "--folds", "1", *args)
    ladder = set(report["ladder"].values())
    for s in report["strategies"]:
        if s["group"] != "single" or s["name"] in ladder:
            assert s["cost_per_query_usd"] is not None, (s["name"], report["notes"])
            assert s["cost_share"] is not None, s["name"]
    if folder == "mmlu_pro_31models" and not extra:
        assert any("using the priced ladder" in n for n in report["notes"])
    if folder == "routellm":
        assert any("MMLU costs are a lower bound" in n for n in report["notes"])
