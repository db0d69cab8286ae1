"""Suggestions ("did you mean …?") for misspelt names, fast even for thousands of names.

``difflib.get_close_matches`` compares a word with every choice: fine for a ladder or a table's
fields, quadratic when 20,000 rules name kinds that 20,000 ``[kinds]`` entries might match. For
long lists, :class:`Suggester` first narrows the choices to those one edit away (a shared
one-character deletion catches a substitution, an insertion, a deletion or a swap of neighbours)
and then ranks those with ``difflib`` as before; short lists go straight to ``difflib``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["Suggester", "listing"]

#: Up to this many choices, every one is compared (exactly ``difflib``'s behaviour).
SMALL = 64
#: Longer words get no suggestion from a long list (their deletions would cost too much).
MAX_WORD = 64
#: At most this many candidates are gathered for one word, and this many ranked by difflib.
MAX_CANDIDATES = 200
RANKED = 3


class Suggester:
    """The closest of *choices* to a word, when ``difflib``'s ratio reaches *cutoff*."""

    __slots__ = ("_index", "choices", "cutoff")

    def __init__(self, choices: Iterable[str], *, cutoff: float = 0.6) -> None:
        self.choices = list(dict.fromkeys(choices))
        self.cutoff = cutoff
        self._index: dict[str, list[str]] | None = None
        if len(self.choices) > SMALL:
            index: dict[str, list[str]] = {}
            for choice in self.choices:
                if len(choice) <= MAX_WORD:
                    for variant in _variants(choice):
                        index.setdefault(variant, []).append(choice)
            self._index = index

    def closest(self, word: str) -> str | None:
        """The best match for *word*, or None."""
        candidates = self.choices
        if self._index is not None:
            if len(word) > MAX_WORD:
                return None
            shared: dict[str, int] = {}
            for variant in _variants(word):
                for choice in self._index.get(variant, ()):
                    shared[choice] = shared.get(choice, 0) + 1
                if len(shared) >= MAX_CANDIDATES:
                    break
            candidates = sorted(shared, key=shared.__getitem__, reverse=True)[:RANKED]
        close = difflib.get_close_matches(word, candidates, n=1, cutoff=self.cutoff)
        return close[0] if close else None


def _variants(word: str) -> set[str]:
    """*word* and every string one character shorter."""
    return {word, *(word[:i] + word[i + 1 :] for i in range(len(word)))}


def listing(names: Iterable[str], limit: int = 10) -> str:
    """Names for a message, at most *limit* of them: ``a, b, c`` or ``a, b, … (12 more)``."""
    items = list(names)
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", … ({len(items) - limit} more)"
