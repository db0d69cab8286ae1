"""RouterArena cached per-query results (RouteWorks/RouterArena ``cached_results``).

One JSONL file per model; each line: ``global_index`` (``<dataset>_<n>``), ``question``,
``llm_selected``, ``generated_answer``, ``token_usage{input_tokens, output_tokens}`` and
``evaluation_result{score, inference_cost}`` (real USD). Scores are 0/1 for most datasets and a
0–1 metric (METEOR) for translation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tierwise.evaluation.dataset import Dataset, DatasetError, ModelResult, Row
from tierwise.evaluation.loaders._util import (
    decimal_or_none,
    files,
    first_json_line,
    generic_ladder,
    pick_split,
    split_of,
)

NAME = "routerarena"
_KEYS = {"global_index", "llm_selected", "evaluation_result"}
_CHOICE = re.compile(r"(?m)^\s*\(?[A-D][.)]\s+\S")


def _is_arena(path: Path) -> bool:
    head = first_json_line(path)
    return bool(head) and head.keys() >= _KEYS  # type: ignore[union-attr]


def detect(path: Path) -> bool:
    """JSONL lines carrying ``global_index``, ``llm_selected`` and ``evaluation_result``."""
    return any(_is_arena(p) for p in files(path, "*.jsonl"))


def _as_dict(value: object) -> dict[str, object]:
    if isinstance(value, dict):
        return value
    return {}


def load(path: Path, split: str | None = None) -> Dataset:
    """Read every model's cached results and join them on ``global_index``."""
    sources = [p for p in files(path, "*.jsonl") if _is_arena(p)]
    if not sources:
        raise DatasetError(f"{path}: no RouterArena result files found")
    pick_split([split_of(p) for p in sources], split, path)
    prompts: dict[str, str] = {}
    results: dict[str, dict[str, ModelResult]] = {}
    models: list[str] = []
    for file in sources:
        if split is not None and split_of(file) != split:
            continue
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                gid = str(rec["global_index"])
                model = str(rec["llm_selected"])
                if model not in models:
                    models.append(model)
                ev = _as_dict(rec.get("evaluation_result"))
                usage = _as_dict(rec.get("token_usage"))
                prompts.setdefault(gid, str(rec.get("question") or ""))
                score = ev.get("score")
                results.setdefault(gid, {})[model] = ModelResult(
                    score=float(score) if isinstance(score, int | float) else 0.0,
                    response=str(rec.get("generated_answer") or ""),
                    cost_usd=decimal_or_none(ev.get("inference_cost")),
                    input_tokens=_int(usage.get("input_tokens")),
                    output_tokens=_int(usage.get("output_tokens")),
                )
    rows = tuple(
        Row(
            prompt_id=gid,
            prompt=prompts[gid] or None,
            kind=gid.rsplit("_", 1)[0],
            results=by_model,
            split=split or "",
            source=gid.split("_", 1)[0],
        )
        for gid, by_model in results.items()
    )
    n = max(len(rows), 1)
    quality = {m: sum(r.results[m].score for r in rows if m in r.results) / n for m in models}
    cost = {
        m: float(sum(r.results[m].cost_usd or 0 for r in rows if m in r.results)) / n
        for m in models
    }
    return Dataset(
        name=NAME,
        rows=rows,
        models=tuple(models),
        default_ladder=generic_ladder(models, quality, cost),
        split=split,
        path=str(path),
        formats=_formats(rows),
        pass_threshold=0.5,
        notes=("cost: recorded USD per call (RouterArena inference_cost)",),
    )


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


def _formats(rows: tuple[Row, ...]) -> dict[str, str]:
    """Multiple choice where most prompts of a kind list lettered options, else free text."""
    counts: dict[str, list[int]] = {}
    for r in rows:
        c = counts.setdefault(r.kind, [0, 0])
        c[0] += 1
        c[1] += bool(r.prompt and _CHOICE.search(r.prompt))
    return {k: "choice" if hits * 2 > total else "text" for k, (total, hits) in counts.items()}
