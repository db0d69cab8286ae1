"""Points in time as people type them: an ISO date or date-time, or an age such as ``7d``.

The CLI's ``--since``/``--until`` and the dashboard's window chooser read them the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["is_age", "parse_age", "parse_when"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def is_age(text: str) -> bool:
    """Whether *text* is an age such as ``7d`` rather than a date."""
    return _AGE.match(text) is not None


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from an ISO date/time or an age like ``7d`` (``s m h d w``).

    Raises:
        ValueError: neither form matches.
    """
    match = _AGE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a date (2025-06-01), a date-time (2025-06-01T12:00) or an age "
            f"(7d, 12h, 30m), got {text!r}"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_age(text: str) -> timedelta:
    """A duration from an age like ``14d``, ``12h``, ``2w`` (``s m h d w``).

    Raises:
        ValueError: not an age, or zero.
    """
    match = _AGE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected an age like 14d, 12h or 2w, got {text!r}")
    return timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
