"""Alembic environment for the tierwise ledger.

``open_ledger`` runs migrations programmatically and hands its own connection over in
``config.attributes["connection"]`` (already inside a write transaction, so concurrent openers
serialise). Run from the command line, ``alembic -c src/tierwise/ledger/alembic.ini upgrade head``
uses ``sqlalchemy.url`` from the ini file or ``-x url=...``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from tierwise.ledger.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs via table copies
        transactional_ddl=True,  # SQLite DDL is transactional once we emit BEGIN ourselves
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or one made from the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("set sqlalchemy.url in alembic.ini or pass -x url=sqlite:///ledger.db")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
