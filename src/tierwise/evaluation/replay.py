"""Replay: answer from recorded multi-model results instead of calling a model.

:class:`ReplayProvider` implements the provider seam over a
:class:`~tierwise.evaluation.dataset.Dataset`: a request is matched to its row by
``request.extra["prompt_id"]`` (the cascade's default request builder puts the task id there,
and replayed tasks are created with the row's prompt id), and answered with the recorded
response of the model the provider stands for — with that row's token usage and its recorded
cost (``Completion.recorded_cost_usd``), so the cascade prices it exactly as it was billed.
Recorded scores never leave the dataset: validators see the prompt and the output only.

:class:`ReplaySource` gives the cascade one replay provider per tier::

    source = ReplaySource(dataset, {"cheap": "mixtral-8x7b", "strong": "gpt-4-1106-preview"})
    cascade = Cascade(policy, providers=source, role="replay", ledger=ledger)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from tierwise.errors import BadRequestError
from tierwise.pricing.usage import Usage
from tierwise.providers.base import Completion, CompletionRequest, Provider

if TYPE_CHECKING:
    from tierwise.evaluation.dataset import Dataset

#: The text a replayed model "answers" when the dataset recorded scores but no response text.
PLACEHOLDER = "(no recorded response)"


class ReplayProvider:
    """A provider that answers with one model's recorded responses.

    Args:
        dataset: the recorded results.
        model: the dataset model this provider replays.
        placeholder: the answer when the dataset has no response text for the row.

    Raises (from :meth:`complete`):
        BadRequestError: the request carries no ``prompt_id``, the dataset has no such row, or
            the model has no recorded result for it (not retryable).
    """

    name = "replay"

    def __init__(self, dataset: Dataset, model: str, *, placeholder: str = PLACEHOLDER) -> None:
        self.dataset = dataset
        self.model = model
        self.placeholder = placeholder

    def __repr__(self) -> str:
        return f"ReplayProvider({self.dataset.name}, {self.model!r})"

    def complete(self, request: CompletionRequest) -> Completion:
        """The recorded answer to the request's prompt, with its usage and cost."""
        prompt_id = request.extra.get("prompt_id") if request.extra else None
        if not isinstance(prompt_id, str):
            raise self._error("the request carries no extra['prompt_id'] to replay")
        try:
            row = self.dataset.row(prompt_id)
        except KeyError:
            raise self._error(f"no recorded row with prompt_id {prompt_id!r}") from None
        result = row.results.get(self.model)
        if result is None:
            raise self._error(f"model {self.model!r} has no recorded result for {prompt_id!r}")
        usage = Usage(
            input_tokens=result.input_tokens or 0, output_tokens=result.output_tokens or 0
        )
        # A result without any known cost replays at $0; evaluation reports its cost as unknown.
        cost = result.cost_usd if result.cost_usd is not None else Decimal(0)
        return Completion(
            text=result.response if result.response is not None else self.placeholder,
            model=self.model,
            provider=self.name,
            usage=usage,
            stop_reason="end",
            raw_stop_reason="replay",
            recorded_cost_usd=str(cost),
            raw={"prompt_id": prompt_id, "cost_known": result.cost_usd is not None},
        )

    async def acomplete(self, request: CompletionRequest) -> Completion:
        """Async twin of :meth:`complete` (replay never blocks)."""
        return self.complete(request)

    def _error(self, message: str) -> BadRequestError:
        return BadRequestError(f"replay: {message}", provider=self.name, model=self.model)


class ReplaySource:
    """The cascade's provider source for a replay: tier name → the dataset model it replays.

    Args:
        dataset: the recorded results.
        tier_models: ``{tier: model}``, or ``(tier, model)`` pairs (e.g. a
            :class:`~tierwise.evaluation.dataset.Ladder`).

    Raises:
        KeyError: a tier maps to a model the dataset does not have.
    """

    def __init__(
        self,
        dataset: Dataset,
        tier_models: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        placeholder: str = PLACEHOLDER,
    ) -> None:
        pairs = tier_models.items() if isinstance(tier_models, Mapping) else tier_models
        self.tier_models = dict(pairs)
        unknown = [m for m in self.tier_models.values() if m not in dataset.models]
        if unknown:
            raise KeyError(f"the dataset has no results for {', '.join(unknown)}")
        self._providers = {
            tier: ReplayProvider(dataset, model, placeholder=placeholder)
            for tier, model in self.tier_models.items()
        }

    def for_tier(self, tier: str) -> Sequence[tuple[str, Provider]]:
        """The one replayed model of *tier* (replay has no alternates)."""
        provider = self._providers[tier]
        return [(provider.model, provider)]


__all__ = ["PLACEHOLDER", "ReplayProvider", "ReplaySource"]
