"""`tierwise learn propose | apply | revert | history | set`: the learner's proposals and every
change to the effective policy (the file plus the changes in the ledger), audited."""

from __future__ import annotations

import getpass
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from tierwise.cli._common import (
    EXIT_INVALID,
    JsonOption,
    PolicyOption,
    fail,
    jsonable,
    load_policy_or_exit,
    open_ledger_or_exit,
    print_json,
)
from tierwise.cli.ledger import LedgerOption, parse_age, parse_when

if TYPE_CHECKING:
    from tierwise.learning import LearnRun
    from tierwise.ledger import PolicyChange

__all__ = ["add_apply", "add_history", "add_propose", "add_revert", "add_set"]

#: A change was refused (stale, held by an override, in the wrong state).
EXIT_REFUSED = 1

ActorOption = typer.Option(
    None,
    "--actor",
    help="Who is deciding, for the audit. Default: $TIERWISE_ACTOR, else your login name.",
    show_default=False,
)
_AGE = re.compile(r"^\s*\d+(?:\.\d+)?\s*[smhdw]\s*$", re.IGNORECASE)


def _actor(given: str | None) -> str:
    if given and given.strip():
        return given.strip()[:255]
    env = os.environ.get("TIERWISE_ACTOR", "").strip()
    if env:
        return env[:255]
    try:
        return getpass.getuser()[:255]
    except (OSError, KeyError):  # no login name (a container without a user entry)
        return "cli"


def _refused(exc: Exception) -> NoReturn:
    from tierwise.errors import PolicyChangeError

    unknown = isinstance(exc, PolicyChangeError) and exc.unknown
    fail(str(exc), code=EXIT_INVALID if unknown else EXIT_REFUSED)


def _short(revision: str | None) -> str:
    return "-" if revision is None else revision[:12]


def _floor(value: str | None) -> str:
    return value if value is not None else "no floor"


def _move(change: PolicyChange) -> str:
    return f"{change.kind}: {_floor(change.floor_before)} → {_floor(change.floor_after)}"


def _print_run(run: LearnRun) -> None:
    ev = run.evidence
    days = run.settings.window.total_seconds() / 86400
    mode = "dry run" if run.dry_run else f"{run.settings.mode} mode"
    typer.echo(
        f"learner ({mode}) over {ev.since:%Y-%m-%d %H:%M} → {ev.until:%Y-%m-%d %H:%M} UTC "
        f"({days:g} days), {len(ev.kinds)} kinds with live tasks"
    )
    if not run.proposed:
        typer.echo("no proposals")
    for item in run.proposed:
        p = item.proposal
        ident = "(not recorded)" if item.change is None else f"#{item.change.id}"
        state = "" if item.change is None else f" [{item.change.status}]"
        fresh = " new" if item.new else ""
        typer.echo(f"\n{p.direction}{fresh} {ident}{state}: {p.summary}")
        if item.change is not None and item.change.status == "proposed":
            typer.echo(f"  apply it: tierwise learn apply {item.change.id}")
        typer.echo("  or edit the policy file:")
        for line in p.toml.splitlines():
            typer.echo(f"    {line}")
    if run.applied:
        typer.echo("")
        for change in run.applied:
            typer.echo(
                f"applied #{change.id} ({_move(change)}) by {change.actor}; revision "
                f"{_short(change.revision_before)} → {_short(change.revision_after)}"
            )
    if run.withdrawn:
        typer.echo("")
        for change in run.withdrawn:
            typer.echo(f"withdrawn #{change.id} ({_move(change)}): {change.reason}")
    if run.holds:
        typer.echo("\nno move:")
        for hold in run.holds:
            typer.echo(f"  {hold.kind}: {hold.detail}")


