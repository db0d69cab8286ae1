"""Running the gateway with uvicorn: in the foreground (the CLI) or in a thread (tests, demos).

Sockets are bound with ``IPPROTO_TCP`` so asyncio sets ``TCP_NODELAY`` on accepted connections;
without it a response written in two parts waits on Nagle and delayed ACKs (~40 ms on Linux).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

from tierwise.gateway.config import GatewayConfig

__all__ = ["GatewayServer", "bind_socket", "uvicorn_config"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_config(app: Any, **overrides: Any) -> Any:
    """uvicorn settings for the gateway: httptools, asyncio, no access log, graceful shutdown.

    Both are named rather than left to uvicorn's ``auto``, so the gateway behaves the same
    whatever else is installed: httptools (llhttp, in C) parses requests at a fraction of h11's
    CPU per request, and uvloop, which ``auto`` would pick up, refuses the connect options the
    upstream client passes (``happy_eyeballs_delay``).
    """
    import uvicorn

    settings: dict[str, Any] = {
        "http": "httptools",
        "loop": "asyncio",
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "ws": "none",
        "timeout_graceful_shutdown": 30,
        "timeout_keep_alive": 30,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


class GatewayServer:
    """The gateway on a loopback port in a background thread; a context manager.

    ``base_url`` is what an Anthropic client takes; ``openai_base_url`` adds ``/v1``.
    ``stop()`` asks uvicorn to exit the way SIGTERM does: stop accepting, finish in-flight
    requests, run the lifespan shutdown (ledger flushed and closed).
    """

    def __init__(self, config: GatewayConfig | None = None, *, host: str = "127.0.0.1") -> None:
        from dataclasses import replace

        self.config = replace(config or GatewayConfig(), host=host)  # what the app checks
        self.host = host
        self.port = 0
        self.server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        """What an Anthropic client takes as ``base_url``."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``."""
        return f"{self.base_url}/v1"

    @property
    def app(self) -> Any:
        """The running ASGI app (``None`` when stopped)."""
        return None if self.server is None else self.server.config.app

    def start(self, timeout_s: float = 15.0) -> GatewayServer:
        """Start serving; returns once the app has started (or raises)."""
        import uvicorn

        from tierwise.gateway.app import create_app

        self._sock = bind_socket(self.host, 0)
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(create_app(self.config), log_level="warning"))
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self._sock]},
            name="tierwise-gateway",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the gateway did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful shutdown, as on SIGTERM; waits for the server thread."""
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        if self._sock is not None:
            self._sock.close()
        self.server = self._thread = self._sock = None

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
