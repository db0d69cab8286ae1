"""Loaders: each source format recognised from its content and mapped into the neutral form."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tierwise.evaluation.dataset import DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.loaders import detect_format, dump_rows, load_dataset
from tierwise.evaluation.prices import load_price_file, normalise_model_name, price_dataset
from tierwise.pricing import ModelPrices


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


# -- fixture folders, one per format -------------------------------------------------------------


def routerbench_folder(root: Path) -> Path:
    folder = root / "rb"
    folder.mkdir()
    models = ["m-cheap", "m-strong"]
    header = ["", "sample_id", "prompt", "eval_name"]
    header += models + [f"{m}|model_response" for m in models] + [f"{m}|total_cost" for m in models]
    header += ["oracle_model_to_route_to"]
    train = [
        [
            0,
            "arc.1",
            "['Q1?\\nA) x\\nB) y']",
            "arc-challenge",
            1.0,
            1.0,
            "['A']",
            "['A']",
            1e-5,
            2e-4,
            "m-cheap",
        ],
        [
            1,
            "arc.2",
            "['Q2?']",
            "arc-challenge",
            0.0,
            1.0,
            "['B\\n']",
            "['A']",
            1e-5,
            2e-4,
            "m-strong",
        ],
        [2, "mbpp.1", "['Write f']", "mbpp", "", 1.0, "['def f(): pass']", "['x']", 1e-5, 2e-4, ""],
    ]
    write_csv(folder / "arc_challenge_train.csv", header, train[:2])
    write_csv(folder / "mbpp_train.csv", header, train[2:])
    test = [[0, "arc.9", "['Q9?']", "arc-challenge", 1.0, 0.0, "['C']", "['D']", 2e-5, 3e-4, ""]]
    write_csv(folder / "arc_challenge_test.csv", header, test)
    return folder


def test_routerbench_rows_scores_costs_and_splits(tmp_path: Path) -> None:
    """List-literal prompts and responses are unpacked, blank scores dropped, USD kept exact."""
    folder = routerbench_folder(tmp_path)
    assert detect_format(folder) == "routerbench"
    ds = load_dataset(folder)
    # files in name order (test before train); mbpp.1 has a blank score
    assert [r.prompt_id for r in ds.rows] == ["arc.9", "arc.1", "arc.2"]
    assert ds.row("arc.1").prompt == "Q1?\nA) x\nB) y"
    assert ds.row("arc.2").results["m-cheap"] == ModelResult(
        score=0.0, response="B\n", cost_usd=Decimal("1e-5"), input_tokens=1, output_tokens=1
    )
    assert ds.row("arc.1").split == "train" and ds.row("arc.9").split == "test"
    assert ds.formats["arc-challenge"] == "choice"
    assert any("1 rows with a blank" in n for n in ds.notes)
    only_test = load_dataset(folder, split="test")
    assert [r.prompt_id for r in only_test.rows] == ["arc.9"]
    with pytest.raises(DatasetError, match="no 'dev' split"):
        load_dataset(folder, split="dev")


def test_routellm_folder_drops_contaminated_prompts(tmp_path: Path) -> None:
    """MMLU CSVs, GSM8K responses and MT-Bench judgements load; contaminated prompts are dropped."""
    root = tmp_path / "rl"
    (root / "mmlu").mkdir(parents=True)
    (root / "gsm8k").mkdir()
    (root / "mt").mkdir()
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    write_csv(
        root / "mmlu" / "mmlu_anatomy.csv",
        ["prompt", weak, strong],
        [["Q a", "True", "True"], ["Q b", "False", "True"], ["leaked", "True", "False"]],
    )
    write_jsonl(
        root / "mmlu" / "contaminated_prompts.jsonl",
        [{"train_prompt": "x", "eval_prompt": "leaked"}],
    )
    write_csv(
        root / "gsm8k" / "gsm8k_responses.csv",
        ["prompt", weak, strong, f"{weak}_response", f"{strong}_response"],
        [["2+2?", "False", "True", "5", "4"]],
    )
    write_jsonl(
        root / "mt" / "question.jsonl",
        [{"question_id": 81, "category": "writing", "turns": ["Write", "Again"]}],
    )

    def judge_prompt(model: str, turn: int) -> str:
        """What FastChat's GPT-4 judge was shown: the question and the answer it graded (turn 1),
        or the whole two-turn conversation (turn 2)."""
        first, second = f"{model} wrote a poem", f"{model} wrote it again, longer"
        if turn == 1:
            return (
                "[Instruction]\nRate it.\n\n[Question]\nWrite\n\n[The Start of Assistant's "
                f"Answer]\n{first}\n[The End of Assistant's Answer]"
            )
        return (
            "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nWrite\n\n"
            f"### Assistant A:\n{first}\n\n### User:\nAgain\n\n### Assistant A:\n{second}\n\n"
            "<|The End of Assistant A's Conversation with User|>"
        )

    judgements = [
        {
            "question_id": 81,
            "model": m,
            "judge": "x",
            "score": s,
            "turn": t,
            "judgment": "",
            "user_prompt": judge_prompt(m, t),
        }
        for m, s in ((weak, 6), (strong, 9))
        for t in (1, 2)
    ]
    write_jsonl(root / "mt" / "judgements.jsonl", judgements)
    assert detect_format(root) == "routellm"
    ds = load_dataset(root)
    kinds = sorted({r.kind for r in ds.rows})
    assert kinds == ["gsm8k", "mmlu:anatomy", "mt-bench:writing"]
    assert [r.prompt for r in ds.rows if r.source == "mmlu"] == ["Q a", "Q b"]
    mt = ds.row("mt-bench/81/2")
    assert mt.prompt == "Again" and mt.results[strong].score == pytest.approx(0.9)
    # The judged answer is read back from the judge's prompt; turn 2's input is turn 1 too.
    assert mt.results[strong].response == f"{strong} wrote it again, longer"
    assert mt.results[strong].output_tokens == -(-len(f"{strong} wrote it again, longer") // 4)
    first = ds.row("mt-bench/81/1").results[weak]
    assert first.response == f"{weak} wrote a poem" and first.input_tokens == 2  # "Write"
    assert mt.results[weak].input_tokens is not None
    assert mt.results[weak].input_tokens > first.input_tokens + first.output_tokens  # type: ignore[operator]
    # MMLU: RouteLLM generated one token per question, so every call has its output tokens.
    assert all(
        r.results[m].output_tokens == 1 for r in ds.rows if r.source == "mmlu" for m in r.results
    )
    assert ds.row("gsm8k/0").results[weak].response == "5"
    assert ds.default_ladder == Ladder(("cheap", "strong"), (weak, strong))
    assert any("'mmlu': 1" in n for n in ds.notes)


def test_mmlu_pro_tables_told_apart_by_values(tmp_path: Path) -> None:
    """Correctness, predicted letters and output lengths are recognised by what they hold."""
    folder = tmp_path / "mp"
    folder.mkdir()
    head = ["question_id", "category", "small", "big"]
    write_csv(folder / "a.csv", head, [[1, "math", 1, 0], [2, "law", 0, ""]])
    write_csv(folder / "b.csv", head, [[1, "math", "C", "B"], [2, "law", "", "D"]])
    write_csv(folder / "c.csv", head, [[1, "math", 400, 800], [2, "law", 120, 50]])
    write_jsonl(
        folder / "q.jsonl",
        [
            {
                "question_id": 1,
                "category": "math",
                "question": "1+1?",
                "options": ["1", "2", "3"],
                "answer": "B",
            },
        ],
    )
    assert detect_format(folder) == "mmlu_pro"
    ds = load_dataset(folder)
    first = ds.row("mmlu-pro/1")
    assert first.prompt == "1+1?\nA. 1\nB. 2\nC. 3"
    assert first.results["small"] == ModelResult(1.0, "The answer is (C).", None, 5, 100)
    second = ds.row("mmlu-pro/2")
    assert "big" not in second.results  # blank correctness: no record
    assert second.results["small"].response == "(no answer found)"
    assert ds.formats == {"math": "choice", "law": "choice"}


def test_routerarena_and_wildbench(tmp_path: Path) -> None:
    """RouterArena joins per-model files on global_index; WildBench scales 1-10 to 0-1."""
    ra = tmp_path / "ra"
    ra.mkdir()
    for model, score, cost in (("m1", 1, 0.001), ("m2", 0, 0.0001)):
        write_jsonl(
            ra / f"{model}-x.jsonl",
            [
                {
                    "global_index": "MMLU_1",
                    "question": "Q?\nA. x\nB. y",
                    "llm_selected": model,
                    "generated_answer": "A",
                    "token_usage": {"input_tokens": 10, "output_tokens": 2},
                    "evaluation_result": {"score": score, "inference_cost": cost},
                }
            ],
        )
    assert detect_format(ra) == "routerarena"
    ds = load_dataset(ra)
    row = ds.row("MMLU_1")
    assert row.results["m1"] == ModelResult(1.0, "A", Decimal("0.001"), 10, 2)
    assert ds.formats["MMLU"] == "choice"

    wb = tmp_path / "wb"
    wb.mkdir()
    write_csv(wb / "s.csv", ["session_id", "a", "b"], [["x1", 7, 3], ["x2", "", 10]])
    write_csv(wb / "o.csv", ["session_id", "a", "b"], [["x1", 4000, 12], ["x2", 1, 400]])
    assert detect_format(wb) == "wildbench"
    ds = load_dataset(wb)
    assert ds.row("wildbench/x1").results["a"] == ModelResult(0.7, output_tokens=1000)
    assert "a" not in ds.row("wildbench/x2").results
    assert ds.rows[0].prompt is None and not ds.has_text


def test_jsonl_round_trip(tmp_path: Path) -> None:
    """dump_rows writes what load_dataset reads back, header ladder included."""
    rows = [
        Row(
            "t1",
            "Extract the total",
            "extract",
            {
                "small": ModelResult(1.0, '{"total": 3}', Decimal("0.00012"), 10, 5),
                "big": ModelResult(1.0, '{"total": 3}', Decimal("0.003"), 10, 5),
            },
            split="test",
        ),
        Row("t2", None, "classify", {"small": ModelResult(0.0), "big": ModelResult(0.5)}),
    ]
    buf = io.StringIO()
    assert dump_rows(rows, buf, name="fleet", ladder={"cheap": "small", "strong": "big"}) == 2
    (tmp_path / "logs.jsonl").write_text(buf.getvalue(), encoding="utf-8")
    assert detect_format(tmp_path) == "jsonl"
    ds = load_dataset(tmp_path)
    assert ds.name == "fleet"
    assert ds.default_ladder == Ladder(("cheap", "strong"), ("small", "big"))
    assert ds.rows == tuple(rows)


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    """A score outside 0..1 is an error that names the file and line."""
    write_jsonl(tmp_path / "x.jsonl", [{"prompt_id": "a", "results": {"m": {"score": 7}}}])
    with pytest.raises(DatasetError, match=r"x\.jsonl:1: .*expected 0\.\.1"):
        load_dataset(tmp_path)


def test_missing_path_says_where_to_get_data(tmp_path: Path) -> None:
    """A missing folder is a DatasetError that points at the public sources."""
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path / "nowhere")
    message = str(exc.value)
    assert "does not exist" in message and "github.com/lm-sys/RouteLLM" in message
    assert "docs/eval-format.md" in message


def test_unknown_format(tmp_path: Path) -> None:
    """A folder of unrelated files is rejected with the formats that are known."""
    (tmp_path / "notes.txt").write_text("hello")
    write_csv(tmp_path / "t.csv", ["a", "b"], [[1, 2]])
    with pytest.raises(DatasetError, match="no known results format"):
        load_dataset(tmp_path)


def test_prices_file_and_name_matching(tmp_path: Path) -> None:
    """Unpriced results get tokens × prices; loose names match; recorded costs stay."""
    prices = tmp_path / "cost.json"
    prices.write_text(
        json.dumps(
            {
                "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo": {
                    "input_token_price_per_million": 1,
                    "output_token_price_per_million": 2,
                },
                "gpt-4o": {"input": 5, "output": 15},
            }
        )
    )
    table = load_price_file(prices)
    assert table["gpt-4o"] == ModelPrices.of("gpt-4o", "5", "15", source="file:cost.json")
    assert normalise_model_name("Meta-Llama-3_1-70B-Instruct") == "llama-3-1-70b-instruct"
    rows = [
        Row(
            "r",
            "q",
            "k",
            {
                "Meta-Llama-3_1-70B-Instruct": ModelResult(
                    1.0, input_tokens=1000, output_tokens=500
                ),
                "recorded": ModelResult(1.0, cost_usd=Decimal("0.5"), output_tokens=10),
                "nameless": ModelResult(1.0, output_tokens=10),
            },
        )
    ]
    from tierwise.evaluation.dataset import Dataset

    ds = Dataset(
        "t",
        tuple(rows),
        ("Meta-Llama-3_1-70B-Instruct", "recorded", "nameless"),
        Ladder(("a",), ("recorded",)),
    )
    priced, matches = price_dataset(ds, table, None)
    res = priced.rows[0].results
    assert res["Meta-Llama-3_1-70B-Instruct"].cost_usd == Decimal("0.002")  # 1000×1 + 500×2 per M
    assert res["recorded"].cost_usd == Decimal("0.5")
    assert res["nameless"].cost_usd is None
    assert matches["Meta-Llama-3_1-70B-Instruct"].how == "normalised"
    assert any("no price for nameless" in n for n in priced.notes)


@pytest.mark.parametrize(
    ("folder", "fmt", "rows"),
    [
        ("routerbench_subset", "routerbench", 2205),
        ("routellm/gsm8k", "routellm", 1307),
        ("routerarena_partial", "routerarena", 809),
        ("wildbench_partial", "wildbench", 1024),
    ],
)
def test_real_folders(folder: str, fmt: str, rows: int, data_path: Callable[[str], Path]) -> None:
    """The shared data folders load with the row counts their READMEs give (after drops)."""
    path = data_path(folder)
    assert detect_format(path) == fmt
    ds = load_dataset(path)
    assert len(ds) == rows
    assert all(m in ds.models for m in ds.default_ladder.models)


def test_automatic_ladder_uses_priced_models_when_the_preset_has_none() -> None:
    """A default ladder with an unpriced model is replaced by priced models (cheapest, best and
    the best in between), with a note; a fully priced default stays; with fewer than two priced
    models the default stays and the note says how to get costs."""
    from tierwise.evaluation.dataset import Dataset
    from tierwise.evaluation.prices import priced_ladder

    def row(i: int, priced: dict[str, tuple[float, str | None]]) -> Row:
        return Row(
            f"q{i}",
            "text",
            "k",
            {
                m: ModelResult(score, cost_usd=Decimal(cost) if cost else None)
                for m, (score, cost) in priced.items()
            },
        )

    models = {
        "free-small": (0.3, None),
        "free-big": (0.6, None),
        "cheap": (0.5, "0.001"),
        "middle": (0.7, "0.004"),
        "best": (0.8, "0.02"),
        "pricey-bad": (0.4, "0.05"),
    }
    rows = tuple(row(i, models) for i in range(10))
    preset = Ladder(("cheap", "mid", "strong"), ("free-small", "free-big", "best"))
    ds = Dataset("t", rows, tuple(models), preset)
    ladder, note = priced_ladder(ds)
    assert ladder == Ladder(("cheap", "mid", "strong"), ("cheap", "middle", "best"))
    assert note is not None and "no price for free-small, free-big" in note
    fine = Dataset("t", rows, tuple(models), Ladder(("a", "b"), ("cheap", "best")))
    assert priced_ladder(fine) == (fine.default_ladder, None)
    lonely = {"free-small": (0.3, None), "free-big": (0.6, None), "best": (0.8, "0.02")}
    bare = Dataset("t", tuple(row(i, lonely) for i in range(5)), tuple(lonely), preset)
    kept, why = priced_ladder(bare)
    assert kept == preset and why is not None and "pass --prices FILE" in why
