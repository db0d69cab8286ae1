"""Dashboard sessions in the ledger: only a hash is stored; expiry, sign-out and revoking the
key end a session; every process sharing the ledger accepts it. Both backends."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tierwise.ledger import open_ledger

Raw = Callable[..., list[tuple[Any, ...]]]
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_a_session_is_stored_as_a_hash_and_found_by_its_secret(
    ledger_url: str, raw_sql: Raw
) -> None:
    with open_ledger(ledger_url, now=lambda: T0) as book:
        book.create_api_key("ops", role="admin")
        [key] = book.list_api_keys()
        secret = book.open_dashboard_session(key, timedelta(hours=8))
        assert book.dashboard_session(secret) == key
        assert book.dashboard_session(secret + "x") is None
        assert book.dashboard_session("") is None
    rows = raw_sql(ledger_url, "SELECT id_sha256, key_id FROM dashboard_sessions")
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(), key.id)]
    assert secret not in repr(rows)


def test_another_process_on_the_same_ledger_accepts_the_session(ledger_url: str) -> None:
    """What makes sessions work across gateway workers and replicas: the ledger, not memory."""
    with open_ledger(ledger_url) as one, open_ledger(ledger_url) as two:
        one.create_api_key("ops", role="admin")
        [key] = one.list_api_keys()
        secret = one.open_dashboard_session(key, timedelta(hours=1))
        assert two.dashboard_session(secret) == key
        assert two.close_dashboard_session(secret) is True
        assert one.dashboard_session(secret) is None
        assert one.close_dashboard_session(secret) is False


def test_an_expired_session_is_refused_and_deleted_at_the_next_sign_in(
    ledger_url: str, raw_sql: Raw
) -> None:
    clock = [T0]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        book.create_api_key("ops", role="admin")
        [key] = book.list_api_keys()
        old = book.open_dashboard_session(key, timedelta(minutes=30))
        clock[0] = T0 + timedelta(minutes=29, seconds=59)
        assert book.dashboard_session(old) == key
        clock[0] = T0 + timedelta(minutes=30)
        assert book.dashboard_session(old) is None
        new = book.open_dashboard_session(key, timedelta(minutes=30))
        assert book.dashboard_session(new) == key
    assert len(raw_sql(ledger_url, "SELECT id_sha256 FROM dashboard_sessions")) == 1


def test_revoking_the_key_ends_its_sessions(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        book.create_api_key("ops", role="admin")
        [key] = book.list_api_keys()
        secret = book.open_dashboard_session(key, timedelta(hours=1))
        assert book.revoke_api_key("ops")
        assert book.dashboard_session(secret) is None


def test_only_an_active_admin_key_opens_a_session(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        book.create_api_key("agent")
        [client] = book.list_api_keys()
        with pytest.raises(ValueError, match="not an active admin key"):
            book.open_dashboard_session(client, timedelta(hours=1))
        book.create_api_key("ops", role="admin")
        admin = book.list_api_keys()[1]
        with pytest.raises(ValueError, match="positive"):
            book.open_dashboard_session(admin, timedelta(0))
