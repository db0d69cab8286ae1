"""`tierwise ledger`: recent attempts, spend and escalation statistics, integrity check, schema
migrations, pruning into daily rollups."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import typer

from tierwise.analytics.when import is_age
from tierwise.analytics.when import parse_age as parse_age  # re-exported: other commands
from tierwise.analytics.when import parse_when as parse_when  # import them from here
from tierwise.cli._common import (
    EXIT_INVALID,
    JsonOption,
    fail,
    jsonable,
    open_ledger_or_exit,
    print_json,
)
from tierwise.cli.ledger_eval import register as register_evaluation
from tierwise.cli.ledger_spool import SpoolDirOption
from tierwise.cli.ledger_spool import register as register_spool

LEDGER_HELP = "Ledger URL or path. Default: $TIERWISE_LEDGER, else ./tierwise-ledger.db."
LedgerOption = typer.Option(None, "--ledger", "-l", help=LEDGER_HELP, show_default=False)
SINCE_HELP = "Only what started at or after this: a date/time (2025-06-01) or an age (7d, 12h)."

_ROLES = ("live", "probe", "shadow", "replay", "all")


def _when_or_exit(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        fail(f"{flag}: {exc}", code=EXIT_INVALID)


def _usd(value: Decimal) -> str:
    return f"${value:.6f}" if abs(value) < 1000 else f"${value:,.2f}"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def parse_day(text: str, *, now: datetime | None = None) -> date:
    """A UTC day from an ISO date (``2025-06-01``) or an age (``90d``: the day 90 days ago).

    Raises:
        ValueError: neither form matches, or a time of day was given.
    """
    if is_age(text):
        return parse_when(text, now=now).date()
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a UTC day (2025-06-01) or an age (90d, 12w), got {text!r}"
        ) from None


def _held_line(held: dict[str, Any]) -> str | None:
    if not held["reservations"]:
        return None
    line = (
        f"held by {held['reservations']} open reservation(s): {_usd(held['held_usd'])}"
        f" (oldest since {held['oldest_at']:%Y-%m-%d %H:%M} UTC)"
    )
    if held["expired"]:
        line += (
            f"; {held['expired']} past the reservation TTL ({_usd(held['expired_usd'])}), "
            "released at the next reservation or `tierwise ledger release-stale`"
        )
    return line


def register(app: typer.Typer) -> None:
    """Add ``tierwise ledger tail|stats|daily|check|migrate|prune|release-stale|replay|export``."""
    group = typer.Typer(
        help=(
            "Inspect and maintain the ledger: recent attempts, spend and escalation, integrity, "
            "schema migrations, pruning, spooled rows."
        ),
        no_args_is_help=True,
    )
    app.add_typer(group, name="ledger")
    register_spool(group, LedgerOption)
    register_evaluation(group, LedgerOption)

    @group.command("tail")
    def tail(
        n: int = typer.Option(20, "-n", "--lines", min=1, help="How many attempts to show."),
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Show the latest attempts, oldest first: tier, model, outcome, cost and why it failed.

        Example: tierwise ledger tail -n 50 --kind extract --json
        """
        since_at = _when_or_exit(since, "--since")
        with open_ledger_or_exit(ledger) as book:
            rows = book.tail(n, kind=kind, since=since_at)
        if as_json:
            print_json(jsonable(rows))
            return
        if not rows:
            typer.echo("no attempts recorded yet", err=True)
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for col in ("UTC", "task#", "kind", "tier"):  # `tierwise explain` takes the task prefix
            table.add_column(col, no_wrap=True)
        table.add_column("model", overflow="fold")
        table.add_column("outcome", no_wrap=True)
        table.add_column("cost", justify="right", no_wrap=True)
        table.add_column("latency", justify="right", no_wrap=True)
        reasons: list[str] = []
        for r in rows:
            tier = r["tier"] + (" (validator)" if r["role"] == "validator" else "")
            table.add_row(
                r["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
                f"{r['task_id'][:8]}#{r['attempt_no']}",
                r["kind"],
                tier,
                r["model"],
                r["outcome"],
                _usd(r["cost_usd"]),
                _seconds(r["latency_s"]),
            )
            if r["failure"]:
                reasons.append(f"{r['task_id'][:8]}#{r['attempt_no']}: {r['failure']}")
        console = Console()
        console.print(table)
        for line in reasons:  # free text reads better below the table than squeezed into it
            console.print(line, markup=False, highlight=False)

    @group.command("stats")
    def stats(
        since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
        until: str | None = typer.Option(None, "--until", help="Only what started before this."),
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        role: str = typer.Option(
            "live", "--role", help="Which traffic: live, probe, replay, or all."
        ),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Tasks, attempts, escalation rate, spend and wasted spend per kind and tier.

        Wasted spend is the cost of attempts that were rejected or errored. Escalation is the
        one definition `tierwise learn status` uses: the share of resolved live tasks whose
        accepted output came from a tier above the one they started on, or that failed on every
        tier; on a tier's row, of the tasks that started there.

        Example: tierwise ledger stats --since 7d --kind extract
        """
        if role not in _ROLES:
            fail(f"--role: expected one of {', '.join(_ROLES)}, got {role!r}")
        since_at = _when_or_exit(since, "--since")
        until_at = _when_or_exit(until, "--until")
        with open_ledger_or_exit(ledger) as book:
            data = book.stats(
                since=since_at, until=until_at, kind=kind, role=None if role == "all" else role
            )
        if as_json:
            print_json(jsonable(data))
            return
        notes = [_held_line(data["held"])]
        if data["pruned_before"] is not None:
            notes.append(
                f"note: rows before {data['pruned_before']} were pruned; `tierwise ledger "
                "daily` has their exact totals"
            )
        if not data["tasks"] and not data["attempts"]:
            typer.echo("no tasks in this window", err=True)
            for note in filter(None, notes):
                typer.echo(note, err=True)
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_footer=True)
        table.add_column("kind", footer="all", min_width=7, overflow="fold")
        table.add_column("tier", footer="", overflow="fold")
        table.add_column("tasks", justify="right", footer=str(data["tasks"]))
        table.add_column("attempts", justify="right", footer=str(data["attempts"]))
        table.add_column("escal.", justify="right", footer=_pct(data["escalation_rate"]))
        # tasks that failed on every tier: part of the escalation rate, and worth seeing apart
        table.add_column(
            "exhausted",
            justify="right",
            footer=str(data["outcomes"].get("exhausted", 0)),
        )
        for col, key in (("spend", "spend_usd"), ("wasted", "wasted_usd")):
            table.add_column(col, justify="right", no_wrap=True, footer=_usd(data[key]))
        table.add_column(
            "p50", justify="right", no_wrap=True, footer=_seconds(data["latency_p50_s"])
        )
        table.add_column(
            "p95", justify="right", no_wrap=True, footer=_seconds(data["latency_p95_s"])
        )
        for name, entry in data["by_kind"].items():
            table.add_row(
                f"[bold]{name}[/bold]",
                "",
                str(entry["tasks"]),
                str(entry["attempts"]),
                _pct(entry["escalation_rate"]),
                str(entry["outcomes"].get("exhausted", 0)),
                _usd(entry["spend_usd"]),
                _usd(entry["wasted_usd"]),
                _seconds(entry["latency_p50_s"]),
                _seconds(entry["latency_p95_s"]),
            )
            for row in (r for r in data["by_kind_tier"] if r["kind"] == name):
                table.add_row(
                    "",
                    row["tier"],
                    str(row["tasks"]),
                    str(row["attempts"]),
                    _pct(row["escalation_rate"]),
                    "",
                    _usd(row["spend_usd"]),
                    _usd(row["wasted_usd"]),
                    "",
                    "",
                )
        console = Console()
        console.print(table)
        tiers = ", ".join(
            f"{tier} {_pct(entry['escalation_rate'])}" for tier, entry in data["by_tier"].items()
        )
        if tiers:
            console.print(f"escalation rate per tier: {tiers}")
        shadow = data.get("shadow") or {}
        if shadow.get("attempts"):
            console.print(
                f"shadow calls (shadow budget; in none of the figures above): "
                f"{shadow['attempts']} attempts, {_usd(shadow['spend_usd'])}",
                markup=False,
                highlight=False,
            )
        probes = data.get("probes") or {}
        if probes.get("attempts"):
            console.print(
                f"demotion probes (included above, on the tier they ran on): "
                f"{probes['attempts']} attempts, {probes['passed']} passed, "
                f"{probes['rejected']} rejected, {_usd(probes['spend_usd'])}",
                markup=False,
                highlight=False,
            )
        keys = [k for k in data["by_key"] if k["key_id"] is not None]
        if keys:
            spend = ", ".join(
                f"{k['key'] or '#' + str(k['key_id'])} {_usd(k['spend_usd'])} ({k['tasks']} tasks)"
                for k in data["by_key"]
            )
            console.print(f"spend per key: {spend}", markup=False, highlight=False)
        for note in filter(None, notes):
            console.print(note, markup=False, highlight=False)

    @group.command("daily")
    def daily(
        since: str | None = typer.Option(
            None, "--since", help="First UTC day: 2025-06-01 or an age (30d)."
        ),
        until: str | None = typer.Option(None, "--until", help="UTC day to stop before."),
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        role: str = typer.Option("live", "--role", help="live, probe, replay or all."),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Exact totals per UTC day, kind and tier, pruned days included.

        Days pruned by `tierwise ledger prune` come from their rollups, later days from the
        rows, and the figures are the same either way. Task counts are by the tier the router
        chose, attempts and spend by the tier they ran on.

        Example: tierwise ledger daily --since 30d --kind extract --json
        """
        if role not in _ROLES:
            fail(f"--role: expected one of {', '.join(_ROLES)}, got {role!r}")
        try:
            first = parse_day(since) if since is not None else None
            stop = parse_day(until) if until is not None else None
        except ValueError as exc:
            fail(f"--since/--until: {exc}", code=EXIT_INVALID)
        with open_ledger_or_exit(ledger) as book:
            rows = book.daily(
                since=first, until=stop, kind=kind, role=None if role == "all" else role
            )
        if as_json:
            print_json(jsonable(rows))
            return
        if not rows:
            typer.echo("no tasks in this window", err=True)
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        table.add_column("UTC day", no_wrap=True)
        for col in ("kind", "tier", "role"):
            table.add_column(col, overflow="fold")
        for col in ("tasks", "attempts", "escal.", "spend", "wasted"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in rows:
            table.add_row(
                r["day"].isoformat(),
                r["kind"],
                r["tier"],
                r["role"],
                str(r["tasks"]),
                str(r["attempts"]),
                _pct(r["tier_escalated"] / r["tier_tasks"] if r["tier_tasks"] else None),
                _usd(r["cost_usd"]),
                _usd(r["wasted_usd"]),
            )
        Console().print(table)

    @group.command("migrate")
    def migrate(
        check: bool = typer.Option(
            False, "--check", help="Change nothing: exit 0 when current, 1 when one is pending."
        ),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Bring the ledger's schema up to this tierwise's version.

        Runs under a lock every migrator takes (Postgres: an advisory lock; SQLite: the write
        lock), so it is safe while gateways use the ledger or start and migrate at the same
        time. A schema newer than this tierwise is refused and left alone. Run it as a
        deployment step when the ledger URL says migrate=manual.

        Example: tierwise ledger migrate --ledger postgresql+psycopg://tierwise@db/tierwise
        """
        from tierwise.errors import LedgerError
        from tierwise.ledger import default_ledger_url, ledger_url
        from tierwise.ledger.engine import create_ledger_engine
        from tierwise.ledger.migrate import migrate as run_migrations
        from tierwise.ledger.migrate import migration_status

        target = ledger_url(ledger) if ledger else default_ledger_url()
        try:
            engine = create_ledger_engine(target, create=not check)
        except LedgerError as exc:
            fail(str(exc), code=EXIT_INVALID)
        try:
            status = migration_status(engine) if check else run_migrations(engine)
        except LedgerError as exc:
            fail(str(exc), code=EXIT_INVALID)
        finally:
            engine.dispose()
        if as_json:
            print_json(status.as_dict())
        elif status.applied:
            typer.echo(
                f"{status.url}: migrated to {status.head} (applied {', '.join(status.applied)})"
            )
        elif status.up_to_date:
            typer.echo(f"{status.url}: schema {status.head} is up to date")
        else:
            typer.echo(
                f"{status.url}: schema {status.current or 'none'}, "
                f"{len(status.pending)} migration(s) pending ({', '.join(status.pending)})"
            )
        if check and not status.up_to_date:
            raise typer.Exit(1)

    @group.command("prune")
    def prune(
        before: str = typer.Option(
            ...,
            "--before",
            help="First UTC day to keep: 2025-01-01, or an age (90d: keep the last 90 days).",
        ),
        batch_size: int = typer.Option(
            1000, "--batch-size", min=1, help="Tasks deleted per transaction."
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Count what would be pruned; change nothing."
        ),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Delete tasks and attempts created before a UTC day, keeping exact daily rollups.

        Each batch is added to the daily rollups and deleted in one transaction, so totals stay
        exact even if pruning stops half way (run it again to finish). `tierwise ledger daily`
        reports pruned days from the rollups. Closed reservations, budget counters of past days
        and sessions without tasks before that day go too. Running tasks younger than the
        reservation TTL are kept.

        Example: tierwise ledger prune --before 90d --dry-run
        """
        try:
            day = parse_day(before)
        except ValueError as exc:
            fail(f"--before: {exc}", code=EXIT_INVALID)
        with open_ledger_or_exit(ledger) as book:
            if as_json or dry_run:
                try:
                    result = book.prune(day, batch_size=batch_size, dry_run=dry_run)
                except ValueError as exc:
                    fail(str(exc), code=EXIT_INVALID)
            else:
                from rich.console import Console
                from rich.progress import Progress

                with Progress(console=Console(stderr=True), transient=True) as bar:
                    job = bar.add_task(f"pruning before {day}", total=None)

                    def advance(done: int, total: int) -> None:
                        bar.update(job, completed=done, total=total)

                    try:
                        result = book.prune(day, batch_size=batch_size, progress=advance)
                    except ValueError as exc:
                        fail(str(exc), code=EXIT_INVALID)
        if as_json:
            print_json(result.as_dict())
            return
        verb = "would prune" if result.dry_run else "pruned"
        days = f"{len(result.days)} day(s)"
        if result.days:
            days += f", {result.days[0]} to {result.days[-1]}"
        typer.echo(
            f"{verb} {result.tasks} task(s) and {result.attempts} attempt(s) created before "
            f"{day} ({days}); {result.reservations} closed reservation(s), "
            f"{result.budget_counters} budget counter(s), {result.sessions} session(s)"
        )

    @group.command("release-stale")
    def release_stale(
        older_than: str = typer.Option(
            "1h", "--older-than", help="Release reservations held longer than this (e.g. 30m, 2h)."
        ),
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Release budget reservations left held by processes that died mid-attempt.

        A live attempt holds its reservation for seconds to minutes; one held for hours belongs
        to a process that was killed, and keeps its budget blocked until released.

        Example: tierwise ledger release-stale --older-than 2h
        """
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            fail(f"--older-than: {exc}", code=EXIT_INVALID)
        with open_ledger_or_exit(ledger) as book:
            released = book.release_stale(age)
        if as_json:
            print_json({"released": released})
        else:
            typer.echo(f"released {released} stale reservation(s)")

    @group.command("check")
    def check(
        ledger: str | None = LedgerOption,
        spool_dir: str | None = SpoolDirOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Check the ledger: storage integrity, costs adding up, budget counters and leftovers.

        Leftovers: reservations still held after their task ended, tasks still running past
        the reservation TTL (the process that ran them died), and paid calls' rows that a
        gateway spooled to local disk while the database was unreachable and that are not in
        the ledger yet (looked for in --spool-dir; reported even when the database is down).
        Exits 0 when sound, 2 when any problem is found (each printed on its own line).

        Example: tierwise ledger check --ledger ./tierwise-ledger.db
        """
        from tierwise.cli.ledger_spool import spool_folder, spool_report
        from tierwise.errors import LedgerError
        from tierwise.ledger import default_ledger_url, open_ledger
        from tierwise.ledger.engine import display_url
        from tierwise.ledger.spool import ledger_identity

        target = ledger or default_ledger_url()
        try:
            identity = ledger_identity(target)
        except LedgerError as exc:
            fail(str(exc), code=EXIT_INVALID)
        problems, notes, spooled = spool_report(spool_folder(spool_dir), identity)
        url = display_url(target) if "://" in target else target
        error: str | None = None  # the ledger cannot be opened: spooled rows still count
        try:
            with open_ledger(target, create=False) as book:
                problems += book.integrity_check()
                url = book.url
        except LedgerError as exc:
            error = str(exc)
        ok = not problems and error is None
        if as_json:
            report = {"ledger": url, "ok": ok, "problems": problems, "spool": spooled}
            print_json({**report, "error": error} if error else report)
        else:
            for line in problems:
                typer.echo(line)
            if ok:
                typer.echo(f"ledger OK: {url}")
        for note in notes:
            typer.echo(note, err=True)
        if error is not None:
            fail(error, code=EXIT_INVALID)
        if problems:
            typer.echo(f"ledger {url}: {len(problems)} problem(s) found", err=True)
            raise typer.Exit(EXIT_INVALID)
