"""The dashboard page: the weekly report as one HTML page, rendered on the server.

:func:`render_dashboard` takes the report's JSON form — exactly what ``tierwise report --json``
prints for the same window — and draws every figure from it: each number sits in an element
whose ``data-testid`` is its path in that JSON (``spend.total_usd``, ``kinds.2.escalation.rate``)
and whose ``data-value`` is its JSON value (a figure shown twice adds ``@place`` to the second
one's path: ``spend.total_usd@lines``), so a script (or a test) can read the page and find
the same numbers. The text shown is that value formatted for people (money to the millionth of
a dollar, rates as percentages, latencies in ms), the way the text report prints it.

No script and nothing fetched: the charts are the report's inline SVG, passed in already drawn,
and the only forms post back to the same dashboard. Everything that came from the ledger (kind
names, key names, session ids, proposal reasons) is escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.reports.dashboard_style import STYLE
from tierwise.reports.html import escape_html as _e
from tierwise.reports.html import html_table as _table
from tierwise.reports.render import money, pct, seconds

__all__ = ["Charts", "Viewer", "Window", "render_dashboard", "render_message", "render_sign_in"]

#: A timestamp as the report and the learner write them (shown to the minute).
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d)?")

#: Where the dashboard is served; its forms post below it.
DASHBOARD_PATH = "/dashboard"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: a signed-in admin (its key's name and the session's CSRF token) or not.

    ``can_sign_in`` is false where no sign-in form makes sense (no admin key could work).
    """

    admin: str | None = None
    csrf: str | None = None
    can_sign_in: bool = True


@dataclass(frozen=True, slots=True)
class Charts:
    """The report's charts, already drawn as inline SVG (or a sentence when there is no data)."""

    days: str = ""
    tier_mix: str = ""
    escalation: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """What the window chooser shows: the text typed (or the report's own bounds)."""

    since: str = ""
    until: str = ""
    query: str = ""  # the query string that reproduces this window, for links and redirects
    notes: Sequence[str] = field(default_factory=tuple)


def _fig(path: str, value: Any, text: str, css: str = "") -> str:
    """One figure: its JSON path as ``data-testid``, its JSON value as ``data-value``."""
    cls = f' class="{css}"' if css else ""
    return (
        f'<span data-testid="{_e(path)}" data-value="{_e(json.dumps(value))}"{cls}>'
        f"{_e(text)}</span>"
    )


def _usd(data: Mapping[str, Any], key: str, path: str, css: str = "") -> str:
    value = data.get(key)
    return _fig(path, value, money(None if value is None else Decimal(value)), css)


def _rate(data: Mapping[str, Any], key: str, path: str, places: int = 1, css: str = "") -> str:
    return _fig(path, data.get(key), pct(data.get(key), places), css)


def _count(data: Mapping[str, Any], key: str, path: str) -> str:
    value = data.get(key)
    return _fig(path, value, "-" if value is None else str(value))


def _secs(data: Mapping[str, Any], key: str, path: str) -> str:
    return _fig(path, data.get(key), seconds(data.get(key)))


def _text(data: Mapping[str, Any], key: str, path: str, empty: str = "-") -> str:
    """A name or label from the report (escaped; ``empty`` when null)."""
    value = data.get(key)
    return _fig(path, value, empty if value is None else str(value))


def _time(data: Mapping[str, Any], key: str, path: str) -> str:
    """An ISO timestamp from the report, shown to the minute (UTC)."""
    from datetime import datetime

    value = data.get(key)
    shown = "-" if value is None else f"{datetime.fromisoformat(value):%Y-%m-%d %H:%M}"
    return _fig(path, value, shown)


def _card(label: str, figure: str, note: str) -> str:
    return (
        f'<div class="card"><span class="label">{_e(label)}</span>'
        f'<span class="big">{figure}</span><small>{note}</small></div>'
    )


