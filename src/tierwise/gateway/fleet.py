"""The fleet's escalation rate on ``/metrics``: a gauge, and a boolean for the red line.

Computed from the ledger when ``/metrics`` is scraped (never on a model request's path), in a
worker thread, and cached a few seconds: several scrapers, or several workers behind one
scraper, cost one query per worker per cache period. Every worker reads the same ledger, so each
reports the same fleet-wide figures (unlike the request counters, which are per worker).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from tierwise.analytics import fleet_escalation
from tierwise.errors import LedgerError

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

__all__ = ["FleetGauges"]

log = logging.getLogger("tierwise.gateway")

#: How long a computed rate is served before the ledger is read again.
CACHE_S = 5.0
#: The red line is judged over the tasks created in this last stretch of time.
WINDOW = timedelta(days=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FleetGauges:
    """``tierwise_fleet_escalation_rate`` (last day, NaN without resolved tasks),
    ``tierwise_fleet_escalation_above_red_line`` (1 above the line, else 0),
    ``tierwise_fleet_escalation_red_line`` and ``tierwise_fleet_resolved_tasks``."""

    def __init__(
        self,
        ledger: Ledger,
        registry: CollectorRegistry,
        red_line: float,
        *,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.ledger = ledger
        self.threshold = red_line
        self.cache_s = cache_s
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._fresh_until = -math.inf
        self.rate = Gauge(
            "tierwise_fleet_escalation_rate",
            "Share of the fleet's resolved live tasks created in the last 24 h that escalated "
            "(accepted above their starting tier, or failed on every tier); NaN without tasks.",
            registry=registry,
        )
        self.above = Gauge(
            "tierwise_fleet_escalation_above_red_line",
            "1 when the fleet's escalation rate over the last 24 h is above the policy's "
            "[fleet] escalation_red_line, else 0.",
            registry=registry,
        )
        self.line = Gauge(
            "tierwise_fleet_escalation_red_line",
            "The policy's [fleet] escalation_red_line.",
            registry=registry,
        )
        self.resolved = Gauge(
            "tierwise_fleet_resolved_tasks",
            "Resolved live tasks created in the last 24 h (the escalation rate's denominator).",
            registry=registry,
        )
        self.line.set(red_line)
        self.rate.set(math.nan)

    def refresh(self) -> None:
        """Recompute from the ledger unless the last figures are fresher than ``cache_s``.

        Blocking (a ledger read): call it off the event loop. A scrape that arrives while
        another is computing serves the previous figures; a ledger that cannot be read keeps
        them too (logged), and is tried again after ``cache_s``.
        """
        if self._clock() < self._fresh_until or not self._lock.acquire(blocking=False):
            return
        try:
            until = self._now()
            try:
                line = fleet_escalation(
                    self.ledger, self.threshold, since=until - WINDOW, until=until
                )
            except LedgerError as exc:
                log.warning("fleet escalation rate not refreshed: %s", exc)
                return
            value = line.rate.value
            self.rate.set(math.nan if value is None else value)
            self.above.set(1 if line.above else 0)
            self.resolved.set(line.resolved)
        finally:
            self._fresh_until = self._clock() + self.cache_s
            self._lock.release()
