"""Gateway API keys: only a SHA-256 of each secret and a short prefix are stored.

A secret is ``tw_`` followed by 43 URL-safe characters (256 random bits), shown once when the key
is created. Verification hashes the presented secret, finds candidates by prefix and compares
hashes with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from tierwise.errors import LedgerError
from tierwise.ledger.schema import api_keys, from_pico, to_pico

SECRET_PREFIX = "tw_"
_PREFIX_LEN = len(SECRET_PREFIX) + 8
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A gateway key as stored: never the secret itself."""

    id: int
    name: str
    prefix: str
    role: str
    budget_usd_day: Decimal | None
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role,
            "budget_usd_day": None if self.budget_usd_day is None else str(self.budget_usd_day),
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def row_to_key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    budget = m["budget_pusd_day"]
    return ApiKey(
        id=int(m["id"]),
        name=str(m["name"]),
        prefix=str(m["prefix"]),
        role=str(m["role"]),
        budget_usd_day=None if budget is None else from_pico(int(budget)),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


def create(
    conn: sa.Connection, name: str, role: str, budget_usd_day: Decimal | None, now: datetime
) -> str:
    """Store a new key and return its secret (the only time it exists in clear)."""
    if not name.strip() or len(name) > 255:
        raise ValueError("an API key name must be 1-255 characters")
    if not _ROLE.match(role):
        raise ValueError(f"an API key role must be a short lower-case word, got {role!r}")
    if budget_usd_day is not None and Decimal(budget_usd_day) <= 0:
        raise ValueError(f"a daily budget must be > 0 USD, got {budget_usd_day}")
    exists = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first()
    if exists is not None:
        raise LedgerError(f"an API key named {name!r} already exists")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(api_keys).values(
            name=name,
            prefix=secret[:_PREFIX_LEN],
            secret_sha256=_hash(secret),
            role=role,
            budget_pusd_day=None if budget_usd_day is None else to_pico(budget_usd_day),
            created_at=now,
        )
    )
    return secret


def verify(conn: sa.Connection, secret: str) -> ApiKey | None:
    """The active key whose secret this is, else ``None``."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) < _PREFIX_LEN:
        return None
    digest = _hash(secret)
    c = api_keys.c
    rows = conn.execute(
        sa.select(api_keys).where(c.prefix == secret[:_PREFIX_LEN], c.revoked_at.is_(None))
    ).all()
    found: ApiKey | None = None
    for row in rows:  # compare every candidate: the time taken does not depend on which matched
        if hmac.compare_digest(str(row._mapping["secret_sha256"]), digest):
            found = row_to_key(row)
    return found


def listing(conn: sa.Connection, include_revoked: bool) -> list[ApiKey]:
    """Every key, oldest first."""
    stmt = sa.select(api_keys).order_by(api_keys.c.id)
    if not include_revoked:
        stmt = stmt.where(api_keys.c.revoked_at.is_(None))
    return [row_to_key(r) for r in conn.execute(stmt).all()]


def revoke(conn: sa.Connection, name: str, now: datetime) -> bool:
    """Revoke the active key called *name*; ``False`` when there is none."""
    c = api_keys.c
    result = conn.execute(
        sa.update(api_keys).where(c.name == name, c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return bool(result.rowcount)
