"""Prices in a policy: every tier model must have one, and an override should be complete.

A ``[prices."MODEL"]`` table replaces the catalog's prices for that model. Without ``cache_read``
the cost arithmetic charges prompt-cache reads at the full input price (the fallback for
providers without a separate price), so a policy that overrides a cached model's prices
silently overstates every cached call — :func:`price_warnings` says so at load time.
"""

from __future__ import annotations

from collections.abc import Mapping

from tierwise.errors import PolicyIssue, UnknownModelError
from tierwise.policy.locate import KeyPath, format_path, line_of
from tierwise.policy.schema import PolicyModel

__all__ = ["price_issues", "price_warnings"]


def price_issues(model: PolicyModel, lines: Mapping[KeyPath, int]) -> list[PolicyIssue]:
    """Every tier model (alternates included) needs a catalog price or a ``[prices]`` entry."""
    from tierwise.pricing import PriceCatalog

    catalog = PriceCatalog(model.prices)
    issues: list[PolicyIssue] = []
    for i, tier in enumerate(model.tiers):
        candidates: list[tuple[KeyPath, str, str]] = [
            (("tiers", i, "model"), tier.model, tier.provider)
        ]
        for j, alt in enumerate(tier.alternate_specs()):
            candidates.append(
                (("tiers", i, "alternates", j), alt.model, alt.provider or tier.provider)
            )
        for path, model_id, provider in candidates:
            try:
                catalog.prices_for(model_id, provider)
            except UnknownModelError:
                issues.append(
                    PolicyIssue(
                        format_path(path),
                        f"no price known for model {model_id!r}: the genai-prices catalog does "
                        f'not list it; add [prices."{model_id}"] with input and output USD per '
                        "million tokens",
                        line_of(lines, path),
                    )
                )
    return issues


def price_warnings(model: PolicyModel, lines: Mapping[KeyPath, int]) -> list[PolicyIssue]:
    """A warning for each ``[prices]`` entry a tier uses that has no ``cache_read`` price."""
    from tierwise.errors import PricingError
    from tierwise.pricing import PriceCatalog

    used: dict[str, str] = {}  # model id (lower case) → provider of the first tier using it
    for tier in model.tiers:
        used.setdefault(tier.model.lower(), tier.provider)
        for alt in tier.alternate_specs():
            used.setdefault(alt.model.lower(), alt.provider or tier.provider)
    catalog = PriceCatalog()
    warnings: list[PolicyIssue] = []
    for model_id, prices in model.prices.items():
        provider = used.get(model_id.lower())
        if provider is None or prices.cache_read is not None:
            continue
        try:
            listed = catalog.prices_for(model_id, provider).cache_read
        except PricingError:
            listed = None
        if listed is not None and listed != prices.input:
            hint = f"the genai-prices catalog lists {listed} for it; add cache_read = {listed}"
        else:
            hint = (
                "add cache_read (USD per million cached input tokens), or set it equal to "
                "input if the model has no prompt cache"
            )
        path: KeyPath = ("prices", model_id)
        warnings.append(
            PolicyIssue(
                format_path(path),
                f"no cache_read price: cached input tokens will be charged at the full input "
                f"price ({prices.input} USD per million); {hint}",
                line_of(lines, path),
                "warning",
            )
        )
    return warnings
