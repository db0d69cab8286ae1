"""The weekly report and the before/after comparison as plain text, for people at a terminal.

Money is printed to the millionth of a dollar (to the cent past $1,000) — the JSON carries the
exact stored sums; rates as percentages with the counts behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from tierwise.ledger.schema import from_pico

if TYPE_CHECKING:
    from tierwise.analytics import Latency, Rate
    from tierwise.reports.compare import Comparison
    from tierwise.reports.weekly import Spender, WeeklyReport

__all__ = ["money", "pct", "render_comparison", "render_weekly", "seconds"]


def money(value: Decimal | None) -> str:
    """Dollars: six places below $1,000, cents above (the JSON has every digit)."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    return f"{sign}${amount:,.6f}" if amount < 1000 else f"{sign}${amount:,.2f}"


def pct(value: float | None, places: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{places}f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _rate(rate: Rate) -> str:
    interval = rate.interval
    text = f"{pct(rate.value)} ({rate.count} of {rate.of}"
    if interval is not None:
        text += f"; 95% {pct(interval[0])}–{pct(interval[1])}"
    return text + ")"


def _table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Rows as aligned columns (the first row is the header), indented by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _bar(share: float | None, width: int = 24) -> str:
    return "#" * round((share or 0) * width)


def _latency(label: str, latency: Latency) -> str:
    return (
        f"{label} p50 {seconds(latency.p50_s)}, p95 {seconds(latency.p95_s)} "
        f"({latency.tasks} tasks)"
    )


def _spenders(title: str, spenders: Sequence[Spender], empty: str) -> list[str]:
    lines = [title]
    if not spenders:
        return [*lines, f"  {empty}"]
    rows = [["", "tasks", "spend"]]
    rows += [[s.name or s.id or "(none)", str(s.tasks), money(s.spend_usd)] for s in spenders]
    return lines + _table(rows, right=(1, 2))


def render_weekly(report: WeeklyReport) -> str:
    """The weekly report (:class:`~tierwise.reports.weekly.WeeklyReport`) as text."""
    r, f, lines = report, report.fleet, []
    days = (r.until - r.since).total_seconds() / 86400
    lines.append(
        f"tierwise report: tasks created {r.since:%Y-%m-%d %H:%M} to {r.until:%Y-%m-%d %H:%M} "
        f"UTC ({days:g} days)"
    )
    lines.append("")
    lines.append(f"spend {money(r.total_usd)}  (the stored cost of every attempt)")
    spend = [
        ["routed live traffic", money(r.routed_usd)],
        ["concrete-model calls", money(from_pico(r.lines.passthrough))],
        ["probes", money(from_pico(r.lines.probe))],
        ["shadow calls", money(from_pico(r.lines.shadow))],
        ["thrown away (failed attempts)", money(f.wasted_usd)],
    ]
    lines += _table(spend, right=(1,))
    if r.lines.replay:
        replayed = money(from_pico(r.lines.replay))
        lines.append(f"  (replayed rows priced at {replayed} were never spent and are left out)")
    per_session = money(r.per_session_usd) if r.sessions else "- (no task carries a session)"
    lines.append(
        f"per session {per_session}  ({r.sessions} sessions, {r.session_tasks} of their tasks)"
    )
    lines.append(f"per accepted task {money(f.cost_per_accepted_usd)}  ({f.accepted} accepted)")
    lines.append("")
    lines.append("spend per day (UTC day the task was created)")
    if r.days:
        top = max(d.spend_usd for d in r.days) or Decimal(1)
        rows = [["day", "tasks", "spend", ""]]
        for d in r.days:
            share = float(d.spend_usd / top) if top else 0.0
            label = d.day.isoformat() + ("*" if d.partial else "")
            rows.append([label, str(d.tasks), money(d.spend_usd), _bar(share)])
        lines += _table(rows, right=(1, 2))
        if any(d.partial for d in r.days):
            lines.append("  * the window covers part of this day")
    else:
        lines.append("  no tasks in this window")
    lines.append("")
    lines.append("tier mix of live traffic (calls by the tier they ran on)")
    rows = [["tier", "calls", "share", "money", "share"]]
    for t in r.tier_mix:
        rows.append(
            [t.tier, str(t.calls), pct(t.calls_share), money(t.cost_usd), pct(t.cost_share)]
        )
    lines += _table(rows, right=(1, 2, 3, 4)) if r.tier_mix else ["  no live calls"]
    lines.append("")
    above = "ABOVE" if r.above_line(f) else "under"
    lines.append(
        f"escalation {_rate(f.escalation)}: {above} the red line of {pct(r.settings.red_line)}"
    )
    if r.kinds:
        rows = [["kind", "resolved", "escalated", "rate", ""]]
        for kind, kt in r.kinds.items():
            flag = "above the line" if r.above_line(kt) else ""
            rows.append([kind, str(kt.resolved), str(kt.escalated), pct(kt.escalation.value), flag])
        lines += _table(rows, right=(1, 2, 3))
    lines.append("latency of resolved tasks: " + _latency("direct", f.latency_direct))
    lines.append("                            " + _latency("escalated", f.latency_escalated))
    lines.append("")
    e = r.efficiency
    lines.append(
        f"routing efficiency ratio {pct(e.ratio.value)} = ({e.first_try} accepted on their first "
        f"attempt − {e.flagged_any} of them flagged) ÷ {e.resolved} resolved"
    )
    flagged = ", ".join(f"{flag} {n}" for flag, n in e.flagged.items())
    lines.append(f"  flags on first-try answers: {flagged}")
    quality = ", ".join(f"{flag} {_rate(rate)}" for flag, rate in r.flags.items())
    lines.append(f"  people's flags on accepted answers: {quality}")
    lines.append("")
    lines.append("top kinds by spend")
    if r.top_kinds:
        rows = [["kind", "tasks", "spend", "share", "started on", "starts on now"]]
        notes = []
        for k in r.top_kinds:
            started = ", ".join(f"{t} {n}" for t, n in sorted(k.start_tiers.items()))
            now = k.current_tier or "-"
            if k.floor:
                now += f" (floor {k.floor}, {k.floor_source or 'policy'})"
            rows.append([k.kind, str(k.tasks), money(k.spend_usd), pct(k.share), started, now])
            for p in k.proposals:
                notes.append(
                    f"  proposal #{p.id} for {k.kind}: floor {p.floor_before or 'none'} -> "
                    f"{p.floor_after or 'none'}" + (f" ({p.reason})" if p.reason else "")
                )
        lines += _table(rows, right=(1, 2, 3))
        lines += notes
    else:
        lines.append("  no tasks in this window")
    lines.append("")
    lines += _spenders("top gateway keys by spend", r.top_keys, "no tasks")
    lines += _spenders("top sessions by spend", r.top_sessions, "no task carries a session")
    lines.append("")
    lines.append(
        f"ESTIMATES, not spend: the {r.work_tasks} routed tasks' own tokens priced on one tier "
        "(catalog prices, every call assumed to pass)"
    )
    rows = [["all on", "model", "estimate", "routed spend ÷ estimate"]]
    for est in r.estimates:
        versus = "-"
        if est.cost_usd:
            versus = f"{float(r.routed_usd / est.cost_usd):.2f}×"
        rows.append([est.tier, est.model, money(est.cost_usd) if est.note is None else "-", versus])
    lines += _table(rows, right=(2, 3))
    lines += [f"  {e.tier}: {e.note}" for e in r.estimates if e.note]
    other = [p for p in r.proposals if p.kind not in {k.kind for k in r.top_kinds}]
    if other:
        lines.append("")
        lines.append("other open learning proposals")
        lines += [
            f"  #{p.id} {p.kind or '-'}: floor {p.floor_before or 'none'} -> "
            f"{p.floor_after or 'none'}"
            for p in other
        ]
    if r.pruned_before is not None and r.since.date() < r.pruned_before:
        lines.append("")
        lines.append(
            f"note: rows before {r.pruned_before} were pruned; hours summarised before that are "
            "in these figures, others only in `tierwise ledger daily`"
        )
    return "\n".join(lines)


def render_comparison(c: Comparison) -> str:
    """A before/after comparison (:class:`~tierwise.reports.compare.Comparison`) as text."""
    b, a = c.before, c.after
    lines = [
        f"before: {b.since:%Y-%m-%d %H:%M} to {b.until:%Y-%m-%d %H:%M} UTC;  "
        f"after: {a.since:%Y-%m-%d %H:%M} to {a.until:%Y-%m-%d %H:%M} UTC",
        "",
    ]
    rows = [["", "before", "after", "change"]]
    rows += [[row.label, row.before, row.after, row.change] for row in c.rows]
    lines += _table(rows, right=(1, 2, 3))
    lines.append("")
    s = c.split
    lines.append(f"the bill's change, {money(s.total_usd)}, split:")
    parts = [
        ["volume (calls × before's cost per call)", money(s.volume_usd)],
        ["tier mix (share of calls per tier, at before's cost per call there)", money(s.mix_usd)],
        ["tokens and prices (cost per call on each tier)", money(s.unit_usd)],
        ["probe and shadow calls", money(s.side_usd)],
    ]
    lines += _table(parts, right=(1,))
    lines.append(f"  {s.verdict}")
    return "\n".join(lines)
