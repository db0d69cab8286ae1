"""`tierwise init`: write the commented default policy to start from."""

from __future__ import annotations

from pathlib import Path

import typer

from tierwise.cli._common import EXIT_INVALID, fail


def register(app: typer.Typer) -> None:
    """Add ``tierwise init`` to *app*."""

    @app.command("init")
    def init(
        path: Path = typer.Argument(
            Path("tierwise.toml"), help="Where to write the policy.", show_default=True
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
        preset: str = typer.Option(
            "default",
            "--preset",
            help="default, or ci: a pull request's critical path (code review, security scan) "
            "stays frontier, auxiliary work (changelog, docs, failure summaries) goes cheap.",
        ),
    ) -> None:
        """Write the default routing policy, with comments, to PATH.

        Tiers cheap/mid/strong on claude-haiku-4-5 / claude-sonnet-4-6 / claude-opus-4-6, the
        must-stay-frontier list, routing rules for the usual task kinds, validators and fleet
        settings. Edit it, then check it with `tierwise policy check`.

        Example: tierwise init policies/ci.toml --preset ci
        """
        from tierwise.policy import default_policy_text
        from tierwise.policy.loader import PRESETS

        if preset not in PRESETS:
            fail(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        if path.is_dir():
            fail(f"{path} is a directory; give a file path such as {path / 'tierwise.toml'}")
        if path.exists() and not force:
            fail(f"{path} already exists; use --force to overwrite it", code=EXIT_INVALID)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(default_policy_text(preset), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")
        typer.echo(f"wrote {path}; check it with: tierwise policy check {path}")
