"""The ledger: a durable record of every task and attempt, budgets and gateway keys.

SQLite (WAL, one file) by default, or PostgreSQL (``postgresql+psycopg://…``, the ``postgres``
extra) for several processes and hosts sharing one ledger; SQLAlchemy Core with the same Alembic
migrations on both. Money is stored as integer pico-USD (exact sums in SQL on every backend)
and read back as :class:`~decimal.Decimal` USD.

>>> from tierwise.ledger import open_ledger, default_ledger_url
>>> with open_ledger(default_ledger_url()) as ledger:  # doctest: +SKIP
...     ledger.stats(kind="extract")
"""

from tierwise.ledger.budgets import BudgetState, Reservation
from tierwise.ledger.changes import ChangesInForce, PolicyChange
from tierwise.ledger.engine import (
    HEAD_REVISION,
    LedgerSettings,
    MissingDriverError,
    default_ledger_url,
    ledger_url,
)
from tierwise.ledger.feedback import FLAGS, Feedback
from tierwise.ledger.keys import ApiKey
from tierwise.ledger.migrate import MigrationStatus
from tierwise.ledger.rollups import PruneResult
from tierwise.ledger.store import TASK_OUTCOMES, Ledger, open_ledger

__all__ = [
    "FLAGS",
    "HEAD_REVISION",
    "TASK_OUTCOMES",
    "ApiKey",
    "BudgetState",
    "ChangesInForce",
    "Feedback",
    "Ledger",
    "LedgerSettings",
    "MigrationStatus",
    "MissingDriverError",
    "PolicyChange",
    "PruneResult",
    "Reservation",
    "default_ledger_url",
    "ledger_url",
    "open_ledger",
]
