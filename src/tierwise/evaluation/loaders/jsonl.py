"""tierwise's own JSONL format for recorded multi-model results (see ``docs/eval-format.md``).

One JSON object per line::

    {"prompt_id": "t-1", "prompt": "...", "kind": "extract", "split": "test",
     "results": {"claude-haiku-4-5": {"score": 1, "response": "...", "cost_usd": "0.00031",
                                      "input_tokens": 812, "output_tokens": 95}}}

A record may also carry ``served`` (what the live policy did: the tiers it tried, the tier and
model it answered with, that answer's score and the task's cost), which ``tierwise eval``
reports as the strategy "current policy (as served)".

An optional first line ``{"tierwise_eval": 1, ...}`` names the set and may give ``ladder``
(``{"cheap": MODEL, ...}`` bottom first), ``formats`` (kind → ``choice``/``code``/``number``/
``text``) and ``pass_threshold``. :func:`dump_rows` writes the format (``tierwise ledger
export`` uses it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row, Served
from tierwise.evaluation.loaders._util import (
    decimal_or_none,
    estimate_tokens,
    files,
    first_json_line,
    generic_ladder,
    pick_split,
    split_of,
)

NAME = "jsonl"
FORMAT_VERSION = 1


def _is_ours(path: Path) -> bool:
    head = first_json_line(path)
    if not head:
        return False
    return "tierwise_eval" in head or {"prompt_id", "results"} <= head.keys()


def _sources(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if _is_ours(path) else []
    return [p for p in files(path, "*.jsonl") if _is_ours(p)]


def detect(path: Path) -> bool:
    """JSONL whose first line is a tierwise header or a ``prompt_id`` + ``results`` record."""
    return bool(_sources(path))


def load(path: Path, split: str | None = None) -> Dataset:
    """Read every tierwise JSONL file in *path* (or the file *path*)."""
    sources = _sources(path)
    if not sources:
        raise DatasetError(f"{path}: no tierwise JSONL files found")
    header: dict[str, Any] = {}
    rows: list[Row] = []
    models: list[str] = []
    for file in sources:
        file_split = split_of(file)
        with file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise DatasetError(f"{file}:{lineno}: not JSON: {exc}") from None
                if not isinstance(rec, dict):
                    raise DatasetError(f"{file}:{lineno}: expected a JSON object")
                if "tierwise_eval" in rec:
                    header.update(rec)
                    continue
                row = _row(rec, file_split, f"{file}:{lineno}")
                rows.append(row)
                for m in row.results:
                    if m not in models:
                        models.append(m)
    pick_split([r.split for r in rows], split, path)
    if split is not None:
        rows = [r for r in rows if r.split == split]
    ladder = _ladder(header.get("ladder"), rows, models)
    formats = header.get("formats") if isinstance(header.get("formats"), dict) else {}
    return Dataset(
        name=str(header.get("name") or NAME),
        rows=tuple(rows),
        models=tuple(models),
        default_ladder=ladder,
        split=split,
        path=str(path),
        formats={str(k): str(v) for k, v in (formats or {}).items()},
        pass_threshold=float(header.get("pass_threshold", 0.5)),
        notes=("cost: recorded USD where given, else tokens (or characters / 4) priced",),
    )


def _row(rec: dict[str, Any], file_split: str, where: str) -> Row:
    pid = rec.get("prompt_id")
    results = rec.get("results")
    if not isinstance(pid, str | int) or not isinstance(results, dict):
        raise DatasetError(f"{where}: a record needs 'prompt_id' and a 'results' object")
    prompt = rec.get("prompt")
    prompt = str(prompt) if prompt is not None else None
    out: dict[str, ModelResult] = {}
    for model, res in results.items():
        if not isinstance(res, dict) or not isinstance(res.get("score"), int | float):
            raise DatasetError(f"{where}: results[{model!r}] needs a numeric 'score'")
        score = float(res["score"])
        if not 0 <= score <= 1:
            raise DatasetError(f"{where}: results[{model!r}].score is {score}; expected 0..1")
        response = res.get("response")
        response = str(response) if response is not None else None
        out[str(model)] = ModelResult(
            score=score,
            response=response,
            cost_usd=decimal_or_none(res.get("cost_usd")),
            input_tokens=_int(res.get("input_tokens"), estimate_tokens(prompt)),
            output_tokens=_int(res.get("output_tokens"), estimate_tokens(response)),
        )
    return Row(
        prompt_id=str(pid),
        prompt=prompt,
        kind=str(rec.get("kind") or "default"),
        results=out,
        split=str(rec.get("split") or file_split),
        source=str(rec.get("source") or ""),
        served=_served(rec.get("served"), where),
    )


def _served(spec: object, where: str) -> Served | None:
    """The optional ``served`` object: what the live policy did (``tierwise ledger export``)."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("score"), int | float):
        raise DatasetError(f"{where}: 'served' needs an object with a numeric 'score'")
    score = float(spec["score"])
    if not 0 <= score <= 1:
        raise DatasetError(f"{where}: served.score is {score}; expected 0..1")
    tiers = spec.get("tiers") or []
    if not isinstance(tiers, list):
        raise DatasetError(f"{where}: served.tiers must be a list of tier names")
    tier, model = spec.get("tier"), spec.get("model")
    return Served(
        tier=None if tier is None else str(tier),
        model=None if model is None else str(model),
        score=score,
        cost_usd=decimal_or_none(spec.get("cost_usd")),
        tiers=tuple(str(t) for t in tiers),
    )


