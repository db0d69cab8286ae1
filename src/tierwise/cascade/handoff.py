"""The handoff note: what the next tier is told when a rejected answer makes a task climb.

A stronger model that inherits a weaker model's attempt tends to build on it, mistakes included.
So a climb does not just hand the rejected answer up: it follows it with a note, in a fixed,
versioned format (documented in ``docs/handoff-note.md``), that says what was asked, what the
lower tier answered, why that was rejected, and what to avoid. Both request builders use it —
the library's :func:`~tierwise.cascade.seams.default_request_builder` and the gateway's, which
appends the same two turns to the caller's own body — so every climb reads the same.

Format, version 1 (one line each; excerpts are cut to a fixed number of UTF-8 bytes, so the
whole note never exceeds :data:`HANDOFF_MAX_BYTES`)::

    tierwise handoff note v1
    The previous assistant answer was written by a lower tier ("cheap", model
    claude-haiku-4-5) and rejected by an automatic check. You are taking over this request.
    Asked: <the start of the request>
    Answered: <the start of the rejected answer> (<n> characters in all)
    Rejected because: <the check's detail, else its reason>
    Rejected before: <tier>: <reason>; ...                 (only after several rejections)
    Avoid: reusing or patching the rejected answer, and repeating what the rejection above names.
    Answer the original request again, completely, as your own answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierwise.cascade.seams import Failure
    from tierwise.task import Task

__all__ = ["HANDOFF_HEADER", "HANDOFF_MAX_BYTES", "HANDOFF_VERSION", "handoff_note"]

#: The format's version; the first line of every note names it.
HANDOFF_VERSION = 1
HANDOFF_HEADER = f"tierwise handoff note v{HANDOFF_VERSION}"
#: The largest a note can be, in UTF-8 bytes (so at most this many tokens: budgets count on it).
HANDOFF_MAX_BYTES = 2048

_ASKED_BYTES = 240
_ANSWERED_BYTES = 240
_REASON_BYTES = 600
_EARLIER_BYTES = 100
_EARLIER_MAX = 3


def handoff_note(task: Task, failure: Failure) -> str:
    """The note that follows a rejected answer when *task* climbs past *failure*'s tier.

    Args:
        task: the task being climbed (its prompt is what was asked).
        failure: the rejection: the tier and model that answered, the answer, why it failed,
            who rejected it, and earlier rejections of the same task.

    Returns:
        The note, at most :data:`HANDOFF_MAX_BYTES` bytes of UTF-8.
    """
    model = f", model {failure.model}" if failure.model else ""
    by = "a reviewer" if failure.rejected_by == "reviewer" else "an automatic check"
    output = failure.output or ""
    reason = _clip_end(_one_line(failure.reason) or "no reason given", _REASON_BYTES)
    lines = [
        HANDOFF_HEADER,
        f'The previous assistant answer was written by a lower tier ("{failure.tier}"{model}) '
        f"and rejected by {by}. You are taking over this request.",
        f"Asked: {_clip_start(_one_line(task.prompt), _ASKED_BYTES) or '(empty request)'}",
        f"Answered: {_clip_start(_one_line(output), _ANSWERED_BYTES) or '(an empty answer)'} "
        f"({len(output)} characters in all)",
        f"Rejected because: {reason}",
    ]
    if failure.earlier:
        earlier = "; ".join(
            f"{tier}: {_clip_end(_one_line(why), _EARLIER_BYTES)}"
            for tier, why in failure.earlier[-_EARLIER_MAX:]
        )
        lines.append(f"Rejected before: {earlier}")
    named = "the rejections above name" if failure.earlier else "the rejection above names"
    lines.append(f"Avoid: reusing or patching the rejected answer, and repeating what {named}.")
    lines.append("Answer the original request again, completely, as your own answer.")
    note = "\n".join(lines)
    data = note.encode("utf-8", "surrogatepass")
    if len(data) > HANDOFF_MAX_BYTES:  # cannot happen with the budgets above; kept as a guard
        note = data[:HANDOFF_MAX_BYTES].decode("utf-8", "ignore")
    return note


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip_start(text: str, limit: int) -> str:
    """The start of *text*, at most *limit* UTF-8 bytes (with an ellipsis when cut)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "…"


def _clip_end(text: str, limit: int) -> str:
    """The end of *text* (where errors say most), at most *limit* UTF-8 bytes."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return "…" + data[len(data) - (limit - 3) :].decode("utf-8", "ignore")
