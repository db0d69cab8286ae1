"""The weekly report as one self-contained HTML page (``tierwise report --html FILE``).

No script, no stylesheet or font to fetch, no image file: the charts are inline SVG drawn here —
spend per day, the tier mix by calls and by money, escalation per kind with the red line drawn
across — and every figure is the one the text report and ``--json`` give. Everything taken
from the ledger (kind names, key names, session ids) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING

from tierwise.ledger.schema import from_pico
from tierwise.reports.render import money, pct, seconds

if TYPE_CHECKING:
    from tierwise.reports.weekly import Spender, WeeklyReport

__all__ = [
    "day_chart",
    "escalation_chart",
    "escape_html",
    "html_table",
    "mix_chart",
    "render_html",
]

#: Tier colours, bottom tier first (then repeated); concrete-model calls are grey.
_COLOURS = ("#4e9a6f", "#e0a030", "#c0504d", "#6a5acd", "#2f8fbf", "#8c6d46")
_PASSTHROUGH = "#9a9a9a"
_RED = "#d62728"

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;
max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666}.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;min-width:10em}
.card b{display:block;font-size:1.35em}.card span{color:#666;font-size:.85em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;text-align:left;
border-bottom:1px solid #eee}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.above{color:#d62728;font-weight:600}.est{color:#8a5a00}
svg text{font:12px system-ui,sans-serif;fill:#333}
"""


def escape_html(value: object) -> str:
    """*value* as text safe inside HTML elements and quoted attributes."""
    return escape(str(value), quote=True)


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> str:
    """A table of already-escaped cells; *numeric* columns are right-aligned."""

    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="n">{text}</{tag}>' if i in numeric else f"<{tag}>{text}</{tag}>"

    out = ["<table><tr>", *(cell("th", i, _e(h)) for i, h in enumerate(head)), "</tr>"]
    for row in rows:
        out += ["<tr>", *(cell("td", i, c) for i, c in enumerate(row)), "</tr>"]
    out.append("</table>")
    return "".join(out)


_e, _table = escape_html, html_table  # short names for the markup below


def day_chart(report: WeeklyReport) -> str:
    """Spend per UTC day as an inline SVG bar chart (days the window cuts drawn lighter)."""
    days = report.days
    if not days:
        return "<p>No tasks in this window.</p>"
    width, height, left, bottom, top = 900, 220, 70, 40, 20
    step = (width - left - 10) / len(days)
    peak = max(d.spend_usd for d in days) or Decimal(1)
    plot = height - bottom - top
    parts = [
        f'<svg role="img" aria-label="spend per day" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{top + plot}" x2="{width - 10}" y2="{top + plot}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_e(money(peak))}</text>',
        f'<text x="{left - 6}" y="{top + plot}" text-anchor="end">$0</text>',
    ]
    for i, d in enumerate(days):
        h = float(d.spend_usd / peak) * plot if peak else 0.0
        x = left + i * step + step * 0.15
        w = step * 0.7
        title = f"{d.day}: {money(d.spend_usd)}, {d.tasks} tasks" + (
            " (part of the day)" if d.partial else ""
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{"#9ec5e8" if d.partial else "#2f7fbf"}"><title>{_e(title)}</title></rect>'
        )
        if len(days) <= 31:
            label = d.day.strftime("%a %d") if len(days) <= 14 else d.day.strftime("%d")
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{top + plot + 16}" text-anchor="middle">'
                f"{_e(label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _colour(tier: str, index: int) -> str:
    return _PASSTHROUGH if index < 0 else _COLOURS[index % len(_COLOURS)]


