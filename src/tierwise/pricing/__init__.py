"""Prices and exact costs: the catalog, usage normalisation, cost arithmetic and what-ifs.

* :class:`PriceCatalog` — per-model prices, policy overrides first, else ``genai-prices``
  (bundled data only, never fetched), pinned to a date with ``at=``.
* :class:`Usage` and ``usage_from_anthropic`` / ``merge_anthropic_stream_usage`` /
  ``usage_from_openai`` — provider usage mapped into disjoint buckets.
* :func:`cost_of` / :func:`max_cost` — exact Decimal cost of a call and its worst case.
* :func:`project` — daily and monthly cost of routing strategies for a workload.

Importing this package is cheap: the catalog data is loaded on the first lookup.
"""

from __future__ import annotations

from tierwise.pricing.catalog import ModelPrices, PriceCatalog, catalog_version
from tierwise.pricing.cost import BATCH_DISCOUNT, cost_breakdown, cost_of, max_cost
from tierwise.pricing.usage import (
    Usage,
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_openai,
)
from tierwise.pricing.whatif import (
    Projection,
    Strategy,
    Workload,
    format_mix,
    parse_mix,
    parse_price,
    per_task_cost,
    project,
)

__all__ = [
    "BATCH_DISCOUNT",
    "ModelPrices",
    "PriceCatalog",
    "Projection",
    "Strategy",
    "Usage",
    "Workload",
    "catalog_version",
    "cost_breakdown",
    "cost_of",
    "format_mix",
    "max_cost",
    "merge_anthropic_stream_usage",
    "parse_mix",
    "parse_price",
    "per_task_cost",
    "project",
    "usage_from_anthropic",
    "usage_from_openai",
]
