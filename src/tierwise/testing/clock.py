"""A fake clock for tests of anything that waits or measures time (retries, cooldowns)."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that only moves when told to.

    Call it for the time (it stands in for ``time.monotonic``); pass :meth:`sleep` or
    :meth:`asleep` where code would sleep — they advance the clock instantly and record the
    requested waits in :attr:`slept`.

    Example::

        clock = FakeClock()
        tracker = CooldownTracker(clock=clock, policy=policy)
        clock.advance(60)
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Record a wait and advance the clock by it, without waiting."""
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        """Async twin of :meth:`sleep`."""
        self.sleep(seconds)
