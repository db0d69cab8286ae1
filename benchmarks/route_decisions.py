"""Routing decisions per second on the default policy, next to a bare dict lookup kind -> tier.

The task mix is varied and deterministic (seeded): every kind of the default policy plus unlisted
kinds, with and without sizes, file counts, severities, requires_code and annotations, so rules,
frontier constraints, floors and doubt all take part. Both loops run in this process on the same
tasks; the ratio says what the full decision (with its structured explanation) costs over the
cheapest possible routing.

Run: .venv/bin/python benchmarks/route_decisions.py [--tasks 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from tierwise.policy import default_policy
from tierwise.routing import Router
from tierwise.task import AMBIGUITIES, DOMAINS, SCOPES, Task


def make_tasks(n: int, seed: int = 7) -> list[Task]:
    """*n* distinct tasks (each has its own id and attribute mix)."""
    policy = default_policy()
    kinds = [*policy.kinds, "tone_check", "translate", "extract_invoice"]
    rng = random.Random(seed)

    def maybe(value: object, p: float = 0.6) -> object:
        return value if rng.random() < p else None

    tasks = []
    for i in range(n):
        tasks.append(
            Task(
                kind=rng.choice(kinds),
                id=f"bench-{i}",
                input_tokens=maybe(rng.randint(10, 20_000)),  # type: ignore[arg-type]
                input_chars=maybe(rng.randint(40, 80_000)),  # type: ignore[arg-type]
                files=maybe(rng.randint(0, 15)),  # type: ignore[arg-type]
                severity=maybe(rng.randint(1, 5), 0.4),  # type: ignore[arg-type]
                requires_code=maybe(rng.random() < 0.5, 0.4),  # type: ignore[arg-type]
                scope=maybe(rng.choice(SCOPES), 0.5),  # type: ignore[arg-type]
                domain=maybe(rng.choice(DOMAINS), 0.5),  # type: ignore[arg-type]
                ambiguity=maybe(rng.choice(AMBIGUITIES), 0.5),  # type: ignore[arg-type]
            )
        )
    return tasks


def best_rate(fn: object, tasks: list[Task], rounds: int) -> float:
    """Best of *rounds* passes, in decisions per second."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn(tasks)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return len(tasks) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    policy = default_policy()
    router = Router(policy)
    tasks = make_tasks(args.tasks)
    lookup = {k: router.route(Task(kind=k)).tier for k in policy.kinds}
    bottom = policy.ladder[0]

    def by_router(ts: list[Task]) -> None:
        route = router.route
        for t in ts:
            route(t)

    def by_dict(ts: list[Task]) -> None:
        get = lookup.get
        for t in ts:
            get(t.kind, bottom)

    router_rate = best_rate(by_router, tasks, args.rounds)
    dict_rate = best_rate(by_dict, tasks, args.rounds)
    steps = Counter(router.route(t).step for t in tasks)
    tiers = Counter(router.route(t).tier for t in tasks)

    print(f"tasks: {len(tasks)} distinct, best of {args.rounds} rounds")
    print(f"decision steps: {dict(steps)}; tiers: {dict(tiers)}")
    print(
        f"router (default policy):  {router_rate:>12,.0f} decisions/s  "
        f"({1e6 / router_rate:.2f} µs each)"
    )
    print(
        f"baseline (dict kind→tier): {dict_rate:>11,.0f} lookups/s    "
        f"({1e6 / dict_rate:.3f} µs each)"
    )
    print(
        f"ratio baseline/router: {dict_rate / router_rate:.1f}x; "
        f"target ≥ 100,000 decisions/s: {'met' if router_rate >= 100_000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
