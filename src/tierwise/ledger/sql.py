"""The few statements whose spelling differs between SQLite and Postgres.

They are built once per (dialect, table, columns) and executed with parameter dicts: building an
``ON CONFLICT`` statement costs more than executing it, and these are on the request path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa


def _dialect_insert(dialect: str, table: sa.Table) -> Any:
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    raise NotImplementedError(f"the ledger supports SQLite and Postgres, not {dialect}")


@cache
def _insert_ignore(dialect: str, table: sa.Table, keys: tuple[str, ...]) -> Any:
    return _dialect_insert(dialect, table).on_conflict_do_nothing(index_elements=list(keys))


@cache
def _upsert(
    dialect: str,
    table: sa.Table,
    keys: tuple[str, ...],
    update: tuple[str, ...],
    returning: str | None,
) -> Any:
    stmt = _dialect_insert(dialect, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
    )
    return stmt.returning(table.c[returning]) if returning else stmt


def upsert_statement(
    dialect: str,
    table: sa.Table,
    keys: Sequence[str],
    update: Sequence[str],
    returning: str | None = None,
) -> Any:
    """The (cached) ``INSERT … ON CONFLICT (keys) DO UPDATE`` statement for *dialect*."""
    return _upsert(dialect, table, tuple(keys), tuple(update), returning)


def insert_ignore(
    conn: sa.Connection, table: sa.Table, keys: Sequence[str], values: Mapping[str, Any]
) -> sa.CursorResult[Any]:
    """``INSERT … ON CONFLICT (keys) DO NOTHING`` with *values*."""
    stmt = _insert_ignore(conn.dialect.name, table, tuple(keys))
    return conn.execute(stmt, dict(values))


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    keys: Sequence[str],
    values: Mapping[str, Any],
    update: Sequence[str],
    returning: str | None = None,
) -> sa.CursorResult[Any]:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET`` the *update* columns from *values*."""
    stmt = _upsert(conn.dialect.name, table, tuple(keys), tuple(update), returning)
    return conn.execute(stmt, dict(values))


def window_filters(
    at: sa.ColumnElement[Any],
    since: Any | None,
    until: Any | None,
    kind_column: sa.ColumnElement[Any] | None = None,
    kind: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """``since <= at < until`` (an end open when ``None``), and ``kind_column == kind`` if given."""
    where: list[sa.ColumnElement[bool]] = []
    if since is not None:
        where.append(at >= since)
    if until is not None:
        where.append(at < until)
    if kind is not None and kind_column is not None:
        where.append(kind_column == kind)
    return where
