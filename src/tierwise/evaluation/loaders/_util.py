"""Small helpers the loaders share: CSV headers, split names, token estimates."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tierwise.evaluation.dataset import DatasetError, Ladder

csv.field_size_limit(2**31 - 1)

_SPLIT = re.compile(r"(?:^|[_\-.])(train|test|dev|val|validation)(?:[_\-.]|$)", re.IGNORECASE)


def split_of(path: Path) -> str:
    """The split a file holds, from its name (``arc_challenge_train.csv`` → ``train``)."""
    found = _SPLIT.search(path.stem)
    return found.group(1).lower() if found else ""


def estimate_tokens(text: str | None) -> int | None:
    """Tokens estimated as characters / 4 (rounded up), ``None`` without text."""
    if text is None:
        return None
    return math.ceil(len(text) / 4)


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV file, ``[]`` when it cannot be read as one."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    """Stream a CSV file's rows as dicts."""
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


def first_json_line(path: Path) -> dict[str, Any] | None:
    """The first line of a JSONL file as an object, ``None`` when it is not one."""
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    value = json.loads(line)
                    return value if isinstance(value, dict) else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def decimal_or_none(value: object) -> Decimal | None:
    """A Decimal from a number or numeric string; ``None`` for blanks and junk."""
    if value is None or value == "":
        return None
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return out if out.is_finite() else None


def files(path: Path, pattern: str) -> list[Path]:
    """Files under *path* (non-recursive) matching *pattern*, sorted by name."""
    return sorted(p for p in path.glob(pattern) if p.is_file())


def pick_split(found: Sequence[str], split: str | None, where: Path) -> None:
    """Fail clearly when a requested split is not in the folder."""
    if split is not None and split not in found:
        have = ", ".join(sorted({s or "(unsplit)" for s in found})) or "nothing"
        raise DatasetError(f"{where}: no {split!r} split here; the folder holds {have}")


def generic_ladder(
    models: Sequence[str], quality: dict[str, float], cost: dict[str, float] | None
) -> Ladder:
    """A sensible default ladder when a loader has no preset for the models it found.

    Top: the best mean quality. Bottom: the cheapest model (or the weakest, without costs).
    Middle (with three or more models): the best quality strictly between the two in cost.
    """
    if len(models) == 1:
        return Ladder(("strong",), (models[0],))
    strong = max(models, key=lambda m: (quality[m], m))
    if cost:
        by_cost = sorted((m for m in models if m != strong), key=lambda m: (cost[m], m))
    else:
        by_cost = sorted((m for m in models if m != strong), key=lambda m: (quality[m], m))
    cheap = by_cost[0]
    middle = [m for m in by_cost[1:] if quality[m] > quality[cheap]]
    if middle:
        mid = max(middle, key=lambda m: (quality[m], m))
        return Ladder(("cheap", "mid", "strong"), (cheap, mid, strong))
    return Ladder(("cheap", "strong"), (cheap, strong))
