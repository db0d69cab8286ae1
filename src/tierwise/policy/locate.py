"""Where a key path lives in a TOML text, and how key paths are written for people.

``tomllib`` returns plain data without positions, so error messages would have no line numbers.
:func:`key_lines` scans the TOML source once and maps every key path it sees — table headers,
``key = value`` lines, inline-table keys and array elements — to the line where it starts. It is
deliberately tolerant: on anything it does not understand it stops and returns what it has,
because a missing line number is better than a crash while reporting another error.

The scan is linear and jumps with regular expressions and ``str.find`` rather than stepping one
character at a time (a 30 MB string is one ``find``); line numbers are counted incrementally
between the positions where keys are recorded. Arrays and inline tables nested deeper than
:data:`MAX_DEPTH` stop the scan (the loader reports that depth as an error of its own).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence

#: A key path: table keys (str) and array indexes (int), e.g. ``("rules", 2, "when", "kind")``.
KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

#: Deeper nesting than this (arrays and tables inside each other) is not a policy.
MAX_DEPTH = 64

_INLINE_SPACE = re.compile(r"[ \t]*")
_SPACE_AND_COMMENTS = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)*")
_SPACE_AND_COMMENTS_INLINE = re.compile(r"(?:[ \t\r]+|#[^\n]*)*")
_SCALAR = re.compile(r"[^,\]}\n#]*")
# A basic string's body: runs of ordinary characters and escapes (unrolled, no backtracking).
_BASIC_BODY = re.compile(r'[^"\\\n]*(?:\\.[^"\\\n]*)*')
_MULTI_BASIC_BODY = re.compile(r'(?:[^"\\]+|\\.|"(?!""))*', re.S)


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
    with contextlib.suppress(_Stop):
        scanner.document()
    return scanner.found


def too_deep_line(text: str) -> int | None:
    """The line where arrays or inline tables first nest deeper than MAX_DEPTH, if they do."""
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop):
        scanner.document()
    return scanner.too_deep


class KeyLines(Mapping[KeyPath, int]):
    """:func:`key_lines` of a text, scanned on first use — most loads never need a line."""

    __slots__ = ("_found", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._found: dict[KeyPath, int] | None = None

    def _lines(self) -> dict[KeyPath, int]:
        if self._found is None:
            self._found = key_lines(self._text)
        return self._found

    def __getitem__(self, path: KeyPath) -> int:
        return self._lines()[path]

    def __iter__(self) -> Iterator[KeyPath]:
        return iter(self._lines())

    def __len__(self) -> int:
        return len(self._lines())


class _Stop(Exception):
    """The scanner met something it does not follow (or nesting deeper than MAX_DEPTH)."""


class _Scanner:
    """A small scanner over TOML source that records positions, not values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.found: dict[KeyPath, int] = {}
        self.array_counts: dict[KeyPath, int] = {}  # arrays of tables seen so far
        self._line_pos = 0  # line numbers are counted incrementally up to here
        self._line = 1
        self.too_deep: int | None = None  # the line where nesting passed MAX_DEPTH

    # -- low level ---------------------------------------------------------------------------

    def line(self) -> int:
        """The line of the current position (positions only move forward)."""
        if self.pos > self._line_pos:
            self._line += self.text.count("\n", self._line_pos, self.pos)
            self._line_pos = self.pos
        return self._line

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, pattern: re.Pattern[str]) -> None:
        match = pattern.match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()

    def expect(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise _Stop(f"expected {char!r}")
        self.pos += len(char)

    def record(self, path: KeyPath, line: int) -> None:
        self.found.setdefault(path, line)

    # -- grammar -----------------------------------------------------------------------------

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip(_SPACE_AND_COMMENTS)
            ch = self.peek()
            if not ch:
                return
            if ch == "[":
                table = self.header()
            else:
                self.key_value(table, 0)

    def header(self) -> KeyPath:
        line = self.line()
        self.pos += 1  # [
        is_array = self.peek() == "["
        if is_array:
            self.pos += 1
        keys = self.dotted_key()
        self.skip(_INLINE_SPACE)
        self.expect("]]" if is_array else "]")
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

    def key_value(self, table: KeyPath, depth: int) -> None:
        line = self.line()
        keys = self.dotted_key()
        self.skip(_INLINE_SPACE)
        self.expect("=")
        self.skip(_INLINE_SPACE)
        path = (*table, *keys)
        self.record(path, line)
        self.value(path, depth)

    def dotted_key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip(_INLINE_SPACE)
            if self.peek() in ('"', "'"):
                keys.append(self.string())
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _Stop("expected a key")
                keys.append(match.group(0))
                self.pos = match.end()
            self.skip(_INLINE_SPACE)
            if self.peek() != ".":
                return keys
            self.pos += 1

    def value(self, path: KeyPath, depth: int) -> None:
        ch = self.peek()
        if ch in ("[", "{"):
            if depth >= MAX_DEPTH:
                self.too_deep = self.line()
                raise _Stop("nested too deeply")
            if ch == "[":
                self.array(path, depth + 1)
            else:
                self.inline_table(path, depth + 1)
        elif ch in ('"', "'"):
            self.string()
        else:
            self.skip(_SCALAR)

    def array(self, path: KeyPath, depth: int) -> None:
        self.pos += 1  # [
        index = 0
        while True:
            self.skip(_SPACE_AND_COMMENTS)
            ch = self.peek()
            if ch == "]":
                self.pos += 1
                return
            if ch == ",":
                self.pos += 1
                index += 1
                continue
            if not ch:
                raise _Stop("unterminated array")
            self.record((*path, index), self.line())
            self.value((*path, index), depth)

    def inline_table(self, path: KeyPath, depth: int) -> None:
        self.pos += 1  # {
        while True:
            self.skip(_SPACE_AND_COMMENTS)
            ch = self.peek()
            if ch == "}":
                self.pos += 1
                return
            if ch == ",":
                self.pos += 1
                continue
            if not ch:
                raise _Stop("unterminated inline table")
            self.key_value(path, depth)

    def string(self) -> str:
        """Skip a string at the current position; return its text (escapes of keys undone)."""
        text = self.text
        quote = text[self.pos]
        triple = text.startswith(quote * 3, self.pos)
        if quote == "'":
            delim = quote * 3 if triple else quote
            start = self.pos + len(delim)
            end = text.find(delim, start)
            if end < 0:
                raise _Stop("unterminated string")
            self.pos = end + len(delim)
        else:
            start = self.pos + (3 if triple else 1)
            body = (_MULTI_BASIC_BODY if triple else _BASIC_BODY).match(text, start)
            end = body.end() if body is not None else start
            self.pos = end
            self.expect('"""' if triple else '"')
        if triple:  # a closing run may hold up to two extra quotes that belong to the string
            extra = 0
            while extra < 2 and self.peek() == quote:
                self.pos += 1
                extra += 1
            end += extra
        raw = text[start:end]
        return raw if quote == "'" else raw.replace('\\"', '"').replace("\\\\", "\\")
