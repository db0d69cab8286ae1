"""Feedback: flags people put on a task's output after the fact, the latest per task and author.

Three flags, and what the analytics make of them (:mod:`tierwise.analytics`):

* ``wrong`` — the accepted output was wrong: a late failure of the tier that produced it;
* ``needed_frontier`` — on a task accepted below the top tier, under-routing; on a task the top
  tier answered, a confirmation that it had to go there;
* ``cheaper_would_do`` — a cheaper tier would have done: over-routing.

One row per (task, author): flagging again replaces the author's earlier flag and note, so the
same request sent twice changes nothing (idempotent) and a change of mind is one row, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tierwise.ledger.schema import feedback, tasks
from tierwise.ledger.sql import upsert

__all__ = ["FLAGS", "MAX_NOTE_CHARS", "Feedback", "Flag", "check_flag", "of_task", "record"]

Flag = Literal["wrong", "needed_frontier", "cheaper_would_do"]
#: Every flag, in the order the CLI and the API list them.
FLAGS: tuple[Flag, ...] = ("wrong", "needed_frontier", "cheaper_would_do")
#: Longer notes are refused rather than cut: a note is a sentence or two, not a log.
MAX_NOTE_CHARS = 4000
_MAX_AUTHOR_CHARS = 255


@dataclass(frozen=True, slots=True)
class Feedback:
    """One author's current flag on one task.

    ``change`` says what recording it did: ``created`` (the author's first flag on the task),
    ``replaced`` (a different flag or note replaced theirs) or ``unchanged`` (the same again).
    """

    task_id: str
    author: str
    flag: str
    note: str | None
    key_id: int | None
    created_at: datetime
    updated_at: datetime
    change: str = "unchanged"

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "author": self.author,
            "flag": self.flag,
            "note": self.note,
            "key_id": self.key_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "change": self.change,
        }


def check_flag(flag: str) -> Flag:
    """*flag* as a :data:`Flag`.

    Raises:
        ValueError: not one of :data:`FLAGS` (the message lists them).
    """
    for known in FLAGS:
        if flag == known:
            return known
    raise ValueError(f"flag must be one of {', '.join(FLAGS)}; got {flag!r}")


def _check(author: str, note: str | None) -> None:
    if not author.strip() or len(author) > _MAX_AUTHOR_CHARS:
        raise ValueError(f"author must be 1-{_MAX_AUTHOR_CHARS} characters, got {len(author)}")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"note must be at most {MAX_NOTE_CHARS} characters, got {len(note)}")


def _row(row: sa.Row[Any], change: str = "unchanged") -> Feedback:
    m = row._mapping
    return Feedback(
        task_id=m["task_id"],
        author=m["author"],
        flag=m["flag"],
        note=m["note"],
        key_id=m["key_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        change=change,
    )


def record(
    conn: sa.Connection,
    task_id: str,
    flag: str,
    *,
    author: str,
    note: str | None,
    key_id: int | None,
    now: datetime,
) -> Feedback | None:
    """Store *author*'s flag on *task_id*, replacing theirs; ``None`` when the task is unknown.

    *note* must already be redacted. Run inside a write transaction.

    Raises:
        ValueError: an unknown flag, an empty or over-long author, an over-long note.
    """
    checked = check_flag(flag)
    _check(author, note)
    if conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_id)).first() is None:
        return None
    c = feedback.c
    before = conn.execute(
        sa.select(c.flag, c.note, c.key_id).where(c.task_id == task_id, c.author == author)
    ).first()
    if before is not None and tuple(before) == (checked, note, key_id):
        change = "unchanged"
    else:
        change = "created" if before is None else "replaced"
        values = {
            "task_id": task_id,
            "author": author,
            "flag": checked,
            "note": note,
            "key_id": key_id,
            "created_at": now,
            "updated_at": now,
        }
        upsert(
            conn, feedback, ["task_id", "author"], values, ["flag", "note", "key_id", "updated_at"]
        )
    row = conn.execute(sa.select(feedback).where(c.task_id == task_id, c.author == author)).one()
    return _row(row, change)


def of_task(conn: sa.Connection, task_id: str) -> list[Feedback]:
    """Every author's current flag on *task_id*, oldest first."""
    c = feedback.c
    rows = conn.execute(
        sa.select(feedback).where(c.task_id == task_id).order_by(c.created_at, c.id)
    )
    return [_row(r) for r in rows.all()]
