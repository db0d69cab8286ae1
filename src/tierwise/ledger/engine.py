"""Where the ledger lives and how connections to it behave.

SQLite is the embedded default. Every connection runs in WAL mode with ``synchronous=FULL``:
in WAL mode ``NORMAL`` survives a process crash but may lose the last commits on power loss,
and the ledger promises that what a caller has seen is on disk, so each commit fsyncs the WAL.
``busy_timeout`` is 30 s and ``foreign_keys`` is on. Writes open with ``BEGIN IMMEDIATE`` so a
transaction takes the write lock before it reads (no deadlock-prone lock upgrades between
processes); reads open a plain deferred ``BEGIN`` and never block writers.

A deployment that accepts losing the last commits on power loss (never on a process crash) can
trade that for speed with ``?sync=normal`` on the URL (``sqlite:///ledger.db?sync=normal``): on a
disk where fsync takes milliseconds this removes most of the ledger's cost per attempt
(``benchmarks/cascade_overhead.py`` measures both).

Any other SQLAlchemy URL (Postgres) gets a plain engine; the schema has no SQLite-only SQL.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from tierwise.errors import LedgerError

#: The newest migration shipped with this version (a test checks it against Alembic's head).
HEAD_REVISION = "0001"

#: Execution option marking a connection as read-only: it opens with a deferred BEGIN.
READ_OPTION = "tierwise_read"

_DEFAULT_FILE = "tierwise-ledger.db"
_BUSY_TIMEOUT_MS = 30_000
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def default_ledger_url(env: Mapping[str, str] | None = None) -> str:
    """The ledger to use when none is named: ``$TIERWISE_LEDGER``, else ``./tierwise-ledger.db``.

    ``$TIERWISE_LEDGER`` may be a file path or a SQLAlchemy URL.
    """
    environ = os.environ if env is None else env
    return ledger_url(environ.get("TIERWISE_LEDGER") or _DEFAULT_FILE)


def ledger_url(target: str | Path) -> str:
    """A SQLAlchemy URL for *target*: a URL is kept as is, a path becomes ``sqlite:///path``."""
    text = str(target)
    if isinstance(target, Path) or "://" not in text:
        return f"sqlite:///{Path(text).expanduser()}"
    return text


def display_url(url: str | URL) -> str:
    """The URL with any password masked, safe for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def create_ledger_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for the ledger at *url*, with the connection behaviour described above.

    Raises:
        LedgerError: the URL is invalid, names an in-memory database, or (with
            ``create=False``) a SQLite file that does not exist; or the driver is missing.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise LedgerError(f"invalid ledger URL {url!r}: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        try:
            return sa.create_engine(parsed, pool_pre_ping=True)
        except ImportError as exc:
            raise LedgerError(
                f"no database driver for {display_url(parsed)}: {exc.name or exc}; "
                "install the driver (e.g. psycopg for Postgres)"
            ) from None
    sync = str(parsed.query.get("sync", "full")).upper()
    if sync not in ("FULL", "NORMAL"):
        raise LedgerError(f"invalid ledger URL option sync={sync.lower()!r}; use full or normal")
    parsed = parsed.difference_update_query(["sync"])
    database = parsed.database
    if not database or database == ":memory:" or "mode=memory" in str(parsed):
        raise LedgerError(
            "an in-memory SQLite ledger cannot be shared between connections; "
            "give a file path, e.g. sqlite:///tierwise-ledger.db"
        )
    path = Path(database)
    if not path.exists():
        if not create:
            raise LedgerError(f"no ledger at {path}: the file does not exist")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger directory {path.parent}: {exc}") from None
    elif path.is_dir():
        raise LedgerError(f"the ledger path {path} is a directory, expected a SQLite file")
    engine = sa.create_engine(parsed, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})
    _install_sqlite_hooks(engine, sync)
    return engine


def _install_sqlite_hooks(engine: Engine, sync: str = "FULL") -> None:
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" hook below (pysqlite would otherwise
        # emit a deferred BEGIN lazily, before the first DML only).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {sync}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # On the DBAPI connection itself: ``exec_driver_sql`` would cost more than SQLite's
        # own BEGIN, on every write transaction. Driver errors still surface as SQLAlchemy's.
        read = conn.get_execution_options().get(READ_OPTION, False)
        statement = "BEGIN" if read else "BEGIN IMMEDIATE"
        cursor = conn.connection.cursor()
        try:
            cursor.execute(statement)
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(statement, None, exc, sqlite3.Error) from None
        finally:
            cursor.close()


def current_revision(conn: sa.Connection) -> str | None:
    """The schema revision recorded in the database, ``None`` for an empty database."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def migrate(engine: Engine) -> str:
    """Bring the schema to :data:`HEAD_REVISION` inside one write transaction; return it.

    Concurrent openers serialise on the write lock; the second finds the schema current and
    does nothing. Alembic is imported only when a migration is actually due.

    Raises:
        LedgerError: the database carries a revision this version does not know (a newer
            tierwise wrote it) or a migration step failed.
    """
    with engine.begin() as conn:
        found = current_revision(conn)
        if found == HEAD_REVISION:
            return found
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = conn
        known = {s.revision for s in ScriptDirectory.from_config(config).walk_revisions()}
        if found is not None and found not in known:
            raise LedgerError(
                f"the ledger's schema revision {found!r} is unknown to this tierwise "
                f"(newest known: {HEAD_REVISION!r}); upgrade tierwise to read it"
            )
        command.upgrade(config, "head")
        return current_revision(conn) or ""