def mix_chart(report: WeeklyReport) -> str:
    """The tier mix of live calls, by calls and by money, as inline SVG stacked bars."""
    mix = report.tier_mix
    if not mix:
        return "<p>No live calls in this window.</p>"
    width, left, bar = 900, 70, 28
    parts = [
        f'<svg role="img" aria-label="tier mix" width="{width}" height="{2 * bar + 60}" '
        f'viewBox="0 0 {width} {2 * bar + 60}">'
    ]
    span = width - left - 10
    for row, label in enumerate(("calls", "money")):
        y = 10 + row * (bar + 10)
        parts.append(f'<text x="{left - 6}" y="{y + bar / 2 + 4}" text-anchor="end">{label}</text>')
        x = float(left)
        for t in mix:
            share = (t.calls_share if label == "calls" else t.cost_share) or 0.0
            w = share * span
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" '
                f'fill="{_colour(t.tier, t.tier_index)}"><title>{_e(t.tier)}: {pct(share)}'
                "</title></rect>"
            )
            if w > 40:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + bar / 2 + 4}" text-anchor="middle" '
                    f'style="fill:#fff">{_e(pct(share, 0))}</text>'
                )
            x += w
    x = float(left)
    for t in mix:
        y = 2 * bar + 40
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 10}" width="12" height="12" '
            f'fill="{_colour(t.tier, t.tier_index)}"/>'
            f'<text x="{x + 16:.1f}" y="{y}">{_e(t.tier)}</text>'
        )
        x += 30 + 8 * len(t.tier)
    parts.append("</svg>")
    return "".join(parts)


