"""Migrations build exactly the schema the code uses, run once, and refuse unknown revisions."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import tierwise.ledger.engine as engine_module
from tierwise.errors import LedgerError
from tierwise.ledger import HEAD_REVISION, open_ledger
from tierwise.ledger.schema import metadata


def _script_dir() -> ScriptDirectory:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(engine_module.__file__).parent / "migrations")
    )
    return ScriptDirectory.from_config(config)


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    assert _script_dir().get_heads() == [HEAD_REVISION]


def test_the_migrated_schema_is_the_schema_the_code_uses(tmp_path: Path) -> None:
    open_ledger(tmp_path / "l.db").close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_a_fresh_ledger_records_the_head_revision_and_every_table(tmp_path: Path) -> None:
    open_ledger(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    try:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert version == HEAD_REVISION
    assert set(metadata.tables) <= tables


def test_reopening_a_current_ledger_does_not_run_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_ledger(tmp_path / "l.db").close()
    import alembic.command

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("alembic ran on a current ledger")

    monkeypatch.setattr(alembic.command, "upgrade", boom)
    open_ledger(tmp_path / "l.db").close()


def test_a_ledger_from_a_newer_tierwise_is_refused(tmp_path: Path) -> None:
    open_ledger(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="9999"):
        open_ledger(tmp_path / "l.db")


def test_downgrade_removes_every_table(tmp_path: Path) -> None:
    """The initial migration is reversible (alembic downgrade base)."""
    from alembic import command

    open_ledger(tmp_path / "l.db").close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'l.db'}")
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


def test_processes_opening_a_new_ledger_together_all_succeed(tmp_path: Path) -> None:
    """Concurrent first opens serialise on the write lock: one migrates, the others wait."""
    path = tmp_path / "new.db"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(path)],
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
