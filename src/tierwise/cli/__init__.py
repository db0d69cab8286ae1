"""The ``tierwise`` command line. One module per command group; each exposes ``register(app)``.

Command modules import heavy dependencies (SDKs, SQLAlchemy, scikit-learn) inside the command
functions, so ``tierwise --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

_COMMAND_MODULES = (
    "demo",
    "init",
    "policy",
    "route",
    "cost",
    "prices",
    "run",
    "ledger",
    "serve",
    "dashboard",
    "keys",
    "explain",
    "report",
    "advise",
    "eval",
    "plan",
    "learn",
    "feedback",
)


def build_app() -> typer.Typer:
    """Build the Typer application with every command group registered."""
    from tierwise.cli._help import HelpGroup

    app = typer.Typer(
        cls=HelpGroup,
        name="tierwise",
        help="Route each LLM task to the cheapest tier that does it well; prove it, count cents.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )

    def _version(value: bool) -> None:
        if value:
            from tierwise import __version__

            typer.echo(f"tierwise {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """Route each LLM task to the cheapest tier that does it well; prove it, count cents."""

    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"tierwise.cli.{name}")
        module.register(app)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()