def add_propose(group: typer.Typer) -> None:
    """``tierwise learn propose``."""

    @group.command("propose")
    def propose(
        until: str | None = typer.Option(
            None, "--until", help="Judge as of this UTC date/time (default: now)."
        ),
        window: str | None = typer.Option(
            None, "--window", help="Days of evidence (14d, 2w). Default: \\[fleet] window_days."
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Show the proposals without recording or applying any."
        ),
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Propose raising or lowering kinds' floors from the ledger's evidence.

        Promote a kind one tier when the lower bound of its failure rate on its floor reaches
        \\[fleet] promotion_threshold over at least min_sample tasks and the next tier passes
        them; demote it when probes one tier below pass with confidence (demotion_threshold).
        Each proposal shows the evidence, the money (failed attempts no longer paid for against
        dearer first attempts) and latency, and the equivalent edit of the policy file.

        In \\[fleet] mode = "suggest" (the default) proposals are only recorded: apply one with
        `tierwise learn apply ID`. In "auto" mode they are applied at once. Run it from cron
        (hourly, say); a kind moves at most once per cool-down.

        Example: tierwise learn propose --policy tierwise.toml --json
        """
        from tierwise.learning import propose as run_learner

        pol = load_policy_or_exit(policy)
        end = None
        if until is not None:
            try:
                end = parse_when(until)
            except ValueError as exc:
                fail(f"--until: {exc}", code=EXIT_INVALID)
        length: timedelta | None = None
        if window is not None:
            try:
                length = parse_age(window)
            except ValueError as exc:
                fail(f"--window: {exc}", code=EXIT_INVALID)
        with open_ledger_or_exit(ledger) as book:
            run = run_learner(book, pol, until=end, window=length, dry_run=dry_run)
        if as_json:
            print_json(jsonable(run.as_dict()))
        else:
            _print_run(run)


def _change_id(text: str) -> int:
    value = text.lstrip("#")
    if not value.isdigit():
        fail(f"expected a change id like 12 (see `tierwise learn history`), got {text!r}")
    return int(value)


def add_apply(group: typer.Typer) -> None:
    """``tierwise learn apply ID``."""

    @group.command("apply")
    def apply(
        change: str = typer.Argument(..., help="The proposal's id (tierwise learn propose)."),
        actor: str | None = ActorOption,
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Apply a proposal: the kind's floor changes for every process sharing the ledger.

        The change lives in the ledger, not in the policy file; gateways and library processes
        pick it up within seconds, and tasks record the new effective revision. Refused (exit
        1) when the proposal is stale or a person's override holds the kind.

        Example: tierwise learn apply 12 --actor alice
        """
        from tierwise.errors import PolicyChangeError
        from tierwise.learning import apply_change

        pol = load_policy_or_exit(policy)
        with open_ledger_or_exit(ledger) as book:
            try:
                done = apply_change(book, pol, _change_id(change), actor=_actor(actor))
            except PolicyChangeError as exc:
                _refused(exc)
        _report(done, f"applied #{done.id}", as_json)


def _report(change: PolicyChange, what: str, as_json: bool) -> None:
    if as_json:
        print_json(jsonable(change.as_dict()))
        return
    typer.echo(
        f"{what} ({_move(change)}) by {change.actor}; effective revision "
        f"{_short(change.revision_before)} → {_short(change.revision_after)}; processes "
        "sharing the ledger follow within seconds"
    )


def add_revert(group: typer.Typer) -> None:
    """``tierwise learn revert ID``."""

    @group.command("revert")
    def revert(
        change: str = typer.Argument(..., help="The applied change's id (or override's)."),
        reason: str | None = typer.Option(None, "--reason", help="Why, for the audit."),
        actor: str | None = ActorOption,
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Undo an applied change, or lift an override: the revision before it comes back.

        The revert is itself an audited change (who, when, revisions before and after). A change
        followed by a later one of its kind must wait until that one is reverted.

        Example: tierwise learn revert 12 --reason "cheap model regressed"
        """
        from tierwise.errors import PolicyChangeError
        from tierwise.learning import revert_change

        pol = load_policy_or_exit(policy)
        with open_ledger_or_exit(ledger) as book:
            try:
                done = revert_change(
                    book, pol, _change_id(change), actor=_actor(actor), reason=reason
                )
            except PolicyChangeError as exc:
                _refused(exc)
        _report(done, f"reverted #{done.reverts} (audited as #{done.id})", as_json)


def add_history(group: typer.Typer) -> None:
    """``tierwise learn history``."""

    @group.command("history")
    def history(
        kind: str | None = typer.Option(None, "--kind", "-k", help="Only this task kind."),
        limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Every change to the effective policy, newest first: proposals, applied and rejected
        ones, reverts and overrides, with who decided, when, and the revisions before and after.

        Example: tierwise learn history --kind extract --json
        """
        from tierwise.learning import effective_policy
        from tierwise.learning import history as read_history

        pol = load_policy_or_exit(policy)
        with open_ledger_or_exit(ledger) as book:
            rows = read_history(book, kind=kind, limit=limit)
            effective, changes = effective_policy(pol, book)
        if as_json:
            print_json(
                jsonable(
                    {
                        "revision": effective.revision,
                        "file_revision": effective.file_revision,
                        "in_force": list(changes.ids),
                        "floors": dict(changes.floors),
                        "changes": [c.as_dict() for c in rows],
                    }
                )
            )
            return
        _print_history(rows, effective.revision, changes.ids)


def _print_history(rows: list[PolicyChange], revision: str, in_force: tuple[int, ...]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    force = ", ".join(f"#{i}" for i in in_force) or "none"
    console.print(
        f"effective revision {revision[:12]}; changes in force: {force}",
        markup=False,
        highlight=False,
    )
    if not rows:
        console.print("no policy changes recorded", markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("id", "when (UTC)", "kind", "action", "floor", "status", "by", "revisions"):
        table.add_column(name, overflow="fold", no_wrap=name in ("id", "when (UTC)", "status"))
    table.add_column("reason", overflow="fold", ratio=1)
    for c in rows:
        when = c.decided_at or c.created_at
        action = c.action if c.reverts is None else f"revert #{c.reverts}"
        if c.override and c.until is not None:
            action += f" until {c.until:%Y-%m-%d %H:%M}"
        table.add_row(
            str(c.id),
            f"{when:%Y-%m-%d %H:%M}",
            c.kind or "-",
            action,
            f"{_floor(c.floor_before)} → {_floor(c.floor_after)}",
            c.status,
            c.actor or "-",
            f"{_short(c.revision_before)[:8]}→{_short(c.revision_after)[:8]}"
            if c.revision_after
            else "-",
            _clip(c.reason or ""),
        )
    console.print(table)
    console.print("full reasons and evidence: --json", markup=False, highlight=False)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _until(text: str, now: datetime) -> datetime:
    """A future moment: an ISO date/time (UTC when naive) or an age from now (``7d``)."""
    if _AGE.match(text):
        return now + parse_age(text)
    return parse_when(text)


def add_set(group: typer.Typer) -> None:
    """``tierwise learn set KIND --floor TIER``."""

    @group.command("set")
    def set_(
        kind: str = typer.Argument(..., help="The task kind."),
        floor: str = typer.Option(..., "--floor", help="The tier the kind never goes below."),
        reason: str = typer.Option(..., "--reason", help="Why, for the audit."),
        until: str | None = typer.Option(
            None, "--until", help="When the override ends: a UTC date/time or a duration (7d)."
        ),
        actor: str | None = ActorOption,
        policy: Path | None = PolicyOption,
        ledger: str | None = LedgerOption,
        as_json: bool = JsonOption,
    ) -> None:
        """A person's override of a kind's floor, which always beats the learner.

        It applies at once to every process sharing the ledger, is audited like any change, and
        holds until it expires (--until) or is lifted with `tierwise learn revert ID`.

        Example: tierwise learn set extract --floor mid --reason "month-end close" --until 7d
        """
        from tierwise.errors import PolicyChangeError
        from tierwise.learning import set_floor

        pol = load_policy_or_exit(policy)
        now = datetime.now(UTC)
        end = None
        if until is not None:
            try:
                end = _until(until, now)
            except ValueError as exc:
                fail(f"--until: {exc}", code=EXIT_INVALID)
        with open_ledger_or_exit(ledger) as book:
            try:
                done = set_floor(
                    book, pol, kind, floor, reason=reason, actor=_actor(actor), until=end, now=now
                )
            except PolicyChangeError as exc:
                fail(str(exc), code=EXIT_INVALID)
        if as_json:
            print_json(jsonable(done.as_dict()))
            return
        lasts = "until reverted" if done.until is None else f"until {done.until:%Y-%m-%d %H:%M} UTC"
        note = "" if kind in pol.kinds else f" (kind {kind!r} is not in the policy file)"
        typer.echo(
            f"override #{done.id}: {_move(done)} {lasts}{note}; effective revision "
            f"{_short(done.revision_before)} → {_short(done.revision_after)}; lift it with "
            f"`tierwise learn revert {done.id}`"
        )
