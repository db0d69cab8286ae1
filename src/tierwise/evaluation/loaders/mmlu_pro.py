"""MMLU-Pro per-question results for many models (TIGER-AI-Lab/MMLU-Pro eval results).

Wide tables keyed ``question_id, category`` with one column per model: correctness (1/0, blank
when the model has no record), the predicted letter, and the output length in characters; plus
``questions.jsonl`` with the question text and its options. Tables are told apart by their
values, not their file names. The recorded "response" of a model is its predicted letter, so
agreement between models can be checked; costs come from lengths (characters / 4) and a price
table (``--prices``) or the catalog.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.loaders._util import (
    csv_header,
    csv_rows,
    estimate_tokens,
    files,
    first_json_line,
    generic_ladder,
    pick_split,
    split_of,
)

NAME = "mmlu_pro"
_KEYS = ["question_id", "category"]
_PRESET = (
    ("cheap", "Meta-Llama-3_1-8B-Instruct"),
    ("mid", "Meta-Llama-3_1-70B-Instruct"),
    ("strong", "gpt-4o-2024-05-13"),
)
_LETTER = re.compile(r"^[A-J]$")


def _tables(path: Path) -> dict[str, Path]:
    """Which wide CSV holds what: ``correct``, ``pred`` and ``chars``, judged by their values."""
    found: dict[str, Path] = {}
    for p in files(path, "*.csv"):
        if csv_header(p)[:2] != _KEYS:
            continue
        values: list[str] = []
        for i, rec in enumerate(csv_rows(p)):
            values.extend(v for k, v in rec.items() if k not in _KEYS and v != "")
            if i >= 20:
                break
        if not values:
            continue
        if all(v in ("0", "1") for v in values):
            found.setdefault("correct", p)
        elif all(_LETTER.match(v) for v in values):
            found.setdefault("pred", p)
        elif all(v.isdigit() for v in values):
            found.setdefault("chars", p)
    return found


def detect(path: Path) -> bool:
    """A folder with a ``question_id, category, <models>`` table of 0/1 correctness."""
    return "correct" in _tables(path)


def _questions(path: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for p in files(path, "*.jsonl"):
        head = first_json_line(p)
        if not head or not {"question_id", "question"} <= head.keys():
            continue
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                q = json.loads(line)
                options = q.get("options") or []
                letters = "ABCDEFGHIJ"
                body = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options[:10]))
                texts[str(q["question_id"])] = f"{q['question']}\n{body}".strip()
    return texts


def load(path: Path, split: str | None = None) -> Dataset:
    """Read the correctness table, predicted letters, output lengths and question texts."""
    tables = _tables(path)
    if "correct" not in tables:
        raise DatasetError(f"{path}: no MMLU-Pro correctness table found")
    pick_split([split_of(tables["correct"])], split, path)
    texts = _questions(path)
    preds = _wide(tables["pred"]) if "pred" in tables else {}
    chars = _wide(tables["chars"]) if "chars" in tables else {}
    models = [h for h in csv_header(tables["correct"]) if h not in _KEYS]
    rows: list[Row] = []
    for rec in csv_rows(tables["correct"]):
        qid = rec["question_id"]
        prompt = texts.get(qid)
        results: dict[str, ModelResult] = {}
        for m in models:
            value = rec.get(m, "")
            if value == "":
                continue
            letter = preds.get(qid, {}).get(m, "")
            length = chars.get(qid, {}).get(m, "")
            response = f"The answer is ({letter})." if letter else "(no answer found)"
            results[m] = ModelResult(
                score=float(value),
                response=response if preds else None,
                input_tokens=estimate_tokens(prompt),
                output_tokens=-(-int(length) // 4) if length.isdigit() else None,
            )
        rows.append(
            Row(
                prompt_id=f"mmlu-pro/{qid}",
                prompt=prompt,
                kind=rec.get("category") or "unknown",
                results=results,
                split=split_of(tables["correct"]),
                source="mmlu-pro",
            )
        )
    notes = [
        "cost: output length / 4 and question text / 4 tokens, priced by --prices or the catalog"
        " (the 5-shot chain-of-thought prompt is longer than the question, so input is low)",
        "response: the model's predicted letter only",
    ]
    return Dataset(
        name=NAME,
        rows=tuple(rows),
        models=tuple(models),
        default_ladder=_ladder(rows, models),
        split=split,
        path=str(path),
        formats={k: "choice" for k in {r.kind for r in rows}},
        pass_threshold=0.5,
        notes=tuple(notes),
    )


def _wide(path: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for rec in csv_rows(path):
        qid = rec.pop("question_id")
        rec.pop("category", None)
        out[qid] = rec
    return out


def _ladder(rows: list[Row], models: list[str]) -> Ladder:
    if all(m in models for _, m in _PRESET):
        return Ladder.of(_PRESET)
    quality = {
        m: sum(r.results[m].score for r in rows if m in r.results)
        / max(1, sum(m in r.results for r in rows))
        for m in models
    }
    return generic_ladder(models, quality, None)
