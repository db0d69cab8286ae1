"""Spool files: a paid call's ledger rows, kept on local disk while the database cannot be reached.

When the gateway's group commit finds the database unreachable after the upstream calls were
made (and paid for), it appends the rows of those tasks to this process's spool file and fsyncs
it *before* answering the callers; the rows are written to the ledger when it is reachable
again, by the same process (every few seconds, and before any newer rows) or, if the process
died, by the next process to start — or to notice the file — with the same spool directory.

Layout: one directory (:func:`default_spool_dir`: ``$TIERWISE_SPOOL_DIR``, else
``./tierwise-spool``), one file per process, named ``<host>-<pid>-<random>.jsonl``, created on
first use only (a healthy gateway writes none). The first line is a header naming the ledger;
each further line is one task's rows (:class:`~tierwise.ledger.rows.Row` as JSON). The owning
process holds an exclusive ``flock`` on its file for its whole life, so another process takes a
file over (replays it, then deletes it) only once its owner is gone, SIGKILL included. A line
cut short by a crash mid-append was never acknowledged and is ignored.

Replaying is idempotent (:meth:`~tierwise.ledger.Ledger.write_rows` with ``replay=True``), so a
crash between the ledger's commit and the file's truncation costs a second replay, not a second
charge. A task whose rows the ledger refuses on their merits (not for being unreachable) is
moved to ``<file>.rejected`` with the reason, so it cannot block the rest;
``tierwise ledger check`` reports both spooled and rejected rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tierwise.errors import LedgerError, LedgerUnavailableError
from tierwise.ledger.engine import display_url, ledger_url, parse_ledger_url
from tierwise.ledger.rows import Row

if TYPE_CHECKING:
    from tierwise.ledger.store import Ledger

__all__ = [
    "DEFAULT_SPOOL_DIR",
    "SPOOL_ENV",
    "ReplayResult",
    "Spool",
    "SpoolFile",
    "default_spool_dir",
    "ledger_identity",
    "replay_orphans",
    "scan",
]

log = logging.getLogger("tierwise.ledger")

#: The environment variable naming the spool directory.
SPOOL_ENV = "TIERWISE_SPOOL_DIR"
#: The spool directory when none is configured (relative to the working directory).
DEFAULT_SPOOL_DIR = "tierwise-spool"
#: Tasks replayed per transaction (a long outage's spool is not one huge transaction).
_CHUNK = 200
_SUFFIX = ".jsonl"
_REJECTED = ".rejected"
_FORMAT = 1


def default_spool_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$TIERWISE_SPOOL_DIR``, else ``./tierwise-spool`` (not created here)."""
    environ = os.environ if env is None else env
    return Path(environ.get(SPOOL_ENV) or DEFAULT_SPOOL_DIR)


