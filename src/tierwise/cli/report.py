"""`tierwise report`: the weekly routing report, and `report compare` for before/after."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import typer

from tierwise.cli._common import (
    EXIT_INVALID,
    JsonOption,
    PolicyOption,
    fail,
    load_policy_or_exit,
    open_ledger_or_exit,
    print_json,
)
from tierwise.cli.ledger import LedgerOption, parse_when

SINCE_HELP = "Start of the window: a UTC date/time (2026-05-04) or an age (7d). Default: 7d."
UNTIL_HELP = "End of the window, not included: a UTC date/time or an age. Default: now."


def when_or_exit(text: str | None, flag: str) -> datetime | None:
    """A parsed ``--since``/``--until`` (``now`` too), or exit 2 naming the flag."""
    if text is None:
        return None
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        return parse_when(text)
    except ValueError as exc:
        fail(f"{flag}: {exc}", code=EXIT_INVALID)


def period_or_exit(text: str, flag: str) -> tuple[datetime, datetime]:
    """``A..B`` (each a date, date-time or age) as [A, B), or exit 2 naming the flag."""
    start, sep, end = text.partition("..")
    if not sep or not start.strip() or not end.strip():
        fail(f"{flag}: expected START..END such as 2026-04-06..2026-04-13, got {text!r}")
    since, until = when_or_exit(start, flag), when_or_exit(end, flag)
    assert since is not None and until is not None
    if since >= until:
        fail(f"{flag}: the start {since.isoformat()} is not before the end {until.isoformat()}")
    return since, until


@contextmanager
def summary_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """Progress on stderr while ended hours are summarised for the first time (a terminal only)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("summarising hours not read before", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def register(app: typer.Typer) -> None:
    """Add ``tierwise report`` and ``tierwise report compare`` to *app*."""
    group = typer.Typer(invoke_without_command=True)
    app.add_typer(group, name="report")

    @group.callback()
    def report(
        ctx: typer.Context,
        since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
        until: str | None = typer.Option(None, "--until", help=UNTIL_HELP),
        top: int = typer.Option(5, "--top", min=1, help="How many keys, sessions, kinds to list."),
        html: Path | None = typer.Option(
            None, "--html", help="Also write the report as one self-contained HTML page here."
        ),
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """The weekly routing report: where the money went and whether quality held, over the
        tasks created in a window (`report compare` sets two windows side by side).

        Spend per day, per session and per accepted task; the tier mix by calls and by money;
        escalation per kind against the red line; money thrown away on failed attempts;
        latency of direct and escalated tasks; the top keys, sessions and kinds (with where
        each kind starts now and any open learning proposal); probe and shadow spend on their
        own lines; the routing efficiency ratio with its parts; and, labelled as estimates,
        the same tasks on each single tier. Every actual figure is a sum of the ledger's stored
        costs. The first report over a window summarises its ended hours into the ledger
        (kept for the next report); later ones read those sums.

        Example: tierwise report --since 2026-05-04 --until 2026-05-11 --html week19.html
        """
        if ctx.invoked_subcommand is not None:
            return
        from tierwise.reports.weekly import weekly_report

        start, end = when_or_exit(since, "--since"), when_or_exit(until, "--until")
        pol = load_policy_or_exit(policy)
        with open_ledger_or_exit(ledger) as book, summary_progress(not as_json) as progress:
            try:
                data = weekly_report(book, pol, since=start, until=end, top=top, progress=progress)
            except ValueError as exc:
                fail(str(exc))
        if html is not None:
            from tierwise.reports.html import render_html

            try:
                html.write_text(render_html(data), encoding="utf-8")
            except OSError as exc:
                fail(f"--html: cannot write {html}: {exc.strerror or exc}")
        if as_json:
            print_json(data.as_dict())
            return
        from tierwise.reports.render import render_weekly

        typer.echo(render_weekly(data))
        if html is not None:
            typer.echo(f"\nwrote {html}")

    @group.command("compare")
    def compare(
        before: str = typer.Option(..., "--before", help="The window before: START..END."),
        after: str = typer.Option(..., "--after", help="The window after: START..END."),
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Two windows side by side: call volume, tier mix, bill, escalation rate and people's
        flag rates, each with its change, and the bill's change split into the part the tier
        mix explains and the parts volume and token counts explain — a routing win or a quiet
        week.

        Windows are START..END, each a UTC date, date-time, age (7d) or now; END is not
        included: --before 2026-04-06..2026-04-13 is the week of Monday 6 April.

        Example: tierwise report compare --before 14d..7d --after 7d..now
        """
        from tierwise.reports.compare import compare as compare_windows

        windows = period_or_exit(before, "--before"), period_or_exit(after, "--after")
        pol = load_policy_or_exit(policy)
        with open_ledger_or_exit(ledger) as book, summary_progress(not as_json) as progress:
            try:
                data = compare_windows(book, pol, windows[0], windows[1], progress=progress)
            except ValueError as exc:
                fail(str(exc))
        if as_json:
            print_json(data.as_dict())
            return
        from tierwise.reports.render import render_comparison

        typer.echo(render_comparison(data))
