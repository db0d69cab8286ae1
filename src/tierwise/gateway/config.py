"""The gateway's settings: one frozen value, built by the CLI or by tests, passed to the factory.

Precedence (written down once): command-line flags, then ``TIERWISE_*`` environment variables
(``TIERWISE_POLICY``, ``TIERWISE_LEDGER``), then defaults (the embedded policy, the ledger file
``./tierwise-ledger.db``). Upstream API keys are read from the environment variables the
policy's tiers name, never from flags or files, and are never logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierwise.policy import Policy

__all__ = ["CONFIG_ENV", "DEFAULT_MAX_BODY_BYTES", "GatewayConfig"]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: Environment variable carrying the config to ``--workers`` processes (no secrets in it).
CONFIG_ENV = "TIERWISE_GATEWAY_CONFIG"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything :func:`tierwise.gateway.create_app` needs.

    Args:
        policy: the policy to serve (wins over ``policy_path``); default: ``policy_path``, else
            ``$TIERWISE_POLICY``, ``./tierwise.toml``, else the embedded default policy.
        policy_path: a policy file to load when the app starts.
        ledger_url: the ledger (a SQLite path or URL); default ``$TIERWISE_LEDGER`` or
            ``./tierwise-ledger.db``.
        max_body_bytes: larger request bodies get 413.
        body_timeout_s: a request body not received within this many seconds gets 408 (and
            the connection is closed), so a client that stops sending cannot hold it.
        env: where upstream API keys are read from (default ``os.environ`` at start-up).
        key_cache_s: how long a verified gateway key (and "no keys exist") is trusted before
            the ledger is asked again; a revoked key stops working within this time.
        max_connections: upstream connection pool size.
        host: the address served. Off loopback (checked by resolving it) keys are required
            and ``/metrics`` needs an admin key.
        allow_anonymous: serve requests without a key even off loopback (a warning is logged
            at every start). On loopback a gateway whose ledger has no keys at start serves
            without keys anyway.
        allow_missing_keys: start even when a tier's upstream key variable is unset, and
            report that tier unavailable in ``/healthz`` (by default the gateway refuses to
            start, naming the variable).
        log_level / log_format: how worker processes configure logging (``text`` or
            ``json``: one JSON object per line, with the request fields).
        workers: how many worker processes serve (a reload restarts them all when > 1).
        wait_for_ledger: answer only once the request's ledger rows are committed (default).
            ``False`` answers first and commits a moment later: lower latency, but a crash can
            lose the rows of the last few milliseconds of answers.
        upstream_ca_file: a PEM bundle of the CAs that ``https://`` upstreams' certificates are
            checked against, instead of the default store (a private CA, a TLS-inspecting
            proxy). Default: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else the system's
            store, as for the official SDKs.
        spool_dir: where this process keeps a paid call's ledger rows while the database cannot
            be reached (one file per process, replayed when it is back); default
            ``$TIERWISE_SPOOL_DIR``, else ``./tierwise-spool``. Give every process on a host
            the same one, and ``tierwise ledger check`` too.
        ledger_check_s: how long the last ledger commit's (or ping's) verdict on the database
            is trusted before a request pings it again; within it a request is refused with
            503, before any upstream call, when the database was found down.
        changes_poll_s: how often each worker reads the policy changes in force from the
            ledger (:mod:`tierwise.gateway.learning`): a change is served within this time.
        summary_every_s: how often each worker keeps the weekly report's summary of the last
            day's ended hours (:mod:`tierwise.gateway.summaries`); 0 turns it off.
    """

    policy: Policy | None = None
    policy_path: str | None = None
    ledger_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = 30.0
    env: Mapping[str, str] | None = field(default=None, repr=False)
    key_cache_s: float = 2.0
    max_connections: int = 512
    host: str = "127.0.0.1"
    wait_for_ledger: bool = True
    allow_anonymous: bool = False
    allow_missing_keys: bool = False
    log_level: str = "info"
    log_format: str = "text"
    workers: int = 1
    upstream_ca_file: str | None = None
    spool_dir: str | None = None
    ledger_check_s: float = 1.0
    changes_poll_s: float = 2.0
    summary_every_s: float = 300.0

    def __post_init__(self) -> None:
        if self.upstream_ca_file is not None and not Path(self.upstream_ca_file).is_file():
            raise ValueError(f"upstream_ca_file {self.upstream_ca_file!r} is not a file")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
        if self.body_timeout_s <= 0:
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s}")
        if self.key_cache_s < 0:
            raise ValueError(f"key_cache_s must not be negative, got {self.key_cache_s}")
        if self.ledger_check_s < 0:
            raise ValueError(f"ledger_check_s must not be negative, got {self.ledger_check_s}")
        if self.summary_every_s < 0:
            raise ValueError(f"summary_every_s must be >= 0, got {self.summary_every_s}")
        if self.changes_poll_s <= 0:
            raise ValueError(f"changes_poll_s must be positive, got {self.changes_poll_s}")

    def policy_source(self) -> Path | None:
        """The policy file this config serves (``None`` for an object or the embedded one)."""
        if self.policy is not None:
            return self.policy.source
        path = self.policy_path or os.environ.get("TIERWISE_POLICY")
        if path:
            return Path(path).resolve()
        local = Path("tierwise.toml")
        return local.resolve() if local.exists() else None

    def load_policy(self) -> Policy:
        """The policy to serve (see ``policy`` above for the order)."""
        from tierwise.policy import default_policy, load_policy

        if self.policy is not None:
            return self.policy
        path = self.policy_path or os.environ.get("TIERWISE_POLICY")
        if path:
            return load_policy(Path(path))
        local = Path("tierwise.toml")
        return load_policy(local) if local.exists() else default_policy()

    def resolved_ledger_url(self) -> str:
        """The ledger URL to open (see ``ledger_url``)."""
        from tierwise.ledger import default_ledger_url, ledger_url

        return ledger_url(self.ledger_url) if self.ledger_url else default_ledger_url()

    def resolved_spool_dir(self) -> Path:
        """The spool directory (see ``spool_dir``)."""
        from tierwise.ledger.spool import default_spool_dir

        return Path(self.spool_dir) if self.spool_dir else default_spool_dir()

    def environ(self) -> Mapping[str, str]:
        """Where upstream API keys are read from."""
        return os.environ if self.env is None else self.env

    def to_json(self) -> str:
        """The serialisable part (for worker processes): paths and numbers, never secrets."""
        if self.policy is not None and self.policy_path is None and self.policy.source is None:
            raise ValueError("a policy given as an object cannot be passed to worker processes")
        policy_path = self.policy_path or (
            str(self.policy.source) if self.policy is not None and self.policy.source else None
        )
        return json.dumps(
            {
                "policy_path": policy_path,
                "ledger_url": self.ledger_url,
                "max_body_bytes": self.max_body_bytes,
                "body_timeout_s": self.body_timeout_s,
                "key_cache_s": self.key_cache_s,
                "max_connections": self.max_connections,
                "host": self.host,
                "wait_for_ledger": self.wait_for_ledger,
                "allow_anonymous": self.allow_anonymous,
                "allow_missing_keys": self.allow_missing_keys,
                "log_level": self.log_level,
                "log_format": self.log_format,
                "workers": self.workers,
                "upstream_ca_file": self.upstream_ca_file,
                "spool_dir": self.spool_dir,
                "ledger_check_s": self.ledger_check_s,
                "changes_poll_s": self.changes_poll_s,
                "summary_every_s": self.summary_every_s,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> GatewayConfig:
        """The inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(**data)


def is_loopback(host: str) -> bool:
    """Whether *host* names only loopback addresses (``127.0.0.0/8``, ``::1``).

    Names are resolved and every address must be loopback: ``127.0.0.1.nip.io`` is a public
    name that merely starts like one. A name that does not resolve is not loopback.
    """
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
    )
