"""Regex validators on RE2 against Python's ``re``, measured side by side in this run.

Two questions:

1. **Catastrophic patterns.** ``(a+)+$`` against ``"a" * n + "b"``: ``re`` backtracks through
   every way of splitting the run of ``a`` (time doubles with each extra character, and the
   GIL is held throughout, so a gateway stops answering); RE2 is linear. Printed for n where
   ``re`` still finishes in seconds, then RE2 alone on 100,000 characters.
2. **Ordinary patterns.** What linear time costs on the checks policies usually have (an
   invoice number, a verdict word, a JSON-ish line) on outputs of 200 B to 200 KB: RE2 ÷ re.

Both engines run through the same call the validator makes (``search``), on the same inputs.

Run: ``.venv/bin/python benchmarks/regex_validator.py [--max-n 24]``
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from tierwise.policy.patterns import compile_pattern


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def catastrophic(max_n: int) -> None:
    pattern = "(a+)+$"
    python, linear = re.compile(pattern), compile_pattern(pattern)
    print(f"1. {pattern!r} on 'a' * n + 'b' (no match)")
    print(f"{'n':>8} {'re':>12} {'RE2':>12} {'re ÷ RE2':>12}")
    for n in range(max(4, max_n - 8), max_n + 1, 2):
        text = "a" * n + "b"
        t_re = timed(lambda text=text: python.search(text))
        t_re2 = timed(lambda text=text: linear.search(text), repeat=5)
        print(f"{n:>8} {t_re * 1e3:>10.2f}ms {t_re2 * 1e6:>10.1f}µs {t_re / t_re2:>11,.0f}×")
    for n in (100_000, 1_000_000):
        text = "a" * n + "b"
        t_re2 = timed(lambda text=text: linear.search(text), repeat=3)
        print(f"{n:>8} {'(years)':>12} {t_re2 * 1e6:>10.1f}µs")


ORDINARY = (
    (r"\bINV-\d{4,}\b", "the invoice INV-20431 from ACME, total 10 EUR. "),
    (r"^(yes|no)$", "Let me think about this carefully. "),
    (r'"total":\s*-?\d+(\.\d+)?', '{"vendor": "ACME", "lines": [1, 2, 3], "note": "x"} '),
)


def ordinary() -> None:
    print("\n2. ordinary patterns (search, best of 20)")
    print(f"{'pattern':<28} {'output':>8} {'re':>10} {'RE2':>10} {'RE2 ÷ re':>10}")
    for pattern, chunk in ORDINARY:
        python, linear = re.compile(pattern), compile_pattern(pattern)
        for size in (200, 20_000, 200_000):
            text = (chunk * (size // len(chunk) + 1))[:size]
            t_re = timed(lambda text=text, p=python: p.search(text), repeat=20)
            t_re2 = timed(lambda text=text, p=linear: p.search(text), repeat=20)
            print(
                f"{pattern[:28]:<28} {size:>7,}B {t_re * 1e6:>8.1f}µs {t_re2 * 1e6:>8.1f}µs"
                f" {t_re2 / t_re:>9.2f}×"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=24, help="largest n for re (2^n steps)")
    args = parser.parse_args()
    catastrophic(args.max_n)
    ordinary()


if __name__ == "__main__":
    main()
