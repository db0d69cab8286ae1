"""Spool files in `tierwise ledger check` and `tierwise ledger replay`: a paid call's rows that a
gateway kept on local disk while the database was unreachable (see :mod:`tierwise.ledger.spool`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tierwise.cli._common import EXIT_INVALID, JsonOption, fail, print_json

if TYPE_CHECKING:
    from tierwise.ledger.spool import SpoolFile

SPOOL_HELP = (
    "The gateways' spool directory on this host (give the one they were started with). "
    "Default: $TIERWISE_SPOOL_DIR, else ./tierwise-spool."
)
SpoolDirOption = typer.Option(None, "--spool-dir", help=SPOOL_HELP, show_default=False)


def spool_folder(given: str | None) -> Path:
    """The spool directory: the flag, else ``$TIERWISE_SPOOL_DIR``, else ``./tierwise-spool``."""
    from tierwise.ledger.spool import default_spool_dir

    return Path(given) if given else default_spool_dir()


def spool_report(folder: Path, identity: str) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """What the spool directory holds for the ledger *identity*: (problems, notes, JSON rows).

    Rows not yet written and rows the ledger refused are problems; files of other ledgers are
    notes.
    """
    from tierwise.ledger.spool import scan

    problems: list[str] = []
    notes: list[str] = []
    entries: list[dict[str, Any]] = []
    for found in scan(folder):
        if found.problem is not None:
            problems.append(f"spool {found.path}: unreadable ({found.problem})")
            continue
        if found.ledger is not None and found.ledger != identity and not found.rejected:
            if found.tasks:
                notes.append(
                    f"spool {found.path}: {found.tasks} task(s) for another ledger "
                    f"({found.ledger}), not checked here"
                )
            continue
        entries.append(_as_json(found))
        if not found.tasks:
            continue
        if found.rejected:
            problems.append(
                f"spool {found.path}: {found.tasks} task(s), {found.rows} row(s) the ledger "
                "refused when they were replayed; each line of the file gives the reason"
            )
        else:
            problems.append(
                f"spool {found.path}: {found.tasks} task(s), {found.rows} row(s) not in the "
                f"ledger yet ({_owner(found)})"
            )
    return problems, notes, entries


def _owner(found: SpoolFile) -> str:
    who = f"process {found.pid} on {found.host}"
    if found.live:
        return f"{who} is running and writes them once the database answers"
    return (
        f"{who} is gone: the next gateway started with this spool directory writes them, "
        "or run `tierwise ledger replay`"
    )


def _as_json(found: SpoolFile) -> dict[str, Any]:
    return {
        "path": str(found.path),
        "tasks": found.tasks,
        "rows": found.rows,
        "live": found.live,
        "rejected": found.rejected,
        "pid": found.pid,
        "host": found.host,
    }


def register(group: typer.Typer, ledger_option: Any) -> None:
    """Add ``tierwise ledger replay`` to the ``ledger`` group."""

    @group.command("replay")
    def replay(
        spool_dir: str | None = SpoolDirOption,
        ledger: str | None = ledger_option,
        as_json: bool = JsonOption,
    ) -> None:
        """Write the spooled rows of gateways that no longer run into the ledger.

        A gateway that could not reach its database after a paid call keeps the call's rows in
        a spool file and writes them itself once the database answers; a gateway started later
        with the same spool directory takes over the files of processes that are gone. This
        does the same now, e.g. on a host where no gateway runs any more. Files of running
        gateways are left to them. Writing a file twice changes nothing.

        Example: tierwise ledger replay --spool-dir /var/lib/tierwise/spool
        """
        from tierwise.errors import LedgerError
        from tierwise.ledger import default_ledger_url, open_ledger
        from tierwise.ledger.spool import replay_orphans, scan

        folder = spool_folder(spool_dir)
        try:
            with open_ledger(ledger or default_ledger_url(), create=False) as book:
                result = replay_orphans(folder, book)
                url = book.url
        except LedgerError as exc:
            fail(str(exc), code=EXIT_INVALID)
        except OSError as exc:
            fail(f"cannot read the spool directory {folder}: {exc}", code=EXIT_INVALID)
        running = [f for f in scan(folder) if f.live and f.tasks]
        if as_json:
            print_json(
                {
                    "ledger": url,
                    "tasks": result.tasks,
                    "rows": result.rows,
                    "rejected": result.rejected,
                    "left_to_running_gateways": [_as_json(f) for f in running],
                }
            )
        else:
            refused = f"; {result.rejected} refused (kept aside)" if result.rejected else ""
            typer.echo(
                f"wrote {result.tasks} spooled task(s), {result.rows} row(s) from {folder} "
                f"to {url}{refused}"
            )
            for found in running:
                typer.echo(f"left to its running gateway: {found.path} ({_owner(found)})")
        if result.rejected:
            raise typer.Exit(EXIT_INVALID)
