"""The ledger's durability setting: fsync every commit by default, ``?sync=normal`` on request."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.errors import LedgerError
from tierwise.ledger import open_ledger


def _synchronous(url: str) -> int:
    with open_ledger(url) as ledger, ledger.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_commits_are_fsynced_by_default(tmp_path: Path) -> None:
    assert _synchronous(f"sqlite:///{tmp_path}/a.db") == 2  # FULL


def test_sync_normal_is_an_explicit_choice(tmp_path: Path) -> None:
    assert _synchronous(f"sqlite:///{tmp_path}/b.db?sync=normal") == 1  # NORMAL


def test_an_unknown_sync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="sync='sometimes'"):
        open_ledger(f"sqlite:///{tmp_path}/c.db?sync=sometimes")