def _int(value: object, fallback: int | None) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return fallback


def _ladder(spec: object, rows: list[Row], models: list[str]) -> Ladder:
    if isinstance(spec, dict) and spec:
        missing = [m for m in spec.values() if m not in models]
        if missing:
            raise DatasetError(f"header ladder names models without results: {missing}")
        return Ladder.of((str(k), str(v)) for k, v in spec.items())
    if not models:
        raise DatasetError("no results in the file")
    quality = {
        m: sum(r.results[m].score for r in rows if m in r.results)
        / max(1, sum(m in r.results for r in rows))
        for m in models
    }
    costs = {
        m: float(sum(r.results[m].cost_usd or 0 for r in rows if m in r.results)) for m in models
    }
    return generic_ladder(models, quality, costs if any(costs.values()) else None)


def row_to_json(row: Row) -> dict[str, Any]:
    """One row as a JSON-ready record of the format."""
    results: dict[str, Any] = {}
    for model, res in row.results.items():
        item: dict[str, Any] = {"score": res.score}
        if res.response is not None:
            item["response"] = res.response
        if res.cost_usd is not None:
            item["cost_usd"] = _plain(res.cost_usd)
        if res.input_tokens is not None:
            item["input_tokens"] = res.input_tokens
        if res.output_tokens is not None:
            item["output_tokens"] = res.output_tokens
        results[model] = item
    rec: dict[str, Any] = {"prompt_id": row.prompt_id, "prompt": row.prompt, "kind": row.kind}
    if row.split:
        rec["split"] = row.split
    if row.source:
        rec["source"] = row.source
    rec["results"] = results
    if row.served is not None:
        served = row.served
        rec["served"] = {
            "tier": served.tier,
            "model": served.model,
            "score": served.score,
            "tiers": list(served.tiers),
            **({} if served.cost_usd is None else {"cost_usd": _plain(served.cost_usd)}),
        }
    return rec


def dump_rows(
    rows: Iterable[Row],
    out: IO[str],
    *,
    name: str | None = None,
    ladder: Mapping[str, str] | None = None,
    formats: Mapping[str, str] | None = None,
) -> int:
    """Write *rows* as tierwise JSONL (a header line first when any header field is given).

    Returns the number of rows written.
    """
    header: dict[str, Any] = {}
    if name:
        header["name"] = name
    if ladder:
        header["ladder"] = dict(ladder)
    if formats:
        header["formats"] = dict(formats)
    if header:
        out.write(json.dumps({"tierwise_eval": FORMAT_VERSION, **header}) + "\n")
    n = 0
    for row in rows:
        out.write(json.dumps(row_to_json(row), ensure_ascii=False) + "\n")
        n += 1
    return n


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
