"""Costs for results recorded without one: tokens (or characters / 4) priced per model.

Prices come from a price file (``--prices``) and then the catalog (policy overrides, then
``genai-prices``). Benchmark model names rarely match a price list exactly
(``Meta-Llama-3_1-70B-Instruct`` vs ``meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo``), so names
are matched in steps — exact, case-insensitive, normalised (organisation prefix, separators,
date and ``-turbo``/``-hf`` suffixes dropped), then without a version suffix — and every match is
reported so a reader can check it.

Price file formats (JSON): RouterArena's ``cost.json`` (``{"model": {"input_token_price_per_
million": 0.15, "output_token_price_per_million": 0.6}}``) or ``{"model": {"input": 0.15,
"output": 0.6}}``; USD per million tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row
from tierwise.pricing import ModelPrices, PriceCatalog, Usage, cost_of


def load_price_file(path: str | Path) -> dict[str, ModelPrices]:
    """Read a JSON price table (USD per million tokens per model).

    Raises:
        DatasetError: the file is missing, not JSON, or an entry has no input/output price.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"price file {p} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"price file {p}: cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"price file {p}: expected an object of model → prices")
    out: dict[str, ModelPrices] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict):
            raise DatasetError(f"price file {p}: {model!r} is not an object")
        inp = entry.get("input_token_price_per_million", entry.get("input"))
        outp = entry.get("output_token_price_per_million", entry.get("output"))
        if not isinstance(inp, int | float | str) or not isinstance(outp, int | float | str):
            raise DatasetError(
                f"price file {p}: {model!r} needs input and output USD per million tokens"
            )
        try:
            out[model] = ModelPrices.of(model, str(inp), str(outp), source=f"file:{p.name}")
        except ValueError as exc:
            raise DatasetError(f"price file {p}: {model!r}: {exc}") from None
    return out


_DATE = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3})$")
_SUFFIX = re.compile(r"-(?:turbo|hf|greedy|latest)$")
_VERSION = re.compile(r"-v\d+(?:-\d+)*$")


def normalise_model_name(name: str, *, drop_version: bool = False) -> str:
    """A loose key for matching model names across price lists.

    ``meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo`` and ``Meta-Llama-3_1-70B-Instruct`` both
    become ``llama-3-1-70b-instruct``; ``gpt-4o-2024-05-13`` becomes ``gpt-4o``.
    """
    n = name.lower().rsplit("/", 1)[-1]
    n = re.sub(r"[._\s]+", "-", n)
    n = re.sub(r"^meta-(?=llama)", "", n)
    for _ in range(3):
        n = _SUFFIX.sub("", _DATE.sub("", n))
    if drop_version:
        n = _VERSION.sub("", n)
    return n


@dataclass(frozen=True, slots=True)
class PriceMatch:
    """Which price a model was costed at, and how the name was matched."""

    model: str
    prices: ModelPrices | None
    entry: str | None
    how: str  # "exact" | "case" | "normalised" | "unversioned" | "catalog" | "none"


def match_prices(
    models: list[str] | tuple[str, ...],
    table: Mapping[str, ModelPrices] | None = None,
    catalog: PriceCatalog | None = None,
) -> dict[str, PriceMatch]:
    """Find prices for each model.

    Order: the price file by exact (then case-insensitive) name, the catalog by exact name, the
    price file by normalised name, then by normalised name without a version suffix.
    """
    table = dict(table or {})
    lower = {k.lower(): k for k in table}
    norm: dict[str, str] = {}
    unversioned: dict[str, str] = {}
    for k in table:
        norm.setdefault(normalise_model_name(k), k)
        unversioned.setdefault(normalise_model_name(k, drop_version=True), k)
    out: dict[str, PriceMatch] = {}
    for m in models:
        found: tuple[str, str] | None = None
        if m in table:
            found = (m, "exact")
        elif m.lower() in lower:
            found = (lower[m.lower()], "case")
        if found is None and catalog is not None and catalog.knows(m):
            out[m] = PriceMatch(m, catalog.prices_for(m), m, "catalog")
            continue
        if found is None and normalise_model_name(m) in norm:
            found = (norm[normalise_model_name(m)], "normalised")
        if found is not None:
            out[m] = PriceMatch(m, table[found[0]], found[0], found[1])
            continue
        key = normalise_model_name(m, drop_version=True)
        if key in unversioned:
            entry = unversioned[key]
            out[m] = PriceMatch(m, table[entry], entry, "unversioned")
            continue
        out[m] = PriceMatch(m, None, None, "none")
    return out


