"""The gateway: Anthropic Messages and OpenAI Chat Completions endpoints that route, validate,
escalate and meter every call.

An agent points its SDK's base URL at ``tierwise serve``; ``model="tierwise/auto"`` (or
``tierwise/<kind>``, or a concrete model id) and ``x-tierwise-*`` headers say what the task is.

>>> from tierwise.gateway import GatewayConfig, create_app
>>> app = create_app(GatewayConfig(ledger_url="sqlite:///ledger.db"))  # doctest: +SKIP

Modules: ``dialects`` (request views, error shapes), ``translate`` (between the dialects),
``sse`` (streams), ``upstream`` (raw providers), ``recorder`` (group-commit ledger writes),
``auth``, ``metrics``, ``service`` and ``streaming`` (the request path), ``app`` (the factory).
"""

from __future__ import annotations

from tierwise.gateway.app import create_app, create_app_from_env
from tierwise.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app", "create_app_from_env"]
