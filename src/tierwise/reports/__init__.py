"""What the ledger says, for people: one task explained (and, soon, the weekly report)."""

from __future__ import annotations

from tierwise.reports.explain import (
    TaskNotFoundError,
    explain_task,
    render_explanation,
    resolve_task_id,
)

__all__ = ["TaskNotFoundError", "explain_task", "render_explanation", "resolve_task_id"]
