"""`tierwise serve`: the Anthropic Messages + OpenAI Chat Completions gateway."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tierwise.cli._common import EXIT_INVALID, PolicyOption, fail

if TYPE_CHECKING:
    from tierwise.gateway.config import GatewayConfig

LEDGER_HELP = "Ledger URL or path. Default: $TIERWISE_LEDGER, else ./tierwise-ledger.db."


def register(app: typer.Typer) -> None:
    """Add ``tierwise serve`` to *app*."""

    @app.command("serve")
    def serve(
        policy: Path | None = PolicyOption,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8686, "--port", min=0, max=65535, help="Port to listen on."),
        ledger: str | None = typer.Option(None, "--ledger", "-l", help=LEDGER_HELP),
        workers: int = typer.Option(
            1, "--workers", min=1, max=64, help="Worker processes (they share the ledger)."
        ),
        max_body_bytes: int = typer.Option(
            10 * 1024 * 1024, "--max-body-bytes", min=1, help="Larger request bodies get 413."
        ),
        log_level: str = typer.Option(
            "info",
            "--log-level",
            help="debug, info, warning or error (the request lines are info).",
        ),
        log_format: str = typer.Option(
            "text",
            "--log-format",
            help="text, or json: one JSON object per line with each request's task id, key, "
            "kind, tiers tried, status, cost, latency and error class.",
        ),
        allow_missing_keys: bool = typer.Option(
            False,
            "--allow-missing-keys",
            help="Start even when a tier's upstream key variable is unset; /healthz then "
            "reports that tier unavailable. By default the gateway refuses to start.",
        ),
        allow_anonymous: bool = typer.Option(
            False,
            "--allow-anonymous",
            help="Serve requests without a gateway key even off loopback (logged as a warning "
            "at every start). Keys that are presented are still checked.",
        ),
        spool_dir: str | None = typer.Option(
            None,
            "--spool-dir",
            help="Where paid calls' ledger rows wait while the ledger's database is unreachable "
            "(one file per worker, written to the ledger when it is back). Default: "
            "$TIERWISE_SPOOL_DIR, else ./tierwise-spool.",
            show_default=False,
        ),
        no_wait_for_ledger: bool = typer.Option(
            False,
            "--no-wait-for-ledger",
            help="Answer before the ledger commit is on disk: lower latency, but a crash can "
            "lose the last few milliseconds of rows.",
        ),
    ) -> None:
        """Serve the gateway: point an agent's Anthropic or OpenAI client at it.

        Model "tierwise/auto" or "tierwise/<kind>": routed, validated,
        escalated, recorded. A concrete model id: passed through, metered.

        Gateway keys come from `tierwise keys create`. Whether requests need
        one is decided at start: off loopback always (unless --allow-anonymous);
        on loopback only once a key exists. Upstream keys are read from the
        environment variables the policy's tiers name.

        Example: tierwise serve --policy tierwise.toml --ledger ./ledger.db

        Then: ANTHROPIC_BASE_URL=http://127.0.0.1:8686, or an OpenAI client
        with base_url="http://127.0.0.1:8686/v1".
        """
        import os

        from tierwise.cli._common import (
            echo_policy_warnings,
            load_policy_or_exit,
            resolve_policy_path,
        )
        from tierwise.errors import LedgerError
        from tierwise.gateway.config import GatewayConfig, is_loopback
        from tierwise.gateway.logs import configure_logging
        from tierwise.gateway.upstream import describe_missing, missing_keys
        from tierwise.ledger import default_ledger_url, ledger_url, open_ledger

        if log_format not in ("text", "json"):
            fail(f"--log-format: expected text or json, got {log_format!r}")
        policy_path = resolve_policy_path(policy)
        loaded = load_policy_or_exit(policy)  # errors now, with key paths, not in a worker
        echo_policy_warnings(loaded)
        url = ledger_url(ledger) if ledger else default_ledger_url()
        if not is_loopback(host) and not allow_anonymous:  # decided here, once, at start
            try:
                with open_ledger(url) as book:
                    has_keys = book.has_api_keys()
            except LedgerError as exc:
                fail(str(exc), code=EXIT_INVALID)
            if not has_keys:
                fail(
                    f"refusing to serve on {host}: no gateway keys exist, so the gateway would "
                    "be open to anyone who can reach it; create one with `tierwise keys create "
                    "--name NAME`, serve on 127.0.0.1, or pass --allow-anonymous",
                    code=EXIT_INVALID,
                )
        missing = missing_keys(loaded, os.environ)
        if missing and not allow_missing_keys:
            fail(f"refusing to start: {describe_missing(missing)}", code=EXIT_INVALID)
        config = GatewayConfig(
            policy_path=str(policy_path.resolve()) if policy_path is not None else None,
            ledger_url=url,
            max_body_bytes=max_body_bytes,
            host=host,
            wait_for_ledger=not no_wait_for_ledger,
            allow_anonymous=allow_anonymous,
            allow_missing_keys=allow_missing_keys,
            log_level=log_level,
            log_format=log_format,
            workers=workers,
            spool_dir=str(Path(spool_dir).resolve()) if spool_dir else None,
        )
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        typer.echo(
            f"tierwise gateway on {base} (Anthropic base_url {base}, OpenAI base_url {base}/v1); "
            f"policy {policy_path or 'embedded default'} ({len(loaded.ladder)} tiers), "
            f"ledger {url}",
            err=True,
        )
        configure_logging(log_level, log_format)  # only once serving: refusals stay one line
        _run(config, host, port, workers, log_level)


def _run(config: GatewayConfig, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (uvicorn's graceful shutdown)."""
    import os

    import uvicorn

    from tierwise.gateway.app import create_app
    from tierwise.gateway.config import CONFIG_ENV
    from tierwise.gateway.server import bind_socket, uvicorn_config

    try:
        # Our own socket, bound with IPPROTO_TCP so that accepted connections get TCP_NODELAY
        # (uvicorn's own would not: every answer would wait ~40 ms on Nagle and delayed ACKs).
        sock = bind_socket(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=1)
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            os.environ[CONFIG_ENV] = config.to_json()
            sock.set_inheritable(True)
            settings = uvicorn_config(
                "tierwise.gateway.app:create_app_from_env",
                factory=True,
                workers=workers,
                log_level=log_level,
                # A restarted worker (SIGHUP, a policy reload) imports and compiles before it
                # is ready; on a busy host that can take longer than uvicorn's default 5 s, and
                # an aborted restart would silently keep the old policy.
                timeout_worker_healthcheck=60,
            )
            Multiprocess(settings, sockets=[sock]).run()
            return
        server = uvicorn.Server(uvicorn_config(create_app(config), log_level=log_level))
        server.run(sockets=[sock])
    finally:
        sock.close()
