"""Schema migrations: Alembic under a lock, safe when several processes open one ledger at once.

Every migration runs inside one transaction that first takes a lock every migrator takes:

* PostgreSQL: ``pg_advisory_xact_lock`` on a fixed key (released when the transaction ends, so a
  killed migrator never leaves it held). DDL is transactional on Postgres: a failed step
  changes nothing.
* SQLite: the database's write lock (``BEGIN IMMEDIATE``).

A second process waits for the first, then finds the schema current and does nothing. A
database whose recorded revision this tierwise does not know was written by a newer tierwise:
it is refused, naming both revisions, and nothing is changed.

**Opening migrates** (``migrate=auto``, the default on both backends): for one SQLite file
nothing else is convenient, and on Postgres the lock makes replicas that start together safe —
one migrates, the others wait and find the schema current. Every migration tierwise ships only
adds tables, columns or indexes, so replicas of the previous version keep working while a new
one migrates. A team that migrates as a deployment step sets ``migrate=manual`` on the ledger
URL; opening an older schema then fails with a message naming ``tierwise ledger migrate``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tierwise.errors import LedgerError
from tierwise.ledger.engine import HEAD_REVISION, display_url, reason

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Engine

__all__ = ["MigrationStatus", "current_revision", "migrate", "migration_status"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The advisory-lock key every tierwise migrator takes on Postgres (a stable 63-bit number).
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"tierwise ledger migrations").digest()[:8], "big", signed=True
)


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Where a ledger's schema stands relative to this tierwise."""

    url: str
    current: str | None  #: the revision recorded in the database (``None``: empty database)
    head: str  #: the newest revision this tierwise ships
    pending: tuple[str, ...] = ()  #: revisions an upgrade would apply, oldest first
    applied: tuple[str, ...] = field(default=())  #: revisions applied by this call

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def as_dict(self) -> dict[str, object]:
        return {
            "ledger": self.url,
            "current": self.current,
            "head": self.head,
            "pending": list(self.pending),
            "applied": list(self.applied),
            "up_to_date": self.up_to_date,
        }


def current_revision(conn: sa.Connection) -> str | None:
    """The schema revision recorded in the database, ``None`` for an empty database."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def _config(conn: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def _pending(found: str | None, url: str) -> tuple[str, ...]:
    """Revisions from *found* (exclusive) to head, oldest first; refuse an unknown revision."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    known = {s.revision for s in script.walk_revisions()}
    if found is not None and found not in known:
        raise LedgerError(
            f"the ledger {url} has schema revision {found!r}, newer than this tierwise knows "
            f"(its newest is {HEAD_REVISION!r}): it was written by a newer tierwise; upgrade "
            "tierwise on this host before opening it"
        )
    steps = script.iterate_revisions(HEAD_REVISION, found)  # newest first
    return tuple(reversed([s.revision for s in steps]))


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # SQLite: the transaction opened with BEGIN IMMEDIATE and holds the write lock already.


def migration_status(engine: Engine) -> MigrationStatus:
    """Where the schema stands, without changing anything.

    Raises:
        LedgerError: the schema is newer than this tierwise, or the database is unreachable.
    """
    url = display_url(engine.url)
    try:
        with engine.connect() as conn:
            found = current_revision(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot read the ledger {url}: {reason(exc)}") from None
    pending = () if found == HEAD_REVISION else _pending(found, url)
    return MigrationStatus(url, found, HEAD_REVISION, pending)


def migrate(engine: Engine, *, auto: bool = True) -> MigrationStatus:
    """Bring the schema to :data:`HEAD_REVISION` under the migration lock; say what was done.

    With ``auto=False`` nothing is migrated: an older schema raises instead (``migrate=manual``).
    Alembic is imported only when a migration is actually due.

    Raises:
        LedgerError: the schema is newer than this tierwise knows, older while ``auto`` is
            off, or a migration step failed (then nothing changed).
    """
    url = display_url(engine.url)
    try:
        return _migrate(engine, url, auto)
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot open the ledger {url}: {reason(exc)}") from None


def _migrate(engine: Engine, url: str, auto: bool) -> MigrationStatus:
    with engine.connect() as conn:  # the common case, a current schema, takes no lock
        found = current_revision(conn)
    if found == HEAD_REVISION:
        return MigrationStatus(url, found, HEAD_REVISION)
    pending = _pending(found, url)
    if not auto:
        raise LedgerError(
            f"the ledger {url} has schema revision {found or 'none (empty database)'}, this "
            f"tierwise needs {HEAD_REVISION!r} and the URL says migrate=manual: run "
            f"`tierwise ledger migrate --ledger {url}` first"
        )
    with engine.begin() as conn:
        _lock(conn)
        found = current_revision(conn)  # another process may have migrated while we waited
        if found == HEAD_REVISION:
            return MigrationStatus(url, found, HEAD_REVISION)
        pending = _pending(found, url)
        from alembic import command

        command.upgrade(_config(conn), "head")
        after = current_revision(conn)
    return MigrationStatus(url, after, HEAD_REVISION, (), pending)
