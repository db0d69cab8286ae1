"""Where the ledger lives and how connections to it behave, on SQLite and on PostgreSQL.

**SQLite** is the embedded default. Every connection runs in WAL mode with ``synchronous=FULL``:
in WAL mode ``NORMAL`` survives a process crash but may lose the last commits on power loss,
and the ledger promises that what a caller has seen is on disk, so each commit fsyncs the WAL.
``busy_timeout`` is 30 s and ``foreign_keys`` is on. Writes open with ``BEGIN IMMEDIATE`` so a
transaction takes the write lock before it reads (no deadlock-prone lock upgrades between
processes); reads open a plain deferred ``BEGIN`` and never block writers.

**PostgreSQL** (``postgresql+psycopg://user:password@host:5432/dbname``; psycopg 3, the
``postgres`` extra) is for several processes or hosts sharing one ledger. Every connection
runs at ``READ COMMITTED`` — what the conditional budget UPDATE needs: a writer that waited for
a row lock re-checks its ``WHERE`` against the committed row — with ``synchronous_commit = on``,
so a commit returns only once the server has flushed it to its WAL, whatever the server's
default. Connections come from a pool (SQLAlchemy's ``QueuePool``) and are checked before use,
so a server restart costs a reconnect, not an error.

Ledger settings travel in the URL's query, so every process given the same URL behaves the
same; tierwise removes them before the driver sees the URL (anything else, e.g. ``sslmode`` or
``connect_timeout``, goes to the driver):

* ``sync=full|normal`` — ``normal`` trades durability on power loss (SQLite:
  ``synchronous=NORMAL``) or on a server crash (Postgres: ``synchronous_commit=off``) for speed;
  a process crash loses nothing either way. Default ``full``.
* ``pool_size=N`` — connections kept open per process (default 5).
* ``max_overflow=N`` — extra connections opened under load and closed after (default 10).
* ``pool_timeout=S`` — seconds to wait for a free connection before failing (default 30).
* ``reservation_ttl=S`` — seconds after which a budget reservation nobody settled is released
  (default 900; see :meth:`tierwise.ledger.Ledger.release_expired`).
* ``migrate=auto|manual`` — ``auto`` (default): opening migrates an older schema, under a lock;
  ``manual``: opening refuses an older schema (run ``tierwise ledger migrate``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from tierwise.errors import LedgerError

#: The newest migration shipped with this version (a test checks it against Alembic's head).
HEAD_REVISION = "0009"

#: Execution option marking a connection as read-only: it opens with a deferred BEGIN.
READ_OPTION = "tierwise_read"

#: The Postgres driver tierwise supports, and the extra that installs it.
POSTGRES_DRIVER = "psycopg"
POSTGRES_EXTRA = "postgres"

_DEFAULT_FILE = "tierwise-ledger.db"
_BUSY_TIMEOUT_MS = 30_000
_CONNECT_TIMEOUT_S = 10


class MissingDriverError(LedgerError, ImportError):
    """The database driver for a ledger URL is not installed; the message names the extra."""


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The ledger options read from a URL's query (see the module docstring)."""

    sync: str = "full"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 30.0
    reservation_ttl: timedelta = timedelta(seconds=900)
    migrate: str = "auto"


_OPTIONS = ("sync", "pool_size", "max_overflow", "pool_timeout", "reservation_ttl", "migrate")


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


def reason(exc: BaseException) -> str:
    """A driver error's own message, without anything that could echo stored values.

    SQLAlchemy's ``str()`` appends the bound parameters, which may hold prompt or output text,
    and PostgreSQL's ``DETAIL`` line may quote a whole row; only the primary message is kept.
    """
    orig: Any = getattr(exc, "orig", None) if isinstance(exc, sa.exc.SQLAlchemyError) else exc
    if orig is None:
        return type(exc).__name__
    diag = getattr(orig, "diag", None)  # psycopg: the server's message parts
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(orig).split("\n", 1)[0]
    return f"{type(orig).__name__}: {text}"


def unavailable(exc: BaseException, dbapi: Any) -> bool:
    """Whether a driver error means the database cannot be used *now* (not that it refused).

    *dbapi* is the engine's driver module. True for PEP 249's ``OperationalError`` and
    ``InterfaceError`` (server down or restarting, connection refused or cut, SQLite's
    ``database is locked`` after its busy timeout, a full disk), a connection SQLAlchemy saw
    invalidated, and a pool that had no connection to give within its timeout. Constraint, type
    and syntax errors are the write's own fault, and are not.
    """
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return True
    orig: Any = exc
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
    names = ("OperationalError", "InterfaceError")
    transient = tuple(c for c in (getattr(dbapi, n, None) for n in names) if isinstance(c, type))
    return bool(transient) and isinstance(orig, transient)


