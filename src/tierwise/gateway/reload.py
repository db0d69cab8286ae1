"""Policy reloads that cannot take a gateway down.

A reload reads the policy file again and, only when it is valid, swaps it in as one value
(:meth:`GatewayService.reload`); requests under way finish with the policy they started with.
A broken file changes nothing: the old policy stays and the log says why. The new revision is
recorded in the ledger, as every policy a cascade serves is.

Triggers: ``SIGHUP`` to a single-process gateway, and ``POST /v1/tierwise/admin/reload``
(admin key). With ``--workers N`` uvicorn's supervisor answers ``SIGHUP`` by restarting its
workers, which read the file as they start; a worker that finds the file broken serves the
last revision the ledger recorded for that file instead of dying (:func:`load_or_last_good`),
and the admin route checks the file before it asks the supervisor to restart them.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tierwise.errors import PolicyError

if TYPE_CHECKING:
    from tierwise.gateway.config import GatewayConfig
    from tierwise.gateway.service import GatewayService
    from tierwise.ledger import Ledger
    from tierwise.policy import Policy

__all__ = ["ReloadResult", "load_or_last_good", "reload_policy", "restart_workers"]

log = logging.getLogger("tierwise.gateway")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: the revisions before and after, or why it refused."""

    ok: bool
    previous: str
    revision: str
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.ok and self.revision != self.previous

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "previous": self.previous,
            "revision": self.revision,
            "error": self.error,
        }


def reload_policy(service: GatewayService, config: GatewayConfig) -> ReloadResult:
    """Read the policy file again and serve it, or keep the old one and say why."""
    from tierwise.evaluation.live import load_learned

    previous = service.policy.revision
    try:
        policy = config.load_policy()
        learned = load_learned(policy)  # the saved models are read again on every reload
    except PolicyError as exc:
        reason = _one_line(exc)
        log.error("policy reload refused, still serving revision %s: %s", previous[:12], reason)
        return ReloadResult(False, previous, previous, reason)
    if policy.revision == previous and learned is None:
        log.info("policy reload: the file is unchanged (revision %s)", previous[:12])
        return ReloadResult(True, previous, previous)
    service.reload(policy, learned)
    log.info("policy reloaded: revision %s -> %s", previous[:12], policy.revision[:12])
    return ReloadResult(True, previous, policy.revision)


def check_policy(config: GatewayConfig) -> tuple[Policy | None, str | None]:
    """The policy the file holds now, or why it cannot be read (nothing is swapped)."""
    from tierwise.evaluation.live import load_learned

    try:
        policy = config.load_policy()
        load_learned(policy)
    except PolicyError as exc:
        return None, _one_line(exc)
    return policy, None


def load_or_last_good(config: GatewayConfig, ledger: Ledger) -> Policy:
    """The policy to start with: the file's, or — when the file is broken and the ledger has
    served it before — the last revision recorded for it (a restarted worker must not die).

    Raises:
        PolicyError: the file is broken and the ledger knows no earlier version of it.
    """
    try:
        return config.load_policy()
    except PolicyError as exc:
        source = config.policy_source()
        found = None if source is None else ledger.latest_policy(str(source))
        if source is None or found is None:
            raise
        revision, policy_json = found
        log.error(
            "the policy file %s is invalid (%s); serving its last good revision %s from the "
            "ledger until it is fixed and reloaded",
            source,
            _one_line(exc),
            revision[:12],
        )
        return _from_json(policy_json, source)


def restart_workers() -> None:
    """Ask uvicorn's supervisor (this worker's parent) to restart every worker (``SIGHUP``)."""
    os.kill(os.getppid(), signal.SIGHUP)


def _from_json(policy_json: str, source: Path) -> Policy:
    from tierwise.policy import Policy
    from tierwise.policy.schema import PolicyModel

    model = PolicyModel.model_validate_json(policy_json)
    return Policy(model, source=source, base_dir=source.parent)


def _one_line(exc: PolicyError) -> str:
    lines = str(exc).splitlines()
    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
    return (lines[0] if lines else "invalid policy") + more
