"""`tierwise dashboard`: the weekly report as a live page, served alone (read-only until an
admin signs in). `tierwise serve` serves the same page at /dashboard beside the gateway."""

from __future__ import annotations

from pathlib import Path

import typer

from tierwise.cli._common import EXIT_INVALID, PolicyOption, fail
from tierwise.cli.ledger import LedgerOption


def register(app: typer.Typer) -> None:
    """Add ``tierwise dashboard`` to *app*."""

    @app.command("dashboard")
    def dashboard(
        ledger: str | None = LedgerOption,
        policy: Path | None = PolicyOption,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8687, "--port", min=0, max=65535, help="Port to listen on."),
    ) -> None:
        """Serve the dashboard: spend over time, tier mix, escalation per kind against the red
        line, waste, latency, top keys and sessions, shadow and probe spend, and the learning
        proposals with an apply button.

        Every figure is the one `tierwise report --json` gives for the same window
        (/dashboard?since=7d&until=now; dates, date-times or ages). On loopback anyone who can
        reach the page can read it; served elsewhere it shows only a sign-in form. Applying a
        proposal needs an admin key (`tierwise keys create --name NAME --role admin`), entered
        once in the page's sign-in form: the browser keeps a session cookie, never the key.

        Example: tierwise dashboard --ledger ./tierwise-ledger.db --policy tierwise.toml

        Then open http://127.0.0.1:8687/dashboard.
        """
        import uvicorn

        from tierwise.cli._common import echo_policy_warnings, load_policy_or_exit
        from tierwise.errors import LedgerError
        from tierwise.gateway.config import is_loopback
        from tierwise.gateway.dashboard import create_dashboard_app
        from tierwise.gateway.server import bind_socket, uvicorn_config
        from tierwise.ledger import default_ledger_url, ledger_url, open_ledger

        loaded = load_policy_or_exit(policy)
        echo_policy_warnings(loaded)
        url = ledger_url(ledger) if ledger else default_ledger_url()
        try:
            with open_ledger(url, create=False) as book:  # errors now, in one line
                admins = [k for k in book.list_api_keys() if k.role == "admin"]
        except LedgerError as exc:
            fail(str(exc), code=EXIT_INVALID)
        if not admins:
            note = "read-only: no admin key exists, so nobody can sign in to apply proposals"
            if not is_loopback(host):
                note = "no admin key exists, so nobody can sign in to see it off loopback"
            typer.echo(f"note: {note} (tierwise keys create --name NAME --role admin)", err=True)
        try:
            sock = bind_socket(host, port)
            sock.listen(128)  # connections queue from now on, before the line below is printed
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=1)
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        typer.echo(
            f"tierwise dashboard on http://{shown}:{sock.getsockname()[1]}/dashboard; ledger {url}",
            err=True,
        )
        app_ = create_dashboard_app(url, loaded, host=host)
        try:
            uvicorn.Server(uvicorn_config(app_, log_level="warning")).run(sockets=[sock])
        finally:
            sock.close()
