"""A throwaway PostgreSQL server for tests and benchmarks: a real cluster, never a stand-in.

:class:`PostgresCluster` runs Debian's (or any) server binaries — ``initdb`` and ``pg_ctl`` —
on a cluster in a temporary folder, listening on a free loopback port only, and removes it all
on :meth:`~PostgresCluster.close`. ``initdb`` refuses to run as root, so under root the
binaries run as the ``postgres`` system user (``runuser``), which Debian's package creates::

    from tierwise.testing.postgres import PostgresCluster

    with PostgresCluster() as pg:
        url = pg.create_database("ledger_test")   # postgresql+psycopg://postgres@127.0.0.1:…/…
        ...
        pg.restart()                              # what a database blink looks like

The binaries are found in ``$TIERWISE_PG_BINDIR``, else on ``PATH``, else in
``/usr/lib/postgresql/<version>/bin`` (newest first). :func:`find_bindir` returns ``None`` when
there are none, and :class:`PostgresUnavailableError` says why a cluster cannot start.

Connecting needs the ``postgres`` extra (psycopg 3).
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresCluster", "PostgresUnavailableError", "find_bindir"]

_SYSTEM_USER = "postgres"
_SUPERUSER = "postgres"
_VERSIONED = Path("/usr/lib/postgresql")


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server can be started here (binaries or a user to run them missing)."""


def find_bindir(env: Mapping[str, str] | None = None) -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``; ``None`` when the server is not installed."""
    environ = os.environ if env is None else env
    given = environ.get("TIERWISE_PG_BINDIR")
    if given:
        return Path(given) if (Path(given) / "pg_ctl").exists() else None
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent  # e.g. a symlink into /usr/lib/postgresql
    if _VERSIONED.is_dir():

        def version(p: Path) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

        found = sorted(_VERSIONED.glob("*/bin/pg_ctl"), key=version, reverse=True)
        for ctl in found:
            if (ctl.parent / "initdb").exists():
                return ctl.parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """A PostgreSQL cluster in a temporary folder, on a free port on 127.0.0.1.

    Args:
        bindir: the server binaries (default: :func:`find_bindir`).
        fsync: ``False`` (the default, for tests) skips fsync on the server: a test that kills
            the server process still loses nothing committed, only an OS crash would. A
            benchmark passes ``True`` to measure durable commits.
        settings: extra server settings (``-c name=value``), e.g. ``{"max_connections": "200"}``.

    Raises:
        PostgresUnavailableError: from :meth:`start` when no server can run here.
    """

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        fsync: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bindir = bindir
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.port = 0
        self._root: Path | None = None
        self._running = False
        self._as_user: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._root is None:
            raise RuntimeError("the cluster was not started")
        return self._root / "data"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> PostgresCluster:
        """Create the cluster (first call) and start the server; return ``self``."""
        if self._running:
            return self
        if self._root is None:
            self._init()
        for attempt in range(3):  # the free port may be taken between choosing and binding
            if self.port == 0 or attempt:
                self.port = _free_port()
            try:
                self._ctl(
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self._root_dir / "server.log"),
                    "-o",
                    self._server_options(),
                )
            except PostgresUnavailableError:
                if attempt == 2:
                    raise
                continue
            self._running = True
            return self
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions; ``immediate``: like a crash)."""
        if self._running:
            self._running = False
            self._ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self) -> None:
        """Stop and start again on the same port: every client connection is cut."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete the cluster. Idempotent."""
        try:
            if self._running:
                self.stop("immediate")
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- databases -------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of *database* on this server (trust auth, superuser ``postgres``)."""
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name when none is given); return its URL."""
        name = name or f"tw_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database names here are lower-case identifiers, got {name!r}")
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop *name*, cutting off any session still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str) -> None:
        """Run one statement on the ``postgres`` database, outside a transaction."""
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.encode())

    # -- internals -------------------------------------------------------------------------------

    @property
    def _root_dir(self) -> Path:
        assert self._root is not None
        return self._root

    def _init(self) -> None:
        bindir = self.bindir or find_bindir()
        if bindir is None:
            raise PostgresUnavailableError(
                "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                f"{_VERSIONED}/*/bin; install Debian's `postgresql` package or set "
                "TIERWISE_PG_BINDIR"
            )
        self.bindir = bindir
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
            try:
                user = pwd.getpwnam(_SYSTEM_USER)
            except KeyError:
                raise PostgresUnavailableError(
                    f"running as root and there is no {_SYSTEM_USER!r} user to run the server "
                    "(Debian's postgresql package creates it)"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailableError("running as root and `runuser` is missing")
            self._as_user = _SYSTEM_USER
        root = Path(tempfile.mkdtemp(prefix="tierwise-pg-"))
        self._root = root
        atexit.register(self.close)  # a crashed test run leaves no server behind
        if self._as_user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def _server_options(self) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self._root_dir),
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "max_connections": "200",
            **self.settings,
        }
        return " ".join(f"-c {k}={v}" for k, v in settings.items())

    def _ctl(self, *args: str) -> None:
        assert self.bindir is not None
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _run(self, argv: Sequence[str]) -> None:
        if self._as_user is not None:
            argv = ["runuser", "-u", self._as_user, "--", *argv]
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, cwd=self._root_dir, timeout=120
        )
        if done.returncode != 0:
            log = self._root_dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            program = Path(argv[4] if self._as_user else argv[0]).name
            output = done.stderr.strip() or done.stdout.strip()
            raise PostgresUnavailableError(
                f"{program} failed ({done.returncode}): {output}\n{tail}".rstrip()
            )
