"""The cascade's own overhead per task: time spent outside provider calls.

Runs the same tasks through :class:`~tierwise.cascade.Cascade` against the fake upstream (zero
added latency) and times every provider call from inside the cascade's provider source, so

    overhead = wall time of cascade.run() − time inside provider.complete()

covers routing, validation, pricing, budget reservations and the ledger writes. The baseline,
measured in the same run, is a bare provider call on the same SDK client (what an agent pays
without tierwise). Three configurations: no ledger (budgets in memory), a SQLite ledger, and a
SQLite ledger with a task that escalates once (two attempts, two validations).

Usage: .venv/bin/python benchmarks/cascade_overhead.py [--tasks 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierwise.cascade import Cascade
from tierwise.ledger import open_ledger
from tierwise.policy import default_policy
from tierwise.providers.base import Completion, CompletionRequest, Provider
from tierwise.providers.factory import ProviderPool
from tierwise.task import Message, Task
from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import served_by

ENV = {"TIERWISE_DEMO_KEY": "bench"}


class TimedProvider:
    """Wraps a provider and accumulates the time spent inside its calls."""

    def __init__(self, inner: Provider, clock: list[float]) -> None:
        self.inner = inner
        self.name = inner.name
        self._clock = clock

    def complete(self, request: CompletionRequest) -> Completion:
        t0 = time.perf_counter()
        try:
            return self.inner.complete(request)
        finally:
            self._clock[0] += time.perf_counter() - t0

    async def acomplete(self, request: CompletionRequest) -> Completion:
        t0 = time.perf_counter()
        try:
            return await self.inner.acomplete(request)
        finally:
            self._clock[0] += time.perf_counter() - t0


class TimedSource:
    def __init__(self, pool: ProviderPool, clock: list[float]) -> None:
        self._pool = pool
        self._clock = clock
        self._cache: dict[str, list[tuple[str, Provider]]] = {}

    def for_tier(self, tier: str) -> Sequence[tuple[str, Provider]]:
        if tier not in self._cache:
            self._cache[tier] = [
                (m, TimedProvider(p, self._clock)) for m, p in self._pool.for_tier(tier)
            ]
        return self._cache[tier]


def measure(cascade: Cascade, tasks: list[Task], clock: list[float]) -> tuple[float, float]:
    """(median overhead per task, median provider time per task) in seconds."""
    overheads, inside = [], []
    for task in tasks:
        clock[0] = 0.0
        t0 = time.perf_counter()
        cascade.run(task)
        wall = time.perf_counter() - t0
        overheads.append(wall - clock[0])
        inside.append(clock[0])
    return statistics.median(overheads), statistics.median(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    n = args.tasks

    def cheap(request: dict[str, Any]) -> str:
        if "Invoice" in str(request["messages"][0]["content"]):
            return "The total is 10 EUR."  # prose, not JSON: the json validator escalates it
        return '{"label": "billing", "confidence": 0.9}'

    scripts = {
        "claude-haiku-4-5": ModelScript(reply=cheap),
        "claude-sonnet-4-6": ModelScript(reply='{"vendor": "ACME", "total": 10}'),
        "claude-opus-4-6": ModelScript(reply="ok"),
    }
    with FakeUpstream(scripts, default=None) as up, tempfile.TemporaryDirectory() as tmp:
        policy = served_by(default_policy(), up, api_key_env="TIERWISE_DEMO_KEY")
        pool = ProviderPool(policy, env=ENV)
        clock = [0.0]
        source = TimedSource(pool, clock)
        classify = [Task.create("classify", f"my refund {i} is late") for i in range(n)]
        extract = [Task.create("extract", f"Invoice {i}, total 10 EUR") for i in range(n)]

        # Baseline: the bare provider call the cascade makes, on the same client.
        provider = pool.for_tier("cheap")[0][1]
        request = CompletionRequest(
            model="claude-haiku-4-5", messages=(Message("user", "my refund is late"),)
        )
        for _ in range(20):
            provider.complete(request)
        bare = []
        for _ in range(n):
            t0 = time.perf_counter()
            provider.complete(request)
            bare.append(time.perf_counter() - t0)
        bare_median = statistics.median(bare)

        rows = []
        with Cascade(policy, providers=source, env=ENV) as cascade:
            measure(cascade, classify[:20], clock)
            rows.append(("no ledger, 1 attempt", *measure(cascade, classify, clock)))
        with (
            open_ledger(Path(tmp) / "bench.db") as ledger,
            Cascade(policy, providers=source, ledger=ledger, env=ENV) as cascade,
        ):
            measure(cascade, [t.with_(id=t.id + "w") for t in classify[:20]], clock)
            rows.append(("SQLite ledger, 1 attempt", *measure(cascade, classify, clock)))
            rows.append(("SQLite ledger, escalates once", *measure(cascade, extract, clock)))
        with (
            open_ledger(f"sqlite:///{tmp}/normal.db?sync=normal") as ledger,
            Cascade(policy, providers=source, ledger=ledger, env=ENV) as cascade,
        ):
            fresh = [t.with_(id=t.id + "n") for t in classify]
            measure(cascade, [t.with_(id=t.id + "w") for t in classify[:20]], clock)
            rows.append(("SQLite ?sync=normal, 1 attempt", *measure(cascade, fresh, clock)))
        pool.close()

    print(f"tasks per configuration: {n}; fake upstream on loopback, zero added latency")
    print(f"baseline: bare SDK call to the same upstream, median {bare_median * 1e6:8.0f} µs")
    print(f"{'configuration':32} {'overhead/task':>14} {'provider time':>14} {'overhead/bare':>14}")
    for name, overhead, inside in rows:
        print(
            f"{name:32} {overhead * 1e6:11.0f} µs {inside * 1e6:11.0f} µs "
            f"{overhead / bare_median:13.2f}×"
        )


if __name__ == "__main__":
    main()
