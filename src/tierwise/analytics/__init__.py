"""How routing is doing: the one definition of escalation, analytics over a window, the red line.

>>> from tierwise.analytics import Settings, analyze
>>> with open_ledger("tierwise-ledger.db") as ledger:  # doctest: +SKIP
...     report = analyze(ledger, Settings.from_policy(policy))  # the last 14 days
...     report.red_line.above, report.group("extract", "cheap").totals.escalation.value

* **Escalation** (:mod:`tierwise.ledger.escalation`, re-exported here): a task escalated when
  its accepted output came from a tier above the one it started on, or it failed on every tier;
  the rate counts live traffic on the ladder, resolved tasks only, and leaves out probes, shadow
  calls, validators' own calls, alternate-model fallbacks, replayed rows and concrete-model
  calls. ``ledger stats``, ``learn status``, the daily rollups, the reports, the learner and
  ``/metrics`` all use it.
* **Analytics** (:func:`analyze`): per kind and starting tier — tasks, first-try pass rate,
  escalation rate with a 95% Wilson interval and its reasons, cost per accepted output, money
  thrown away on failed attempts, latency p50/p95 of direct against escalated tasks, people's
  flags, and whether a validator measures the kind at all (*unmeasured* kinds never fail, which
  is not health).
* **The red line** (:func:`red_line`, :func:`fleet_escalation`): the fleet's rate over the last
  day against ``[fleet] escalation_red_line``, the kinds with the largest excess first.

Feedback is written with :meth:`tierwise.ledger.Ledger.record_feedback`.
"""

from tierwise.analytics.rates import Rate, wilson_interval
from tierwise.analytics.redline import fleet_escalation, red_line
from tierwise.analytics.results import (
    Analytics,
    Contribution,
    FlagStats,
    GroupStats,
    KindStats,
    Latency,
    RedLine,
    Settings,
    SideLine,
    Totals,
)
from tierwise.analytics.window import DEFAULT_WINDOW, analyze, analyze_connection, window_bounds
from tierwise.ledger.escalation import AttemptFacts, TaskClass, classify, task_facts
from tierwise.ledger.feedback import FLAGS

__all__ = [
    "DEFAULT_WINDOW",
    "FLAGS",
    "Analytics",
    "AttemptFacts",
    "Contribution",
    "FlagStats",
    "GroupStats",
    "KindStats",
    "Latency",
    "Rate",
    "RedLine",
    "Settings",
    "SideLine",
    "TaskClass",
    "Totals",
    "analyze",
    "analyze_connection",
    "classify",
    "fleet_escalation",
    "red_line",
    "task_facts",
    "wilson_interval",
    "window_bounds",
]
