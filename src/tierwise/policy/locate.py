"""Where a key path lives in a TOML text, and how key paths are written for people.

``tomllib`` returns plain data without positions, so error messages would have no line numbers.
:func:`key_lines` scans the (already valid) TOML source once and maps every key path it sees —
table headers, ``key = value`` lines, inline-table keys and array elements — to the line where it
starts. It is deliberately tolerant: on anything it does not understand it stops and returns what
it has, because a missing line number is better than a crash while reporting another error.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence

#: A key path: table keys (str) and array indexes (int), e.g. ``("rules", 2, "when", "kind")``.
KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: Sequence[str | int]) -> str:
    """Write a key path the way people read it: ``rules[2].when.kind``, ``prices."gpt-4.1"``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        text = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
        out.append(f".{text}" if out else text)
    return "".join(out)


def line_of(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> int | None:
    """The line of *path*, or of its longest prefix that has one (best effort)."""
    key = tuple(path)
    while key:
        line = lines.get(key)
        if line is not None:
            return line
        key = key[:-1]
    return None


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path in a TOML document to its 1-based line number."""
    scanner = _Scanner(text)
    # best effort: on a part it cannot follow, keep what was found before it
    with contextlib.suppress(IndexError, ValueError):
        scanner.document()
    return scanner.found


class _Scanner:
    """A small recursive scanner over TOML source that records positions, not values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.found: dict[KeyPath, int] = {}
        self.array_counts: dict[KeyPath, int] = {}  # arrays of tables seen so far

    # -- low level ---------------------------------------------------------------------------

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.text[self.pos] == "\n":
                self.line += 1
            self.pos += 1

    def skip_inline_space(self) -> None:
        while self.peek() in (" ", "\t"):
            self.advance()

    def skip_space_and_comments(self, newlines: bool) -> None:
        while True:
            ch = self.peek()
            if ch in (" ", "\t", "\r") or (newlines and ch == "\n"):
                self.advance()
            elif ch == "#":
                while self.peek() not in ("\n", ""):
                    self.advance()
            else:
                return

    def record(self, path: KeyPath, line: int) -> None:
        self.found.setdefault(path, line)

    # -- grammar -----------------------------------------------------------------------------

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_space_and_comments(newlines=True)
            ch = self.peek()
            if not ch:
                return
            if ch == "[":
                table = self.header()
            else:
                self.key_value(table)

    def header(self) -> KeyPath:
        line = self.line
        self.advance()  # [
        is_array = self.peek() == "["
        if is_array:
            self.advance()
        keys = self.dotted_key()
        self.skip_inline_space()
        self.advance(2 if is_array else 1)  # ] or ]]
        path = self.resolve(keys)
        if is_array:
            index = self.array_counts.get(path, 0)
            self.array_counts[path] = index + 1
            self.record(path, line)
            path = (*path, index)
        self.record(path, line)
        return path

    def resolve(self, keys: Sequence[str]) -> KeyPath:
        """Turn header keys into a path, entering the current element of arrays of tables."""
        path: KeyPath = ()
        for i, key in enumerate(keys):
            path = (*path, key)
            last = i == len(keys) - 1
            if not last and path in self.array_counts:
                path = (*path, self.array_counts[path] - 1)
        return path

    def key_value(self, table: KeyPath) -> None:
        line = self.line
        keys = self.dotted_key()
        self.skip_inline_space()
        if self.peek() != "=":
            raise ValueError("expected '='")
        self.advance()
        self.skip_inline_space()
        path = (*table, *keys)
        self.record(path, line)
        self.value(path)

    def dotted_key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip_inline_space()
            ch = self.peek()
            if ch in ('"', "'"):
                keys.append(self.string())
            else:
                start = self.pos
                while self.peek() and _BARE_KEY.fullmatch(self.peek()):
                    self.advance()
                if self.pos == start:
                    raise ValueError("expected a key")
                keys.append(self.text[start : self.pos])
            self.skip_inline_space()
            if self.peek() != ".":
                return keys
            self.advance()

    def value(self, path: KeyPath) -> None:
        ch = self.peek()
        if ch == "[":
            self.array(path)
        elif ch == "{":
            self.inline_table(path)
        elif ch in ('"', "'"):
            self.string()
        else:
            while self.peek() not in (",", "]", "}", "\n", "#", ""):
                self.advance()

    def array(self, path: KeyPath) -> None:
        self.advance()  # [
        index = 0
        while True:
            self.skip_space_and_comments(newlines=True)
            ch = self.peek()
            if ch == "]":
                self.advance()
                return
            if ch == ",":
                self.advance()
                index += 1
                continue
            if not ch:
                raise ValueError("unterminated array")
            self.record((*path, index), self.line)
            self.value((*path, index))

    def inline_table(self, path: KeyPath) -> None:
        self.advance()  # {
        while True:
            self.skip_space_and_comments(newlines=True)
            ch = self.peek()
            if ch == "}":
                self.advance()
                return
            if ch == ",":
                self.advance()
                continue
            if not ch:
                raise ValueError("unterminated inline table")
            self.key_value(path)

    def string(self) -> str:
        quote = self.peek()
        triple = self.text.startswith(quote * 3, self.pos)
        delim = quote * 3 if triple else quote
        self.advance(len(delim))
        start = self.pos
        while not self.text.startswith(delim, self.pos):
            if not self.peek():
                raise ValueError("unterminated string")
            if quote == '"' and self.peek() == "\\":
                self.advance()
            self.advance()
        raw = self.text[start : self.pos]
        self.advance(len(delim))
        if triple:  # a closing run may hold up to two extra quotes that belong to the string
            while self.peek() == quote:
                self.advance()
        return raw if quote == "'" else raw.replace('\\"', '"').replace("\\\\", "\\")
