"""``tierwise policy check`` on large policies: load + check time for 2,000 and 20,000 rules.

Before the linear checker, 4,000 rules took 19 s and 20,000 did not finish in 120 s (the
shadowing check compared every rule with every earlier one; the router compiled a plan per kind
by scanning every rule). The generated policies are the default policy plus N rules in the
shapes real files have, so every check does work:

* rules for their own kinds, some with file-count or token ranges and a domain list;
* every tenth rule shadowed by an earlier one (so warnings are found and reported);
* kinds spelt one letter off a listed kind (so typo suggestions are searched);
* a frontier rule for every hundredth kind (so frontier pins are checked against rules);
* named validators referenced from kinds.

Printed per size: parsing the TOML alone (``tomllib``, the baseline measured in the same run),
loading (parse, shape, references, validators), checking, and compiling the router (what
``serve`` and ``route`` pay at start); then the 20,000 ÷ 2,000 ratio of each — 10× is linear.
Each is measured twice: as a user runs it, and with Python's cyclic garbage collector paused,
whose full collections cost more as the heap grows (``tomllib`` alone shows it too) — the second
table is the algorithms' own growth.

Run: ``.venv/bin/python benchmarks/policy_check.py [--sizes 2000 20000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
import tomllib
from decimal import Decimal
from pathlib import Path

from tierwise.policy import check_policy, default_policy_text, load_policy
from tierwise.routing import Router


def policy_text(n: int, seed: int = 11) -> str:
    """The default policy plus *n* generated rules (and the kinds and validators they use)."""
    rng = random.Random(seed)
    parts = [default_policy_text()]
    kinds: list[str] = []
    for i in range(n):
        kind = f"task_kind_{i:05d}"
        kinds.append(kind)
        when = [f'kind = "{kind}"']
        if i % 10 == 9:  # shadowed: same kind as the rule before, a narrower range
            when = [f'kind = "{kinds[-2]}"', "files = { min = 1, max = 2 }"]
        elif i % 3 == 0:
            when.append(f"files = {{ max = {rng.randint(1, 9)} }}")
        elif i % 3 == 1:
            when.append(f"input_tokens = {{ min = {rng.randint(0, 5000)} }}")
            when.append('domain = ["docs", "tests", "config"]')
        tier = rng.choice(["cheap", "mid", "strong"])
        parts.append(
            f'\n[[rules]]\nname = "r{i}"\nwhen = {{ {", ".join(when)} }}\ntier = "{tier}"\n'
        )
    for i in range(0, n, 2):  # half the kinds are listed, one in seven with a typo'd rule
        parts.append(f'\n[kinds.{kinds[i]}]\ndoubt = "cheap"\nvalidators = ["v{i % 50}"]\n')
        if i % 7 == 0:
            typo = kinds[i][:-1] + "x"
            parts.append(f'\n[[rules]]\nwhen = {{ kind = "{typo}" }}\ntier = "mid"\n')
    for i in range(50):
        parts.append(f'\n[validators.v{i}]\ntype = "regex"\npattern = "^answer {i}: \\\\w+"\n')
    for i in range(0, n, 100):
        parts.append(f'\n[[frontier.rules]]\nwhen = {{ kind = "{kinds[i]}", severity = 5 }}\n')
    return "".join(parts)


def best(fn: object, rounds: int, collect: bool = True) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        if not collect:
            gc.disable()
        try:
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(times)


def measure(n: int, rounds: int, folder: Path, collect: bool) -> dict[str, float]:
    text = policy_text(n)
    file = folder / f"policy-{n}.toml"
    file.write_text(text, encoding="utf-8")
    policy = load_policy(file)
    issues = check_policy(policy)
    if collect:
        print(
            f"{n:>6} rules: {len(text) / 1e6:.1f} MB, {len(issues)} warnings "
            f"(e.g. {issues[0].message[:60]}…)"
        )
    return {
        "tomllib": best(lambda: tomllib.loads(text, parse_float=Decimal), rounds, collect),
        "load": best(lambda: load_policy(file), rounds, collect),
        "check": best(lambda: check_policy(policy), rounds, collect),
        "router": best(lambda: Router(policy), rounds, collect),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    small, large = args.sizes
    for collect in (True, False):
        with tempfile.TemporaryDirectory() as folder:
            results = {n: measure(n, args.rounds, Path(folder), collect) for n in (small, large)}
        report(results, small, large, "as run" if collect else "garbage collector paused")


def report(results: dict[int, dict[str, float]], small: int, large: int, label: str) -> None:
    linear = f"(linear: {large / small:g}×)"
    print(f"\n{label:<26}{small:>8} rules{large:>10} rules{'ratio':>9}  {linear}")
    for step in ("tomllib", "load", "check", "router"):
        a, b = results[small][step], results[large][step]
        print(f"{step:<26}{a:>12.3f} s{b:>14.3f} s{b / a:>8.1f}×")
    total_small = results[small]["load"] + results[small]["check"]
    total_large = results[large]["load"] + results[large]["check"]
    print(
        f"{'load+check':<26}{total_small:>12.3f} s{total_large:>14.3f} s"
        f"{total_large / total_small:>8.1f}×  "
        f"(÷ tomllib alone at {large}: {total_large / results[large]['tomllib']:.1f}×)"
    )


if __name__ == "__main__":
    main()
