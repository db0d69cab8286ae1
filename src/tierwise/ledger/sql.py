"""The few statements whose spelling differs between SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa


def _dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    raise NotImplementedError(f"the ledger supports SQLite and Postgres, not {name}")


def insert_ignore(conn: sa.Connection, table: sa.Table, keys: Sequence[str]) -> Any:
    """``INSERT … ON CONFLICT (keys) DO NOTHING``; add ``.values(...)``."""
    return _dialect_insert(conn, table).on_conflict_do_nothing(index_elements=list(keys))


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    keys: Sequence[str],
    values: Mapping[str, Any],
    update: Sequence[str],
) -> Any:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET`` the *update* columns from the new row."""
    stmt = _dialect_insert(conn, table).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
    )