def escalation_chart(report: WeeklyReport) -> str:
    """Escalation per kind as inline SVG bars, with the red line drawn across."""
    kinds = [(k, t) for k, t in report.kinds.items() if t.resolved]
    if not kinds:
        return "<p>No resolved tasks in this window.</p>"
    line = report.settings.red_line
    scale_max = max([line * 1.5, *((t.escalation.value or 0) for _, t in kinds)])
    scale_max = min(1.0, scale_max * 1.1) or 1.0
    width, left, bar, gap = 900, 160, 18, 6
    span = width - left - 90
    height = len(kinds) * (bar + gap) + 40
    parts = [
        f'<svg role="img" aria-label="escalation per kind" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for i, (kind, t) in enumerate(kinds):
        y = 10 + i * (bar + gap)
        rate = t.escalation.value or 0.0
        w = rate / scale_max * span
        above = rate > line
        parts.append(
            f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end">{_e(kind)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" '
            f'fill="{"#e8837f" if above else "#7fa8d1"}"><title>{_e(kind)}: {t.escalated} of '
            f"{t.resolved} escalated</title></rect>"
            f'<text x="{left + w + 6:.1f}" y="{y + bar - 4}">{_e(pct(rate))} '
            f"({t.escalated}/{t.resolved})</text>"
        )
    x = left + line / scale_max * span
    bottom = 10 + len(kinds) * (bar + gap)
    parts.append(
        f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{bottom}" stroke="{_RED}" '
        f'stroke-width="2" stroke-dasharray="6 3"/>'
        f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" style="fill:{_RED}">'
        f"red line {_e(pct(line, 0))}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _spenders(spenders: Sequence[Spender], empty: str) -> str:
    if not spenders:
        return f"<p>{_e(empty)}</p>"
    rows = [
        [_e(s.name or s.id or "(none)"), str(s.tasks), _e(money(s.spend_usd))] for s in spenders
    ]
    return _table(["", "tasks", "spend"], rows, numeric=(1, 2))


def render_html(report: WeeklyReport) -> str:
    """The report as one HTML document (UTF-8 text), openable without a network."""
    r, f = report, report.fleet
    e = r.efficiency
    title = f"tierwise report {r.since:%Y-%m-%d} to {r.until:%Y-%m-%d}"
    above = r.above_line(f)
    cards = [
        ("spend", money(r.total_usd), "stored cost of every attempt"),
        ("per session", money(r.per_session_usd), f"{r.sessions} sessions"),
        ("per accepted task", money(f.cost_per_accepted_usd), f"{f.accepted} accepted"),
        ("routing efficiency", pct(e.ratio.value), f"{e.efficient} of {e.resolved} resolved"),
        (
            "escalation",
            pct(f.escalation.value),
            f"red line {pct(r.settings.red_line, 0)}" + (" — above" if above else ""),
        ),
        ("thrown away", money(f.wasted_usd), "failed attempts"),
    ]
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Tasks created {r.since:%Y-%m-%d %H:%M} to {r.until:%Y-%m-%d %H:%M} UTC. '
        "Actual figures are the ledger's stored costs; estimates are marked.</p>",
        '<div class="cards">',
        *(
            f'<div class="card"><span>{_e(k)}</span>'
            f"<b{' class=above' if k == 'escalation' and above else ''}>{_e(v)}</b>"
            f"<span>{_e(note)}</span></div>"
            for k, v, note in cards
        ),
        "</div>",
        "<h2>Spend per day (UTC)</h2>",
        day_chart(r),
        "<h2>Spend by line</h2>",
        _table(
            ["line", "spend"],
            [
                ["routed live traffic", _e(money(r.routed_usd))],
                ["concrete-model calls", _e(money(from_pico(r.lines.passthrough)))],
                ["probes", _e(money(from_pico(r.lines.probe)))],
                ["shadow calls", _e(money(from_pico(r.lines.shadow)))],
                ["<b>total</b>", f"<b>{_e(money(r.total_usd))}</b>"],
                ["thrown away on failed attempts (inside the total)", _e(money(f.wasted_usd))],
            ],
            numeric=(1,),
        ),
        "<h2>Tier mix of live traffic</h2>",
        mix_chart(r),
        _table(
            ["tier", "calls", "share", "money", "share"],
            [
                [
                    _e(t.tier),
                    str(t.calls),
                    pct(t.calls_share),
                    _e(money(t.cost_usd)),
                    pct(t.cost_share),
                ]
                for t in r.tier_mix
            ],
            numeric=(1, 2, 3, 4),
        ),
        "<h2>Escalation per kind</h2>",
        escalation_chart(r),
        f"<p>Fleet: {_e(pct(f.escalation.value))} ({f.escalated} of {f.resolved} resolved). "
        f"Latency of direct tasks p50 {_e(seconds(f.latency_direct.p50_s))}, p95 "
        f"{_e(seconds(f.latency_direct.p95_s))}; of escalated tasks p50 "
        f"{_e(seconds(f.latency_escalated.p50_s))}, "
        f"p95 {_e(seconds(f.latency_escalated.p95_s))}.</p>",
        "<h2>Routing efficiency ratio</h2>",
        f"<p>{_e(pct(e.ratio.value))} = ({e.first_try} accepted on their first attempt − "
        f"{e.flagged_any} of them flagged) ÷ {e.resolved} resolved. Flags on first-try answers: "
        + _e(", ".join(f"{k} {v}" for k, v in e.flagged.items()))
        + ". On all accepted answers: "
        + _e(", ".join(f"{k} {pct(v.value)}" for k, v in r.flags.items()))
        + ".</p>",
        "<h2>Top kinds by spend</h2>",
        _table(
            ["kind", "tasks", "spend", "share", "started on", "starts on now", "proposals"],
            [
                [
                    _e(k.kind),
                    str(k.tasks),
                    _e(money(k.spend_usd)),
                    pct(k.share),
                    _e(", ".join(f"{t} {n}" for t, n in sorted(k.start_tiers.items()))),
                    _e((k.current_tier or "-") + (f" (floor {k.floor})" if k.floor else "")),
                    _e(
                        "; ".join(
                            f"#{p.id} {p.floor_before or 'none'} → {p.floor_after or 'none'}"
                            for p in k.proposals
                        )
                    ),
                ]
                for k in r.top_kinds
            ],
            numeric=(1, 2, 3),
        ),
        "<h2>Top gateway keys</h2>",
        _spenders(r.top_keys, "No tasks."),
        "<h2>Top sessions</h2>",
        _spenders(r.top_sessions, "No task carries a session."),
        '<h2 class="est">Estimates (not spend)</h2>',
        f"<p class=\"est\">The {r.work_tasks} routed tasks' own tokens priced once on each tier's "
        "primary model with the catalog, assuming every call there passes.</p>",
        _table(
            ["all on", "model", "estimate"],
            [
                [_e(x.tier), _e(x.model), _e(money(x.cost_usd) if x.note is None else x.note)]
                for x in r.estimates
            ],
            numeric=(2,),
        ),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
