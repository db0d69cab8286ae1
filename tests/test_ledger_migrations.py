"""Migrations build exactly the schema the code uses, run once under a lock, and refuse unknown
revisions — on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import tierwise.ledger.engine as engine_module
from tierwise.errors import LedgerError
from tierwise.ledger import HEAD_REVISION, open_ledger
from tierwise.ledger.engine import parse_ledger_url
from tierwise.ledger.migrate import MIGRATION_LOCK_KEY
from tierwise.ledger.schema import metadata

Raw = Callable[..., list[tuple[Any, ...]]]


def _engine(url: str) -> sa.Engine:
    """A plain engine on the ledger's database (no tierwise hooks)."""
    return sa.create_engine(parse_ledger_url(url)[0], poolclass=sa.NullPool)


def _script_dir() -> ScriptDirectory:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(engine_module.__file__).parent / "migrations")
    )
    return ScriptDirectory.from_config(config)


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert _script_dir().get_heads() == [HEAD_REVISION]


def test_the_migrated_schema_is_the_schema_the_code_uses(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    engine = _engine(ledger_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_a_fresh_ledger_records_the_head_revision_and_every_table(
    ledger_url: str, raw_sql: Raw
) -> None:
    open_ledger(ledger_url).close()
    [(version,)] = raw_sql(ledger_url, "SELECT version_num FROM alembic_version")
    engine = _engine(ledger_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert version == HEAD_REVISION
    assert set(metadata.tables) <= tables


def test_reopening_a_current_ledger_does_not_run_alembic(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_ledger(ledger_url).close()
    import alembic.command

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("alembic ran on a current ledger")

    monkeypatch.setattr(alembic.command, "upgrade", boom)
    open_ledger(ledger_url).close()


def test_a_ledger_from_a_newer_tierwise_is_refused(ledger_url: str, raw_sql: Raw) -> None:
    """A replica older than the schema refuses to start, naming both revisions."""
    open_ledger(ledger_url).close()
    raw_sql(ledger_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(LedgerError, match="newer") as info:
        open_ledger(ledger_url)
    assert "'9999'" in str(info.value) and repr(HEAD_REVISION) in str(info.value)
    assert raw_sql(ledger_url, "SELECT version_num FROM alembic_version") == [("9999",)]


def test_manual_migrations_refuse_an_older_schema_until_migrated(
    ledger_url: str, raw_sql: Raw, downgrade: Callable[[str, str], None]
) -> None:
    manual = f"{ledger_url}?migrate=manual"
    with pytest.raises(LedgerError, match="tierwise ledger migrate"):
        open_ledger(manual)  # an empty database
    open_ledger(ledger_url).close()  # auto: migrated
    open_ledger(manual).close()  # current: opens
    downgrade(ledger_url, "0001")
    with pytest.raises(LedgerError, match="0001") as info:
        open_ledger(manual)
    assert HEAD_REVISION in str(info.value) and "migrate=manual" in str(info.value)
    open_ledger(ledger_url).close()
    assert raw_sql(ledger_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_downgrade_removes_every_table(ledger_url: str) -> None:
    """Every migration is reversible (alembic downgrade base)."""
    from alembic import command

    open_ledger(ledger_url).close()
    engine = _engine(ledger_url)
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option(
                "script_location", str(Path(engine_module.__file__).parent / "migrations")
            )
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables & set(metadata.tables) == set()


def test_the_plan_tree_migration_keeps_existing_rows_and_reverses(
    ledger_url: str, raw_sql: Raw, downgrade: Callable[[str, str], None]
) -> None:
    """0005 adds NULL plan columns to rows written before it, and its downgrade drops them."""
    from tierwise.ledger.fixtures import record_task

    with open_ledger(ledger_url) as ledger:
        task, _ = record_task(ledger)
    downgrade(ledger_url, "0003")
    assert "plan_id" not in {c["name"] for c in _columns(ledger_url, "attempts")}
    open_ledger(ledger_url).close()  # upgraded again on opening
    rows = raw_sql(ledger_url, "SELECT plan_id, plan_role FROM attempts")
    assert rows and all(r == (None, None) for r in rows)
    assert raw_sql(ledger_url, "SELECT id FROM tasks WHERE plan_id IS NULL") == [(task.id,)]


def _columns(url: str, table: str) -> list[dict[str, Any]]:
    engine = _engine(url)
    try:
        return list(sa.inspect(engine).get_columns(table))
    finally:
        engine.dispose()


_OPENER = textwrap.dedent(
    """
    import json, sys
    from tierwise.ledger import open_ledger
    from tierwise.ledger.fixtures import record_task

    sys.stdin.readline()
    with open_ledger(sys.argv[1]) as ledger:
        task, _ = record_task(ledger)
    print(json.dumps(task.id), flush=True)
    """
)


def test_processes_opening_a_new_ledger_together_all_succeed(ledger_url: str) -> None:
    """Concurrent first opens serialise on the migration lock (Postgres: an advisory lock;
    SQLite: the write lock): one migrates, the others wait and find the schema current."""
    path = ledger_url
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for _ in range(4)
    ]
    ids = []
    try:
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            ids.append(json.loads(out))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    with open_ledger(path) as book:
        assert all(book.task(i) is not None for i in ids)
        assert book.integrity_check() == []


def test_a_postgres_migration_waits_for_the_advisory_lock(postgres_url: str, raw_sql: Raw) -> None:
    """While another migrator holds the lock, opening an empty ledger waits for it, visibly in
    pg_locks, and migrates once it is released."""
    holder = _engine(postgres_url)
    opened = threading.Event()
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_ledger(postgres_url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)
        opened.set()

    with holder.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        worker = threading.Thread(target=opener)
        worker.start()
        waiting = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 30
        while raw_sql(postgres_url, waiting) != [(1,)]:
            assert time.monotonic() < deadline, "the migrator never waited for the lock"
            assert not opened.is_set(), f"opened without the lock: {errors}"
            time.sleep(0.02)
        assert raw_sql(postgres_url, "SELECT to_regclass('alembic_version') IS NULL") == [(True,)]
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
    holder.dispose()
    assert opened.wait(timeout=60) and not errors, errors
    worker.join()
    assert raw_sql(postgres_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def _plan_index_where(url: str, raw_sql: Raw) -> dict[str, str | None]:
    """The WHERE clause of each table's plan index (None for a full index)."""
    if url.startswith("sqlite"):
        rows = raw_sql(
            url,
            "SELECT name, sql FROM sqlite_master WHERE name IN "
            "('ix_tasks_plan_id', 'ix_attempts_plan_id')",
        )
    else:
        rows = raw_sql(
            url,
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
            "('ix_tasks_plan_id', 'ix_attempts_plan_id')",
        )
    return {name: (sql.partition(" WHERE ")[2] or None) for name, sql in rows}


def test_plan_indexes_leave_out_rows_outside_a_plan_and_come_back_whole_on_downgrade(
    ledger_url: str, raw_sql: Raw, downgrade: Callable[[str, str], None]
) -> None:
    """Migration 0009: most rows have no plan, so the plan indexes cover only rows in one."""
    open_ledger(ledger_url).close()
    where = _plan_index_where(ledger_url, raw_sql)
    assert set(where) == {"ix_tasks_plan_id", "ix_attempts_plan_id"}
    assert all(
        w is not None and "plan_id IS NOT NULL" in w.replace("(", "").replace(")", "")
        for w in where.values()
    ), where
    downgrade(ledger_url, "0008")
    assert _plan_index_where(ledger_url, raw_sql) == {
        "ix_tasks_plan_id": None,
        "ix_attempts_plan_id": None,
    }
    open_ledger(ledger_url).close()  # upgrades again
    assert all(w is not None for w in _plan_index_where(ledger_url, raw_sql).values())


def test_a_plan_lookup_uses_the_partial_index(tmp_path: Path, raw_sql: Raw) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).close()
    plan = raw_sql(url, "EXPLAIN QUERY PLAN SELECT id FROM attempts WHERE plan_id = :p", p="x")
    assert "ix_attempts_plan_id" in " ".join(str(part) for row in plan for part in row)
