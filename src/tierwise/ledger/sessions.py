"""Dashboard sessions: what a browser holds instead of an admin key.

Signing in to the dashboard checks an admin key once and opens a session: a random secret
(256 bits) that the browser keeps in an HttpOnly cookie. The ledger keeps only its SHA-256, the
key's id and when the session expires, so a session works on every gateway worker and replica
that shares the ledger, and a copy of the database holds nothing a browser could present. A
session is valid while it has not expired, has not been closed (signing out deletes its row)
and its key is still an active admin key: revoking the key ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa

from tierwise.ledger.keys import ApiKey, row_to_key
from tierwise.ledger.schema import api_keys, dashboard_sessions

__all__ = ["close", "lookup", "open_session"]

_SECRET_BYTES = 32


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(conn: sa.Connection, key: ApiKey, now: datetime, ttl: timedelta) -> str:
    """Store a new session for *key* (an active admin key) and return its secret.

    Expired sessions are deleted on the way (sessions are few: one per sign-in).

    Raises:
        ValueError: *key* is not an active admin key, or *ttl* is not positive.
    """
    if key.role != "admin" or not key.active:
        raise ValueError(f"key {key.name!r} is not an active admin key")
    if ttl <= timedelta(0):
        raise ValueError(f"a session lifetime must be positive, got {ttl}")
    conn.execute(sa.delete(dashboard_sessions).where(dashboard_sessions.c.expires_at <= now))
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    conn.execute(
        sa.insert(dashboard_sessions).values(
            id_sha256=_digest(secret), key_id=key.id, created_at=now, expires_at=now + ttl
        )
    )
    return secret


def lookup(conn: sa.Connection, secret: str, now: datetime) -> ApiKey | None:
    """The active admin key of the live session whose secret this is, else ``None``."""
    if not secret or len(secret) > 128:
        return None
    s, k = dashboard_sessions.c, api_keys.c
    row = conn.execute(
        sa.select(api_keys)
        .join(dashboard_sessions, s.key_id == k.id)
        .where(
            s.id_sha256 == _digest(secret),
            s.expires_at > now,
            k.revoked_at.is_(None),
            k.role == "admin",
        )
    ).first()
    return None if row is None else row_to_key(row)


def close(conn: sa.Connection, secret: str) -> bool:
    """End the session whose secret this is; ``False`` when there was none."""
    result = conn.execute(
        sa.delete(dashboard_sessions).where(dashboard_sessions.c.id_sha256 == _digest(secret))
    )
    return bool(result.rowcount)
