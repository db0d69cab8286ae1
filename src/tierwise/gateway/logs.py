"""One structured log line per request, through the standard :mod:`logging` module.

Every request the gateway answers — served, refused or failed, streamed or not — ends in one
record on the ``tierwise.gateway.requests`` logger at INFO (WARNING for a 5xx). Its message is
a readable line; the same facts ride on the record as ``record.tierwise`` (a dict), which
:class:`JsonFormatter` writes as one JSON object per line, so operators can send it anywhere a
logging handler goes. Fields:

``task_id``, ``key`` (the gateway key's name, never the secret), ``dialect``, ``route``,
``kind``, ``tiers`` (the tiers tried, in order), ``attempts``, ``status``, ``cost_usd``,
``latency_ms``, ``overhead_ms`` and ``error`` (the failure's class, ``null`` when served).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.records import AttemptRecord

__all__ = ["REQUEST_LOGGER", "JsonFormatter", "RequestLog", "configure_logging"]

REQUEST_LOGGER = "tierwise.gateway.requests"

log = logging.getLogger(REQUEST_LOGGER)


@dataclass(slots=True)
class RequestLog:
    """What one request did, filled in as it is served and written once when it ends."""

    dialect: str
    path: str
    task_id: str | None = None
    key: str | None = None
    route: str | None = None
    kind: str | None = None
    attempts: Sequence[AttemptRecord] = field(default_factory=tuple)
    error: str | None = None

    def write(self, status: int, latency_s: float, overhead_s: float | None) -> None:
        """Emit the record (INFO, or WARNING for a 5xx)."""
        level = logging.WARNING if status >= 500 else logging.INFO
        if not log.isEnabledFor(level):
            return
        tried = [a.tier for a in self.attempts if a.role != "validator"]
        tiers = [t for i, t in enumerate(tried) if i == 0 or tried[i - 1] != t]
        cost = sum((a.cost_usd for a in self.attempts), Decimal(0))
        fields: dict[str, Any] = {
            "task_id": self.task_id,
            "key": self.key,
            "dialect": self.dialect,
            "route": self.route,
            "kind": self.kind,
            "tiers": tiers,
            "attempts": len(self.attempts),
            "status": status,
            "cost_usd": format(cost, "f"),
            "latency_ms": round(latency_s * 1000, 3),
            "overhead_ms": None if overhead_s is None else round(overhead_s * 1000, 3),
            "error": self.error,
        }
        message = (
            f"{self.path} {status} task={self.task_id or '-'} kind={self.kind or '-'} "
            f"tiers={'>'.join(tiers) or '-'} cost=${fields['cost_usd']} "
            f"{fields['latency_ms']}ms key={self.key or '-'}"
            + (f" error={self.error}" if self.error else "")
        )
        log.log(level, message, extra={"tierwise": fields})


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object: time, level, logger, message and the request fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "tierwise", None)
        if isinstance(extra, dict):
            data.update(extra)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """The CLI's logging set-up: ``text`` (one readable line) or ``json`` (one object) each."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
