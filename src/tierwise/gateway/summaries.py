"""The gateway keeps the weekly report's hourly summary up to date, so no report waits for it.

A report reads the kept sums of ended UTC hours and summarises the hours nobody summarised yet
(:meth:`tierwise.ledger.Ledger.report_summary`); over a week of a million attempts that first
pass takes as long as reading the rows. Every ``summary_every_s`` seconds (300 by default; 0
turns it off), each worker summarises the ended hours of the last day that are not kept yet, in
a worker thread, off the event loop: a few hundred milliseconds an hour at that volume, nothing
when they are kept already. Workers and replicas that race for the same hour are harmless: the
write of an hour replaces it whole, and a keeper that loses the race only logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tierwise.errors import TierwiseError

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

__all__ = ["BACK", "keep_forever", "keep_once"]

log = logging.getLogger("tierwise.gateway")

#: How far back each pass looks for ended hours that are not kept yet.
BACK = timedelta(days=1)
#: The first pass waits this long (at most) after the start, so a start is never slowed by it.
_FIRST_AFTER_S = 60.0


def keep_once(ledger: Ledger, now: datetime, back: timedelta = BACK) -> int:
    """Summarise the ended hours in [now − *back*, now) not kept yet; the number summarised.

    Blocking: run it off the event loop. A ledger that cannot be read or written is logged and
    the pass is skipped (the next one tries again; reports fall back to the rows meanwhile).
    """
    until = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        done = ledger.report_summary(until - back, until, now=now, keep=True)
    except TierwiseError as exc:
        log.warning("could not keep the report summary: %s", exc)
        return 0
    for note in done.notes:
        log.info("report summary: %s", note)
    return len(done.summarised)


async def keep_forever(
    ledger: Ledger,
    every_s: float,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run :func:`keep_once` every *every_s* seconds until cancelled."""
    import anyio

    await anyio.sleep(min(every_s, _FIRST_AFTER_S))
    while True:
        hours = await anyio.to_thread.run_sync(keep_once, ledger, clock())
        if hours:
            log.info("kept the report summary of %d ended hour(s)", hours)
        await anyio.sleep(every_s)
