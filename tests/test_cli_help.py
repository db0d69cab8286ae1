"""`--help` of every command reads well: paragraphs wrapped once, no type shown for flags."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.cli._help import reflow

WIDTH = 80
README = Path(__file__).resolve().parents[1] / "README.md"


def command_paths() -> list[list[str]]:
    """Every command and group, as the arguments that reach it (the root is [])."""
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(build_app()), [])
    return paths


def render_help(path: list[str]) -> str:
    result = CliRunner().invoke(
        build_app(), [*path, "--help"], env={"COLUMNS": str(WIDTH), "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def double_wrapped(output: str, width: int = WIDTH) -> list[str]:
    """Lines that end early although the next line's first word would have fit on them.

    Only prose outside the option panels is looked at (panel columns wrap on their own).
    """
    found: list[str] = []
    lines = [line.rstrip() for line in output.splitlines()]
    for line, following in itertools.pairwise(lines):
        if not line.strip() or not following.strip():
            continue
        if line.lstrip()[:1] in "│╭╰" or following.lstrip()[:1] in "│╭╰":
            continue
        if line.startswith("  ") or following.startswith("  "):
            continue  # an indented block (an example) keeps its own lines
        word = following.split()[0]
        if len(line) + 1 + len(word) <= width - 1:
            found.append(f"{line!r} / {following!r}")
    return found


def test_every_command_is_found() -> None:
    paths = command_paths()
    assert ["policy", "check"] in paths and ["ledger", "stats"] in paths and [] in paths
    assert len(paths) > 20


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "tierwise")
def test_help_has_no_bool_metavar_and_no_double_wrapped_paragraphs(path: list[str]) -> None:
    output = render_help(path)
    assert "<bool>" not in output
    assert double_wrapped(output) == []
    assert "Usage: tierwise" in output


def test_the_checker_catches_a_paragraph_wrapped_twice() -> None:
    output = (
        " Prints each problem as FILE:LINE: severity: key.path: message. Exit code 0\n"
        " when the policy\n"
        " is valid (1 with --strict when there are warnings), 2 when it is invalid.\n"
    )
    assert len(double_wrapped(output)) == 1


def test_reflow_joins_paragraph_lines_but_keeps_examples_and_lists() -> None:
    text = "First line\ncontinues.\n\n    code --flag \\\n      --more\n\n- one\n- two"
    assert (
        reflow(text) == "First line continues.\n\n    code --flag \\\n      --more\n\n- one\n- two"
    )


def test_help_texts_that_cite_the_articles_say_where_they_are_listed() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "## Background: the articles" in readme
    for path in command_paths():
        output = " ".join(render_help(path).split())
        if "articles" in output:
            assert "Background: the articles" in output, path
