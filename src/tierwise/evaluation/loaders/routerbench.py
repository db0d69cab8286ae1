"""RouterBench rows (withmartian/routerbench, as RouterDC's per-benchmark CSVs).

Each CSV holds one benchmark split (``arc_challenge_train.csv``): ``sample_id, prompt,
eval_name``, then per model ``<model>`` (0/1), ``<model>|model_response`` and
``<model>|total_cost`` (USD of that call at 2024 list prices). Prompts and responses are Python
list literals (one string per turn). Rows with a blank score or cost are dropped, as in the
source's own loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tierwise.evaluation.dataset import Dataset, Ladder, ModelResult, Row
from tierwise.evaluation.loaders._util import (
    csv_header,
    csv_rows,
    decimal_or_none,
    estimate_tokens,
    files,
    generic_ladder,
    pick_split,
    split_of,
)

NAME = "routerbench"
_RESERVED = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}
_PRESET = (
    ("cheap", "mistralai/mixtral-8x7b-chat"),
    ("mid", "zero-one-ai/Yi-34B-Chat"),
    ("strong", "gpt-4-1106-preview"),
)
FORMATS = {
    "arc-challenge": "choice",
    "winogrande": "choice",
    "hellaswag": "choice",
    "mmlu": "choice",
    "mbpp": "code",
    "gsm8k": "number",
}


def _is_routerbench(header: list[str]) -> bool:
    return {"sample_id", "prompt", "eval_name"} <= set(header) and any(
        h.endswith("|total_cost") for h in header
    )


def detect(path: Path) -> bool:
    """A folder holding CSVs with ``sample_id, prompt, eval_name`` and ``<model>|total_cost``."""
    return any(_is_routerbench(csv_header(p)) for p in files(path, "*.csv"))


def _turns(text: str) -> str:
    """The text of a list-literal field: its turns joined; the raw text when it is no literal."""
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n\n".join(value)
    return text


def _last_turn(text: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return str(value[-1])
    return text


def load(path: Path, split: str | None = None) -> Dataset:
    """Read every RouterBench CSV in *path* (only *split*'s files when given)."""
    sources = [p for p in files(path, "*.csv") if _is_routerbench(csv_header(p))]
    pick_split([split_of(p) for p in sources], split, path)
    rows: list[Row] = []
    models: list[str] = []
    dropped = 0
    for file in sources:
        file_split = split_of(file)
        if split is not None and file_split != split:
            continue
        header = csv_header(file)
        file_models = [h for h in header if "|" not in h and h not in _RESERVED]
        for m in file_models:
            if m not in models:
                models.append(m)
        for rec in csv_rows(file):
            row = _row(rec, file_models, file_split)
            if row is None:
                dropped += 1
            else:
                rows.append(row)
    notes = ["cost: recorded USD per call (RouterBench, 2024 list prices)"]
    if dropped:
        notes.append(f"{dropped} rows with a blank score or cost dropped")
    return Dataset(
        name=NAME,
        rows=tuple(rows),
        models=tuple(models),
        default_ladder=_ladder(rows, models),
        split=split,
        path=str(path),
        formats={k: FORMATS.get(k, "text") for k in {r.kind for r in rows}},
        pass_threshold=0.5,
        notes=tuple(notes),
    )


def _row(rec: dict[str, str], models: list[str], split: str) -> Row | None:
    prompt = _turns(rec.get("prompt", ""))
    results: dict[str, ModelResult] = {}
    for m in models:
        score, cost = rec.get(m, ""), decimal_or_none(rec.get(f"{m}|total_cost"))
        if score == "" or cost is None:
            return None
        raw = rec.get(f"{m}|model_response")
        response = _last_turn(raw) if raw else None
        results[m] = ModelResult(
            score=float(score),
            response=response,
            cost_usd=cost,
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(response),
        )
    kind = rec.get("eval_name") or "unknown"
    pid = rec.get("sample_id") or f"{kind}.{rec.get('', '')}"
    return Row(prompt_id=pid, prompt=prompt, kind=kind, results=results, split=split, source=kind)


def _ladder(rows: list[Row], models: list[str]) -> Ladder:
    if all(m in models for _, m in _PRESET):
        return Ladder.of(_PRESET)
    n = max(len(rows), 1)
    quality = {m: sum(r.results[m].score for r in rows) / n for m in models}
    cost = {m: float(sum(r.results[m].cost_usd or 0 for r in rows)) / n for m in models}
    return generic_ladder(models, quality, cost)