def display_url(url: str | URL) -> str:
    """The URL with any password masked, safe for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _number(name: str, text: str, kind: type[int] | type[float], low: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise LedgerError(
            f"invalid ledger URL option {name}={text!r}: expected a number >= {low:g}"
        ) from None
    return value


def parse_ledger_url(url: str) -> tuple[URL, LedgerSettings]:
    """Split *url* into the URL the driver sees and tierwise's own :class:`LedgerSettings`.

    Raises:
        LedgerError: the URL or one of its options is invalid.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise LedgerError(f"invalid ledger URL {url!r}: {exc}") from None
    query = parsed.query
    values: dict[str, Any] = {}
    for name in _OPTIONS:
        raw = query.get(name)
        if raw is None:
            continue
        text = raw if isinstance(raw, str) else raw[-1]
        if name == "sync":
            if text.lower() not in ("full", "normal"):
                raise LedgerError(
                    f"invalid ledger URL option sync={text.lower()!r}; use full or normal"
                )
            values["sync"] = text.lower()
        elif name == "migrate":
            if text.lower() not in ("auto", "manual"):
                raise LedgerError(f"invalid ledger URL option migrate={text!r}; use auto or manual")
            values["migrate"] = text.lower()
        elif name == "pool_size":
            values["pool_size"] = _number(name, text, int, 1)
        elif name == "max_overflow":
            values["max_overflow"] = _number(name, text, int, 0)
        elif name == "pool_timeout":
            values["pool_timeout_s"] = _number(name, text, float, 0)
        else:
            seconds = _number(name, text, float, 1)
            values["reservation_ttl"] = timedelta(seconds=seconds)
    return parsed.difference_update_query(_OPTIONS), LedgerSettings(**values)


def create_ledger_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for the ledger at *url*, with the connection behaviour described above.

    Raises:
        MissingDriverError: a Postgres URL and psycopg is not installed.
        LedgerError: the URL is invalid, names an in-memory database, another Postgres driver
            than psycopg, or (with ``create=False``) a SQLite file that does not exist.
    """
    parsed, settings = parse_ledger_url(url)
    return build_engine(parsed, settings, create=create)


def build_engine(parsed: URL, settings: LedgerSettings, *, create: bool = True) -> Engine:
    """:func:`create_ledger_engine` for a URL already split by :func:`parse_ledger_url`."""
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return _postgres_engine(parsed, settings)
    if backend != "sqlite":
        raise LedgerError(
            f"the ledger runs on SQLite or PostgreSQL, not {backend!r} ({display_url(parsed)})"
        )
    return _sqlite_engine(parsed, settings, create)


def _pool_args(settings: LedgerSettings) -> dict[str, Any]:
    return {
        "poolclass": sa.QueuePool,
        # Last in, first out: one thread's back-to-back transactions (the gateway's writer) get
        # the connection they just used, whose page cache is warm. First in, first out (the
        # default) alternated between pooled connections once a second had been opened, and
        # each SQLite connection then re-read every page the other had changed: ~30 reads per
        # request.
        "pool_use_lifo": True,
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout_s,
    }


def _sqlite_engine(parsed: URL, settings: LedgerSettings, create: bool) -> Engine:
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
    engine = sa.create_engine(
        parsed, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000}, **_pool_args(settings)
    )
    _install_sqlite_hooks(engine, settings.sync.upper())
    return engine


def require_psycopg() -> None:
    """Import psycopg 3, or say which extra installs it.

    Raises:
        MissingDriverError: psycopg is not installed.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingDriverError(
            "a PostgreSQL ledger needs psycopg 3: pip install 'tierwise[postgres]' "
            f"(import failed: {exc})"
        ) from None


def _postgres_engine(parsed: URL, settings: LedgerSettings) -> Engine:
    driver = parsed.drivername.partition("+")[2] or POSTGRES_DRIVER  # bare postgresql://
    if driver != POSTGRES_DRIVER:
        raise LedgerError(
            f"the PostgreSQL ledger runs on psycopg 3, not {driver!r}: use a "
            f"postgresql+psycopg://… URL ({display_url(parsed)})"
        )
    require_psycopg()
    parsed = parsed.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:  # fail fast when the server is unreachable
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
    if "application_name" not in parsed.query:  # visible in pg_stat_activity
        connect_args["application_name"] = "tierwise"
    engine = sa.create_engine(
        parsed,
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
        connect_args=connect_args,
        **_pool_args(settings),
    )
    commit_mode = "on" if settings.sync == "full" else "off"

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # A session setting, so it holds whatever the server's default; committed at once so
        # the pool hands the connection out idle.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET synchronous_commit = {commit_mode}")
        finally:
            cursor.close()
        dbapi_connection.commit()

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
