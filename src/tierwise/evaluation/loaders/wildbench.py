"""WildBench v2 per-task judge scores (allenai/WildBench ``eval_results``), without task text.

``session_id, <models>`` tables: checklist scores 1–10 by a GPT-4o judge (scaled to 0–1 by /10)
and output lengths in characters (told apart by their values). No prompt text, so only
prompt-agnostic strategies apply: single models, fixed cascades on scores and the oracle.
"""

from __future__ import annotations

from pathlib import Path

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.loaders._util import (
    csv_header,
    csv_rows,
    files,
    generic_ladder,
    pick_split,
    split_of,
)

NAME = "wildbench"
_PRESET = (
    ("cheap", "reka-edge"),
    ("mid", "reka-flash-20240226"),
    ("strong", "reka-core-20240501"),
)


def _tables(path: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in files(path, "*.csv"):
        header = csv_header(p)
        if not header or header[0] != "session_id" or len(header) < 2:
            continue
        values: list[float] = []
        for i, rec in enumerate(csv_rows(p)):
            for k, v in rec.items():
                if k != "session_id" and v != "":
                    try:
                        values.append(float(v))
                    except ValueError:
                        return found
            if i >= 50:
                break
        if not values:
            continue
        key = "scores" if all(1 <= v <= 10 for v in values) else "chars"
        found.setdefault(key, p)
    return found


def detect(path: Path) -> bool:
    """A folder with a ``session_id, <models>`` table of 1–10 scores."""
    return "scores" in _tables(path)


def load(path: Path, split: str | None = None) -> Dataset:
    """Read the score table and, when present, the output-length table."""
    tables = _tables(path)
    if "scores" not in tables:
        raise DatasetError(f"{path}: no WildBench score table found")
    pick_split([split_of(tables["scores"])], split, path)
    chars: dict[str, dict[str, str]] = {}
    if "chars" in tables:
        chars = {rec["session_id"]: rec for rec in csv_rows(tables["chars"])}
    models = [h for h in csv_header(tables["scores"]) if h != "session_id"]
    rows: list[Row] = []
    for rec in csv_rows(tables["scores"]):
        sid = rec["session_id"]
        results = {}
        for m in models:
            if rec.get(m, "") == "":
                continue
            length = chars.get(sid, {}).get(m, "")
            results[m] = ModelResult(
                score=float(rec[m]) / 10,
                output_tokens=-(-int(length) // 4) if length.isdigit() else None,
            )
        rows.append(Row(f"wildbench/{sid}", None, "wildbench", results, split_of(tables["scores"])))
    if all(m in models for _, m in _PRESET):
        ladder = Ladder.of(_PRESET)
    else:
        quality = {
            m: sum(r.results[m].score for r in rows if m in r.results)
            / max(1, sum(m in r.results for r in rows))
            for m in models
        }
        ladder = generic_ladder(models, quality, None)
    return Dataset(
        name=NAME,
        rows=tuple(rows),
        models=tuple(models),
        default_ladder=ladder,
        split=split,
        path=str(path),
        formats={"wildbench": "text"},
        pass_threshold=0.7,
        notes=(
            "score: WildBench checklist score 1-10 (GPT-4o judge) / 10; an answer passes at >= 7",
            "cost: output length / 4 tokens only (no prompt text or input size), priced by "
            "--prices or the catalog",
        ),
    )