def ledger_identity(ledger: Ledger | str) -> str:
    """Which ledger a spool file belongs to: its URL without password or options, a SQLite file
    by its absolute path (processes started in different folders still agree).

    *ledger* is an open ledger or a URL or path (nothing is opened).

    Raises:
        LedgerError: the URL is invalid.
    """
    url = parse_ledger_url(ledger_url(ledger))[0] if isinstance(ledger, str) else ledger.engine.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{Path(url.database or '').resolve()}"
    return display_url(url.set(drivername="postgresql+psycopg", query={}))


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What one replay wrote: tasks and rows into the ledger, tasks set aside as rejected."""

    tasks: int = 0
    rows: int = 0
    rejected: int = 0

    def __add__(self, other: ReplayResult) -> ReplayResult:
        return ReplayResult(
            self.tasks + other.tasks, self.rows + other.rows, self.rejected + other.rejected
        )


@dataclass(frozen=True, slots=True)
class SpoolFile:
    """One spool (or rejected) file as :func:`scan` found it.

    ``live`` is whether a running process still owns it (it replays it itself); ``tasks`` and
    ``rows`` count what is not in the ledger yet (for a rejected file: what was refused).
    """

    path: Path
    ledger: str | None
    host: str | None
    pid: int | None
    live: bool
    tasks: int
    rows: int
    rejected: bool = False
    problem: str | None = None


class Spool:
    """This process's spool file in *directory*, for the ledger called *ledger_id*.

    Not thread-safe: the gateway's writer thread is its only user. Nothing is created until the
    first :meth:`append`.
    """

    def __init__(self, directory: str | os.PathLike[str], ledger_id: str) -> None:
        self.directory = Path(directory)
        self.ledger_id = ledger_id
        self.path: Path | None = None
        self._file: IO[bytes] | None = None
        self._header_size = 0
        #: tasks and rows in the file not yet written to the ledger
        self.tasks = 0
        self.rows = 0

    def append(self, entries: Sequence[Sequence[Row]]) -> None:
        """Add each entry (one task's rows) to the file, durably: written and fsynced on return.

        Raises:
            OSError: the file cannot be created or written (the disk is full, say).
        """
        entries = [e for e in entries if e]
        if not entries:
            return
        handle = self._open()
        data = b"".join(_entry_line(rows) for rows in entries)
        handle.seek(0, os.SEEK_END)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        self.tasks += len(entries)
        self.rows += sum(len(rows) for rows in entries)

    def replay(self, ledger: Ledger) -> ReplayResult:
        """Write every spooled task to *ledger*, then empty the file.

        Raises:
            LedgerUnavailableError: the database is still unreachable; what was written stays
                in the file too (writing it again later changes nothing).
        """
        if self._file is None or self.tasks == 0:
            return ReplayResult()
        assert self.path is not None
        self._file.seek(self._header_size)
        entries = list(_entries(self._file.read()))
        result = _replay(ledger, entries, self.path)
        self._file.truncate(self._header_size)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.tasks = self.rows = 0
        return result

    def close(self) -> None:
        """Release the file: deleted when empty, else left (locked no more) for another process."""
        if self._file is None:
            return
        handle, self._file = self._file, None
        try:
            if self.tasks == 0 and self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                    _sync_dir(self.directory)
        finally:
            handle.close()

    def _open(self) -> IO[bytes]:
        if self._file is not None:
            return self._file
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp = self.directory / f"{name}.tmp"
        final = self.directory / f"{name}{_SUFFIX}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        handle = os.fdopen(fd, "r+b")
        try:
            _lock(handle, exclusive=True, wait=True)  # before the file is visible to others
            header = {
                "tierwise_spool": _FORMAT,
                "ledger": self.ledger_id,
                "host": _host(),
                "pid": os.getpid(),
                "created_at": datetime.now(UTC).isoformat(),
            }
            handle.write(json.dumps(header).encode() + b"\n")
            handle.flush()
            os.fsync(fd)
            os.replace(temp, final)
            _sync_dir(self.directory)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        self._header_size = handle.tell()
        self._file, self.path = handle, final
        log.warning("the ledger is unreachable: spooling paid calls' rows to %s", final)
        return handle


def replay_orphans(
    directory: str | os.PathLike[str], ledger: Ledger, *, skip: Path | None = None
) -> ReplayResult:
    """Replay into *ledger* every spool file in *directory* whose process is gone, then delete it.

    Files of running processes (still locked) and of other ledgers are left alone; so is *skip*.

    Raises:
        LedgerUnavailableError: the database is unreachable (files not finished stay).
    """
    total = ReplayResult()
    folder = Path(directory)
    identity = ledger_identity(ledger)
    for path in _spool_paths(folder):
        if skip is not None and path == skip:
            continue
        with _take_over(path) as handle:
            if handle is None:
                continue
            header, entries = _read(handle)
            if header is None or header.get("ledger") != identity:
                continue
            total += _replay(ledger, entries, path)
            path.unlink()
            _sync_dir(folder)
    return total


def scan(directory: str | os.PathLike[str]) -> list[SpoolFile]:
    """Every spool file and rejected file in *directory*, with what each still holds."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found: list[SpoolFile] = []
    for path in _spool_paths(folder, rejected=True):
        try:
            with path.open("rb") as handle:
                rejected = path.name.endswith(_REJECTED + _SUFFIX)
                live = False if rejected else not _try_lock(handle)
                header, entries = _read(handle)
        except (OSError, ValueError) as exc:
            found.append(SpoolFile(path, None, None, None, False, 0, 0, problem=str(exc)))
            continue
        header = header or {}
        pid = header.get("pid")
        found.append(
            SpoolFile(
                path,
                header.get("ledger"),
                header.get("host"),
                pid if isinstance(pid, int) else None,
                live,
                len(entries),
                sum(len(rows) for rows in entries),
                rejected=rejected,
            )
        )
    return found


# -- internals ------------------------------------------------------------------------------------


def _replay(ledger: Ledger, entries: list[list[Row]], path: Path) -> ReplayResult:
    """Write *entries* in chunks; a task the ledger refuses goes to the rejected file."""
    result = ReplayResult()
    for start in range(0, len(entries), _CHUNK):
        chunk = entries[start : start + _CHUNK]
        try:
            ledger.write_rows([row for rows in chunk for row in rows], replay=True)
            result += ReplayResult(len(chunk), sum(len(rows) for rows in chunk))
            continue
        except LedgerUnavailableError:
            raise
        except (LedgerError, ValueError, KeyError, TypeError):
            pass  # one task's rows were refused (or are damaged): find it, write the others
        for rows in chunk:
            try:
                ledger.write_rows(rows, replay=True)
            except LedgerUnavailableError:
                raise
            except (LedgerError, ValueError, KeyError, TypeError) as exc:
                _reject(path, rows, str(exc))
                result += ReplayResult(rejected=1)
            else:
                result += ReplayResult(1, len(rows))
    if result.tasks:
        log.info("replayed %d spooled task(s), %d row(s) from %s", result.tasks, result.rows, path)
    return result


def _reject(path: Path, rows: Sequence[Row], error: str) -> None:
    target = path.with_name(path.name.removesuffix(_SUFFIX) + _REJECTED + _SUFFIX)
    fresh = not target.exists()
    with target.open("ab") as handle:
        if fresh:
            header = {"tierwise_spool": _FORMAT, "rejected_from": path.name}
            handle.write(json.dumps(header).encode() + b"\n")
        handle.write(_entry_line(rows, error=error))
        handle.flush()
        os.fsync(handle.fileno())
    log.error(
        "the ledger refused spooled task %s (%s); its rows are kept in %s",
        rows[0].task_id if rows else "?",
        error,
        target,
    )


def _entry_line(rows: Sequence[Row], *, error: str | None = None) -> bytes:
    entry: dict[str, Any] = {"task_id": rows[0].task_id, "rows": [r.to_json() for r in rows]}
    if error is not None:
        entry["error"] = error
    return json.dumps(entry, ensure_ascii=True).encode() + b"\n"


def _entries(data: bytes) -> Iterator[list[Row]]:
    """The complete entry lines of *data* (a last line without its newline was cut short)."""
    lines = data.split(b"\n")
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            yield [Row.from_json(r) for r in entry["rows"]]
        except (ValueError, KeyError, TypeError):
            log.error("skipping an unreadable spool line: %r", line[:200])


def _read(handle: IO[bytes]) -> tuple[dict[str, Any] | None, list[list[Row]]]:
    handle.seek(0)
    data = handle.read()
    first, _, rest = data.partition(b"\n")
    try:
        header = json.loads(first) if first else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        return None, []
    return header, list(_entries(rest))


def _spool_paths(folder: Path, *, rejected: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    paths = sorted(folder.glob(f"*{_SUFFIX}"))
    if rejected:
        return paths
    return [p for p in paths if not p.name.endswith(_REJECTED + _SUFFIX)]


@contextlib.contextmanager
def _take_over(path: Path) -> Iterator[IO[bytes] | None]:
    """The file opened and exclusively locked, or ``None`` when its owner still runs (or it
    was taken over and deleted meanwhile)."""
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        yield None
        return
    with handle:
        if not _lock(handle, exclusive=True, wait=False):
            yield None
            return
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        yield handle if same else None


def _lock(handle: IO[bytes], *, exclusive: bool, wait: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock here: files are never taken over, only their owner replays
        return wait
    flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if not wait:
        flags |= fcntl.LOCK_NB
    try:
        fcntl.flock(handle.fileno(), flags)
    except BlockingIOError:
        return False
    return True


def _try_lock(handle: IO[bytes]) -> bool:
    """Whether nobody holds the file's lock (checked with a shared lock, released at once)."""
    if not _lock(handle, exclusive=False, wait=False):
        return False
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return True


def _sync_dir(folder: Path) -> None:
    """Make a file's creation, rename or deletion in *folder* durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _host() -> str:
    name = socket.gethostname().split(".")[0] or "host"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
