"""What the ledger says, for people: the weekly report, before and after, one task explained,
and the advisor.

>>> from tierwise.reports import weekly_report, render_weekly
>>> with open_ledger("tierwise-ledger.db") as ledger:  # doctest: +SKIP
...     report = weekly_report(ledger, policy)  # the last 7 days
...     print(render_weekly(report)); report.as_dict()["routing_efficiency"]

Every figure is read off one summary of a window (:mod:`tierwise.reports.measures`), so the
report, ``compare`` and the advisor cannot disagree; ``docs/reports.md`` defines each one.
"""

from __future__ import annotations

from tierwise.reports.advisor import Advice, advise, advise_workload
from tierwise.reports.compare import BillSplit, Comparison, compare, compare_reports, split_bill
from tierwise.reports.explain import (
    TaskNotFoundError,
    explain_task,
    render_explanation,
    resolve_task_id,
)
from tierwise.reports.html import render_html
from tierwise.reports.render import render_comparison, render_weekly
from tierwise.reports.weekly import WeeklyReport, weekly_report

__all__ = [
    "Advice",
    "BillSplit",
    "Comparison",
    "TaskNotFoundError",
    "WeeklyReport",
    "advise",
    "advise_workload",
    "compare",
    "compare_reports",
    "explain_task",
    "render_comparison",
    "render_explanation",
    "render_html",
    "render_weekly",
    "resolve_task_id",
    "split_bill",
    "weekly_report",
]