def price_dataset(
    dataset: Dataset,
    table: Mapping[str, ModelPrices] | None = None,
    catalog: PriceCatalog | None = None,
) -> tuple[Dataset, dict[str, PriceMatch]]:
    """Fill in ``cost_usd`` where a result has none but its tokens can be priced.

    Recorded costs are kept. A result is priced when its model has prices and its output
    tokens are known (input tokens count as 0 when unknown). Returns the dataset and, for every
    model that needed prices, how they were found.
    """
    needing = [m for m in dataset.models if any(_needs(r, m) for r in dataset.rows)]
    if not needing:
        return dataset, {}
    matches = match_prices(needing, table, catalog)
    priced = {m: p.prices for m, p in matches.items() if p.prices is not None}
    if not priced:
        return dataset, matches
    rows = []
    for r in dataset.rows:
        changed: dict[str, ModelResult] | None = None
        for m, prices in priced.items():
            res = r.results.get(m)
            if res is None or res.cost_usd is not None or res.output_tokens is None:
                continue
            usage = Usage(input_tokens=res.input_tokens or 0, output_tokens=res.output_tokens)
            changed = changed if changed is not None else dict(r.results)
            changed[m] = replace(res, cost_usd=cost_of(usage, prices))
        rows.append(r if changed is None else replace(r, results=changed))
    notes = [
        f"priced {m} at {_fmt(p.prices)} ({p.how}: {p.entry})"
        for m, p in matches.items()
        if p.prices is not None
    ]
    unknown = [m for m, p in matches.items() if p.prices is None]
    if unknown:
        notes.append(f"no price for {', '.join(unknown)} (pass --prices FILE)")
    return dataset.with_rows(rows).with_notes(*notes), matches


#: A model joins an automatic ladder only with a result on at least this share of the rows.
MIN_COVERAGE = 0.98


def priced_ladder(dataset: Dataset) -> tuple[Ladder, str | None]:
    """The loader's default ladder when every one of its models has a cost, else a ladder of
    models that do (cheapest, best, and the best in between), with a note saying why.

    A ladder with an unpriced model gives every cascade an unknown cost, which is what a user
    running ``tierwise eval`` without ``--tiers`` least wants. When fewer than two models are
    priced the default ladder stays, and the note says how to get costs.
    """
    default = dataset.default_ladder
    unpriced = [m for m in default.models if not _priced(dataset, m)]
    if not unpriced or not dataset.rows:
        return default, None
    n = len(dataset.rows)
    covered = [
        m for m in dataset.models if sum(m in r.results for r in dataset.rows) >= MIN_COVERAGE * n
    ]
    candidates = [m for m in covered if _priced(dataset, m)]
    if len(candidates) < 2:
        return default, (
            f"no price for ladder model(s) {', '.join(unpriced)}: cascade costs are n/a "
            "(pass --prices FILE with their prices, or --tiers with priced models)"
        )
    from tierwise.evaluation.loaders._util import generic_ladder

    quality: dict[str, float] = {}
    cost: dict[str, float] = {}
    for m in candidates:
        got = [r.results[m] for r in dataset.rows if m in r.results]
        quality[m] = sum(x.score for x in got) / len(got)
        cost[m] = float(sum(x.cost_usd or 0 for x in got)) / len(got)
    ladder = generic_ladder(candidates, quality, cost)
    return ladder, (
        f"the default ladder {default.format()} has no price for {', '.join(unpriced)}; "
        f"using the priced ladder {ladder.format()} instead (pass --prices FILE to price the "
        "default, or --tiers to choose)"
    )


def _priced(dataset: Dataset, model: str) -> bool:
    """Whether every result *model* has carries a cost."""
    return all(r.results[model].cost_usd is not None for r in dataset.rows if model in r.results)


def _needs(row: Row, model: str) -> bool:
    res = row.results.get(model)
    return res is not None and res.cost_usd is None


def _fmt(prices: ModelPrices | None) -> str:
    if prices is None:
        return "?"
    return f"${prices.input}/${prices.output} per M in/out"


__all__ = [
    "PriceMatch",
    "load_price_file",
    "match_prices",
    "normalise_model_name",
    "price_dataset",
    "priced_ladder",
]
