"""The drivers of the cascade's one loop: blocking calls, or awaits on the running loop.

:meth:`Cascade._steps <tierwise.cascade.runner.Cascade>` yields effects (:mod:`.steps`);
:class:`Drivers` (a base of the cascade) performs them and sends the results back —
:meth:`Drivers._drive_sync` with blocking calls (:meth:`Cascade.run`), :meth:`Drivers._drive_async`
on the running event loop (:meth:`Cascade.arun`; :meth:`Cascade.astream` relays streams itself
and hands every other effect to :meth:`Drivers._perform_async`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar, cast

from tierwise.cascade.budget import MemoryBudgets
from tierwise.cascade.seams import LedgerSink
from tierwise.cascade.steps import (
    Call,
    Effect,
    Relay,
    Reserve,
    Steps,
    Tried,
    Validate,
    asleep,
    keep_billed,
)
from tierwise.errors import ProviderError
from tierwise.providers.base import Provider

if TYPE_CHECKING:
    from tierwise.providers.retry import RetryPolicy

__all__ = ["Drivers"]

T = TypeVar("T")


class Drivers:
    """Perform the loop's effects (a base of :class:`~tierwise.cascade.runner.Cascade`)."""

    retry: RetryPolicy
    _once: RetryPolicy
    _sleep: Callable[[float], None]
    _budgets: LedgerSink | MemoryBudgets
    _hold: Callable[[Reserve], object]

    def _drive_sync(self, steps: Steps[T]) -> T:
        from tierwise.cascade.validators import run_validators
        from tierwise.providers.retry import retrying

        value: object = None
        try:
            while True:
                effect = steps.send(value)
                if isinstance(effect, Call):
                    if not isinstance(effect.provider, Provider):
                        raise TypeError(
                            f"provider {effect.provider.name!r} has no blocking call: use arun"
                        )
                    billed: list[ProviderError] = []
                    try:
                        result: object = retrying(
                            partial(effect.provider.complete, effect.request),
                            self._once if effect.once else self.retry,
                            sleep=self._sleep,
                            on_retry=keep_billed(billed),
                        )
                    except ProviderError as exc:
                        result = exc
                    value = Tried(result, tuple(billed))
                elif isinstance(effect, Validate):
                    value = run_validators(effect.validators, effect.output, effect.context)
                elif isinstance(effect, Reserve):
                    value = self._hold(effect)
                else:
                    raise TypeError("streams are relayed by Cascade.astream only")
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _drive_async(self, steps: Steps[T]) -> T:
        value: object = None
        try:
            while True:
                value = await self._perform_async(steps.send(value))
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _perform_async(self, effect: Effect) -> object:
        """Carry out one effect on the running loop (a relay is :meth:`astream`'s own)."""
        from tierwise.cascade.validators import arun_validators
        from tierwise.providers.retry import aretrying

        if isinstance(effect, Validate):
            return await arun_validators(effect.validators, effect.output, effect.context)
        if isinstance(effect, Reserve):
            if isinstance(self._budgets, MemoryBudgets):
                return self._hold(effect)  # in memory: no I/O to wait for
            import asyncio

            return await asyncio.to_thread(self._hold, effect)  # a database write: off the loop
        if isinstance(effect, Relay):
            raise TypeError("streams are relayed by Cascade.astream only")
        billed: list[ProviderError] = []
        keep = keep_billed(billed)
        result: object
        try:
            if isinstance(effect, Call):
                op = partial(effect.provider.acomplete, effect.request)
                retry = self._once if effect.once else self.retry
                result = await aretrying(op, retry, sleep=asleep, on_retry=keep)
            else:
                opening = partial(effect.provider.aopen, effect.request)
                result = await aretrying(opening, self.retry, sleep=asleep, on_retry=keep)
        except ProviderError as exc:
            result = exc
        return Tried(result, tuple(billed))