def _cards(d: Mapping[str, Any]) -> str:
    esc, eff = d["escalation"], d["routing_efficiency"]
    above = "above" if esc.get("above_red_line") else ""
    cards = [
        _card(
            "spend",
            _usd(d["spend"], "total_usd", "spend.total_usd"),
            "stored cost of every attempt",
        ),
        _card(
            "per session",
            _usd(d, "per_session_usd", "per_session_usd"),
            f"{_count(d, 'sessions', 'sessions')} sessions",
        ),
        _card(
            "per accepted task",
            _usd(d, "per_accepted_task_usd", "per_accepted_task_usd"),
            f"{_count(d['fleet'], 'accepted', 'fleet.accepted')} accepted",
        ),
        _card(
            "routing efficiency",
            _rate(eff["ratio"], "rate", "routing_efficiency.ratio.rate"),
            f"{_count(eff, 'efficient', 'routing_efficiency.efficient')} of "
            f"{_count(eff, 'resolved', 'routing_efficiency.resolved')} resolved",
        ),
        _card(
            "escalation",
            _rate(esc, "rate", "escalation.rate", css=above),
            f"red line {_rate(d, 'red_line', 'red_line', 0)}" + (" — above" if above else ""),
        ),
        _card(
            "thrown away",
            _usd(d, "wasted_usd", "wasted_usd"),
            "failed attempts, inside the spend",
        ),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _days(d: Mapping[str, Any], chart: str) -> str:
    rows = [
        [
            _text(day, "day", f"days.{i}.day") + (" (part)" if day.get("partial") else ""),
            _count(day, "tasks", f"days.{i}.tasks"),
            _usd(day, "spend_usd", f"days.{i}.spend_usd"),
        ]
        for i, day in enumerate(d["days"])
    ]
    table = _table(["day (UTC)", "tasks", "spend"], rows, (1, 2)) if rows else ""
    return (
        "<section><h2>Spend per day</h2>"
        f'<figure data-testid="chart.days">{chart}</figure>{table}</section>'
    )


def _lines(d: Mapping[str, Any]) -> str:
    s = d["spend"]
    rows = [
        ["routed live traffic", _usd(s, "routed_usd", "spend.routed_usd")],
        ["concrete-model calls", _usd(s, "passthrough_usd", "spend.passthrough_usd")],
        ["demotion probes", _usd(s, "probe_usd", "spend.probe_usd")],
        ["shadow calls", _usd(s, "shadow_usd", "spend.shadow_usd")],
        ["<b>total</b>", "<b>" + _usd(s, "total_usd", "spend.total_usd@lines") + "</b>"],
        [
            "thrown away on failed attempts (inside the total)",
            _usd(d, "wasted_usd", "wasted_usd@lines"),
        ],
    ]
    return "<section><h2>Spend by line</h2>" + _table(["line", "spend"], rows, (1,)) + "</section>"


def _mix(d: Mapping[str, Any], chart: str) -> str:
    rows = [
        [
            _text(t, "tier", f"tier_mix.{i}.tier"),
            _count(t, "calls", f"tier_mix.{i}.calls"),
            _rate(t, "calls_share", f"tier_mix.{i}.calls_share"),
            _usd(t, "cost_usd", f"tier_mix.{i}.cost_usd"),
            _rate(t, "cost_share", f"tier_mix.{i}.cost_share"),
        ]
        for i, t in enumerate(d["tier_mix"])
    ]
    table = _table(["tier", "calls", "share", "money", "share"], rows, (1, 2, 3, 4))
    return (
        '<section><h2>Tier mix of live traffic</h2><figure data-testid="chart.tier_mix">'
        f"{chart}</figure>{table}</section>"
    )


def _latency(d: Mapping[str, Any]) -> str:
    rows = [
        [
            label,
            _count(d["latency"][name], "tasks", f"latency.{name}.tasks"),
            _secs(d["latency"][name], "p50_s", f"latency.{name}.p50_s"),
            _secs(d["latency"][name], "p95_s", f"latency.{name}.p95_s"),
        ]
        for name, label in (("direct", "accepted on the first tier"), ("escalated", "escalated"))
    ]
    return (
        "<section><h2>Latency</h2>"
        + _table(["", "tasks", "p50", "p95"], rows, (1, 2, 3))
        + "</section>"
    )


def _escalation(d: Mapping[str, Any], chart: str) -> str:
    rows = []
    for i, k in enumerate(d["kinds"]):
        css = "above" if k.get("above_red_line") else ""
        p = f"kinds.{i}"
        rows.append(
            [
                _text(k, "kind", f"{p}.kind"),
                _count(k, "resolved", f"{p}.resolved"),
                _count(k, "escalated", f"{p}.escalated"),
                _rate(k["escalation"], "rate", f"{p}.escalation.rate", css=css),
                _rate(k["escalation"], "low", f"{p}.escalation.low", 0)
                + "–"
                + _rate(k["escalation"], "high", f"{p}.escalation.high", 0),
                _usd(k, "cost_usd", f"{p}.cost_usd"),
                _usd(k, "wasted_usd", f"{p}.wasted_usd"),
            ]
        )
    esc = d["escalation"]
    fleet = (
        f"<p>Fleet: {_rate(esc, 'rate', 'escalation.rate@kinds')} "
        f"({_count(esc, 'count', 'escalation.count')} of {_count(esc, 'of', 'escalation.of')} "
        f"resolved tasks) against the red line of {_rate(d, 'red_line', 'red_line@kinds', 0)}.</p>"
    )
    table = _table(
        ["kind", "resolved", "escalated", "rate", "95% interval", "spend", "thrown away"],
        rows,
        (1, 2, 3, 4, 5, 6),
    )
    return (
        '<section class="wide"><h2>Escalation per kind, against the red line</h2>'
        f'<figure data-testid="chart.escalation">{chart}</figure>{fleet}{table}</section>'
    )


def _efficiency(d: Mapping[str, Any]) -> str:
    e = d["routing_efficiency"]
    p = "routing_efficiency"
    flagged = ", ".join(
        f"{_e(flag)} {_count(e['first_try_flagged'], flag, f'{p}.first_try_flagged.{flag}')}"
        for flag in e["first_try_flagged"]
    )
    rates = ", ".join(
        f"{_e(flag)} {_rate(rate, 'rate', f'flags.{flag}.rate')}"
        for flag, rate in d["flags"].items()
    )
    return (
        "<section><h2>Routing efficiency ratio</h2>"
        f"<p>{_rate(e['ratio'], 'rate', f'{p}.ratio.rate@parts')} = "
        f"({_count(e, 'first_try', f'{p}.first_try')} accepted on their first attempt − "
        f"{_count(e, 'first_try_flagged_any', f'{p}.first_try_flagged_any')} of them flagged) ÷ "
        f"{_count(e, 'resolved', f'{p}.resolved@parts')} resolved.</p>"
        f"<p>Flags on first-try answers: {flagged}.</p>"
        f"<p>Flag rates on all accepted answers: {rates}.</p></section>"
    )


def _spenders(d: Mapping[str, Any], key: str, title: str, empty: str) -> str:
    rows = [
        [
            _text(s, "name", f"{key}.{i}.name", "")
            + (" " if s.get("name") else "")
            + _text(s, "id", f"{key}.{i}.id", "(none)"),
            _count(s, "tasks", f"{key}.{i}.tasks"),
            _usd(s, "spend_usd", f"{key}.{i}.spend_usd"),
        ]
        for i, s in enumerate(d[key])
    ]
    body = _table(["", "tasks", "spend"], rows, (1, 2)) if rows else f"<p>{_e(empty)}</p>"
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _top_kinds(d: Mapping[str, Any]) -> str:
    rows = []
    for i, k in enumerate(d["top_kinds"]):
        p = f"top_kinds.{i}"
        started = ", ".join(
            f"{_e(tier)} {_count(k['start_tiers'], tier, f'{p}.start_tiers.{tier}')}"
            for tier in sorted(k["start_tiers"])
        )
        now = _text(k, "current_tier", f"{p}.current_tier")
        if k.get("floor"):
            now += " (floor " + _text(k, "floor", f"{p}.floor") + ")"
        proposals = ", ".join(
            "#" + _count(x, "id", f"{p}.proposals.{j}.id")
            for j, x in enumerate(k.get("proposals", []))
        )
        rows.append(
            [
                _text(k, "kind", f"{p}.kind"),
                _count(k, "tasks", f"{p}.tasks"),
                _usd(k, "spend_usd", f"{p}.spend_usd"),
                _rate(k, "share", f"{p}.share"),
                started,
                now,
                proposals or "-",
            ]
        )
    table = _table(
        ["kind", "tasks", "spend", "share", "started on", "starts on now", "proposals"],
        rows,
        (1, 2, 3),
    )
    return f'<section class="wide"><h2>Top kinds by spend</h2>{table}</section>'


def _estimates(d: Mapping[str, Any]) -> str:
    est = d["estimates"]
    rows = [
        [
            _text(x, "tier", f"estimates.tiers.{i}.tier"),
            _text(x, "model", f"estimates.tiers.{i}.model"),
            _usd(x, "cost_usd", f"estimates.tiers.{i}.cost_usd")
            if x.get("note") is None
            else _text(x, "note", f"estimates.tiers.{i}.note"),
        ]
        for i, x in enumerate(est["tiers"])
    ]
    return (
        '<section><h2 class="est">Estimates, not spend: the same tasks on one tier</h2>'
        f'<p class="est">The {_count(est, "tasks", "estimates.tasks")} routed tasks\' own tokens '
        "priced once on each tier's primary model, assuming every call there passes; actually "
        f"spent on them: {_usd(est, 'actual_routed_usd', 'estimates.actual_routed_usd')}.</p>"
        + _table(["all on", "model", "estimate"], rows, (2,))
        + "</section>"
    )


def _evidence(change: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """The proposal's evidence as (label, figure) pairs, nested objects flattened to a.b."""
    out: list[tuple[str, str]] = []
    for key, value in change.items():
        here = f"{path}.{key}"
        if isinstance(value, Mapping):
            out += [(f"{key}.{label}", fig) for label, fig in _evidence(value, here)]
        elif isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out += [
                    (f"{key}.{i}.{label}", fig) for label, fig in _evidence(item, f"{here}.{i}")
                ]
        elif isinstance(value, list):
            out.append((str(key), _fig(here, value, ", ".join(str(v) for v in value))))
        elif isinstance(value, str) and _ISO.fullmatch(value):
            out.append((str(key), _time(change, str(key), here)))
        elif isinstance(value, str) and "\n" in value:  # a TOML patch: keep its lines
            out.append((str(key), f"<pre>{_fig(here, value, value)}</pre>"))
        elif isinstance(value, float):  # a rate or a duration: four significant digits
            out.append((str(key), _fig(here, value, f"{value:.4g}")))
        else:
            out.append((str(key), _fig(here, value, "-" if value is None else str(value))))
    return out


#: Keys of a proposal's ``change_json`` shown in its heading rather than among its figures.
_SHOWN_ABOVE = ("action", "direction", "floor_before", "floor_after", "evidence")


def _proposals(
    d: Mapping[str, Any], changes: Mapping[int, Mapping[str, Any]], viewer: Viewer, window: Window
) -> str:
    items = d.get("proposals", [])
    if viewer.admin:
        intro = "Applying one changes routing for every worker that shares this ledger."
    else:
        intro = "Read-only: sign in with an admin key to apply a proposal."
    out = [
        '<section class="wide"><h2>Learning proposals</h2>',
        f'<p class="muted">{_e(intro)}</p>',
    ]
    if not items:
        out.append('<p data-testid="proposals.none">No open proposals.</p>')
    for i, p in enumerate(items):
        pid = int(p["id"])
        path = f"proposals.{i}"
        change = changes.get(pid, {})
        rows = [
            ("why", _text(p, "reason", f"{path}.reason")),
            ("proposed", _time(p, "created_at", f"{path}.created_at") + " UTC"),
        ]
        shown = {k: v for k, v in change.items() if k not in _SHOWN_ABOVE}
        rows += _evidence(shown, f"{path}.change")
        evidence = change.get("evidence")
        details = ""
        if isinstance(evidence, Mapping):
            details = (
                "<details><summary>the evidence, as the learner recorded it</summary><dl>"
                + "".join(
                    f"<dt>{_e(label)}</dt><dd>{fig}</dd>"
                    for label, fig in _evidence(evidence, f"{path}.change.evidence")
                )
                + "</dl></details>"
            )
        csrf = (
            f'<input type="hidden" name="csrf" value="{_e(viewer.csrf)}">'
            if viewer.admin and viewer.csrf
            else ""
        )
        action = f"{DASHBOARD_PATH}/proposals/{pid}/apply{_e(window.query)}"
        out.append(
            f'<div class="proposal" data-testid="proposal-{pid}">'
            f"<b>#{_fig(f'{path}.id', p['id'], str(pid))} "
            f"{_text(p, 'kind', f'{path}.kind', '(fleet)')}</b>: "
            f"{_e(change.get('direction') or 'change')} the floor "
            f"{_text(p, 'floor_before', f'{path}.floor_before', 'none')} → "
            f"{_text(p, 'floor_after', f'{path}.floor_after', 'none')}"
            "<dl>"
            + "".join(f"<dt>{_e(label)}</dt><dd>{fig}</dd>" for label, fig in rows)
            + "</dl>"
            + details
            + f'<form method="post" action="{action}">'
            f'{csrf}<button type="submit" data-testid="apply-{pid}">Apply #{pid}</button></form>'
            "</div>"
        )
    out.append("</section>")
    return "".join(out)


def _header(d: Mapping[str, Any], viewer: Viewer, window: Window) -> str:
    if viewer.admin:
        who = (
            f'<form method="post" action="{DASHBOARD_PATH}/sign-out">'
            f'<input type="hidden" name="csrf" value="{_e(viewer.csrf or "")}">'
            f'<span data-testid="admin">signed in: {_e(viewer.admin)}</span>'
            '<button class="quiet" type="submit" data-testid="sign-out">Sign out</button></form>'
        )
    elif viewer.can_sign_in:
        who = _sign_in_form(window.query)
    else:
        who = '<span class="sub">read-only</span>'
    chooser = (
        f'<form method="get" action="{DASHBOARD_PATH}">'
        f'<label>since <input name="since" value="{_e(window.since)}" placeholder="7d"'
        ' data-testid="window-since"></label>'
        f'<label>until <input name="until" value="{_e(window.until)}" placeholder="now"'
        ' data-testid="window-until"></label>'
        '<button type="submit" data-testid="window-show">Show</button></form>'
    )
    return (
        "<header><div><h1>tierwise dashboard</h1>"
        f'<div class="sub">tasks created {_time(d, "since", "since")} to '
        f"{_time(d, 'until', 'until')} UTC (end excluded)</div></div>"
        f"{chooser}{who}</header>"
    )


def render_dashboard(
    data: Mapping[str, Any],
    *,
    charts: Charts,
    viewer: Viewer,
    window: Window,
    changes: Mapping[int, Mapping[str, Any]] | None = None,
    notice: str | None = None,
) -> str:
    """The whole page for the report *data* (``WeeklyReport.as_dict()``).

    Args:
        data: the report's JSON form; every figure shown is read from it.
        charts: the report's charts for the same window, already drawn.
        viewer: who is looking (an admin gets the session's CSRF token in each form).
        window: what the window chooser shows, and the query string that keeps it.
        changes: each open proposal's ``change_json`` (the learner's evidence, money, latency
            and TOML patch), by proposal id; its figures' testids are ``proposals.N.change.…``.
        notice: a line to show above everything (an applied proposal, a sign-in).
    """
    notes = "".join(f'<p class="notice bad">{_e(n)}</p>' for n in window.notes)
    body = [
        _header(data, viewer, window),
        "<main>",
        f'<p class="notice" data-testid="notice">{_e(notice)}</p>' if notice else "",
        notes,
        _cards(data),
        '<div class="grid">',
        _days(data, charts.days),
        _lines(data),
        _mix(data, charts.tier_mix),
        _latency(data),
        _escalation(data, charts.escalation),
        _efficiency(data),
        _estimates(data),
        _spenders(data, "top_keys", "Top gateway keys", "No tasks."),
        _spenders(data, "top_sessions", "Top sessions", "No task carries a session."),
        _top_kinds(data),
        _proposals(data, changes or {}, viewer, window),
        "</div></main>",
    ]
    return _page("tierwise dashboard", "".join(body))


def _sign_in_form(query: str) -> str:
    return (
        f'<form method="post" action="{DASHBOARD_PATH}/sign-in{_e(query)}">'
        '<label>admin key <input type="password" name="key" autocomplete="off" '
        'data-testid="admin-key" required></label>'
        '<button type="submit" data-testid="sign-in">Sign in</button></form>'
    )


def render_sign_in(query: str = "") -> str:
    """The page a dashboard served off loopback shows until an admin signs in."""
    return _page(
        "Sign in — tierwise dashboard",
        "<header><h1>tierwise dashboard</h1>" + _sign_in_form(query) + "</header><main>"
        '<p class="notice" data-testid="message">This dashboard is served off loopback: sign '
        "in with an admin key to see it (the key is checked once; the browser keeps a session "
        "cookie, never the key).</p></main>",
    )


def render_message(title: str, message: str, *, back: str = DASHBOARD_PATH) -> str:
    """A short page for a refused or failed action, with a way back to the dashboard."""
    return _page(
        title,
        f"<header><h1>{_e(title)}</h1></header><main>"
        f'<p class="notice bad" data-testid="message">{_e(message)}</p>'
        f'<p><a href="{_e(back)}">Back to the dashboard</a></p></main>',
    )


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
        f"{body}\n</body></html>\n"
    )
