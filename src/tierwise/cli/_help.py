"""Help text as people read it: paragraphs wrapped once, and no type shown for flags.

Typer's ``rich`` markup mode keeps the line breaks of a docstring's paragraphs and then lets
Rich wrap the lines again to the terminal, so a paragraph written at 95 columns comes out as
one long and one short line, over and over. And it shows a type for every option, ``<bool>``
for a flag that takes no value. :class:`HelpGroup` — the root group's class — fixes both for
every command under it, once, when Typer builds the command tree:

- each paragraph's lines are joined (Rich wraps them to the terminal); a paragraph that is
  indented, a list (``- item``), or starts with ``\\b`` keeps its lines;
- flags (``--json``, ``--strict``, ``--help``) get an empty type column.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["HelpGroup", "reflow"]

_KEEP_LINES = re.compile(r"^(\s|[-*•] |\d+\. )")


def reflow(text: str | None) -> str | None:
    """*text* with each ordinary paragraph's lines joined into one line."""
    if not text:
        return text
    paragraphs = text.split("\n\n")
    out: list[str] = []
    for paragraph in paragraphs:
        lines = paragraph.split("\n")
        keep = paragraph.startswith("\b") or any(_KEEP_LINES.match(line) for line in lines[1:])
        out.append(paragraph if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _polish(command: Any) -> None:
    command.help = reflow(command.help)
    if getattr(command, "short_help", None):
        command.short_help = reflow(command.short_help)
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, help_option]:
        if param is None:
            continue
        if getattr(param, "help", None):
            param.help = reflow(param.help)
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: show no type
    for sub in getattr(command, "commands", {}).values():
        _polish(sub)


class HelpGroup(TyperGroup):
    """The root group: polishes the help of every command beneath it when built."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _polish(self)
