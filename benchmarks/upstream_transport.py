"""Upstream transports: CPU per request of the lean h11 client against httpx2, same run.

The gateway forwards every call through one of ``tierwise.gateway.http``'s transports:
``FastTransport`` (asyncio streams, framing by h11) or ``HttpxTransport`` (httpx2, used when a
proxy is configured). This script sends the same requests through each to the fake upstream,
over ``http://`` and over ``https://`` (a ``trustme`` certificate), for a JSON answer and for an
SSE stream, and prints the client process's CPU time per request (``time.process_time``: the
fake upstream runs in another process, so its work is not counted) and each transport's ratio
to httpx2 in the same run. Transports take turns in rounds so they see the same conditions.

``--extra module:Class`` adds another transport class with the same interface (for instance a
saved copy of an older client, importable through ``PYTHONPATH``) to the comparison.

Run: ``.venv/bin/python benchmarks/upstream_transport.py [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "Classify this ticket: the invoice total is wrong."}],
}
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "authorization": "Bearer sk-bench",
}


def serve(certfile: str, conn: Connection) -> None:
    """Child process: a plain and a TLS fake upstream until the parent says stop."""
    from tierwise.testing import FakeUpstream, ModelScript

    script = {"gpt-4o-mini": ModelScript(chunks=8)}
    with FakeUpstream(script) as plain, FakeUpstream(script, ssl_certfile=certfile) as tls:
        conn.send({"http": plain.openai_base_url, "https": tls.openai_base_url})
        conn.recv()


def transports(ctx: ssl.SSLContext, extra: list[str]) -> dict[str, Callable[[], Any]]:
    from tierwise.gateway.http import FastTransport, HttpxTransport

    made: dict[str, Callable[[], Any]] = {
        "httpx2": lambda: HttpxTransport(ssl_context=ctx),
        "lean (h11)": lambda: FastTransport(ssl_context=ctx),
    }
    for spec in extra:
        module, _, name = spec.partition(":")
        cls = getattr(importlib.import_module(module), name)
        made[spec] = lambda cls=cls: cls(ssl_context=ctx)
    return made


async def one(transport: Any, url: str, body: bytes, stream: bool) -> None:
    response = await transport.send(url, body, HEADERS, 30.0)
    if stream:
        async for _ in response.aiter_bytes():
            pass
    else:
        await response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")


async def measure(
    make: dict[str, Callable[[], Any]], url: str, stream: bool, n: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """name -> (CPU µs per request, wall µs per request), medians over rounds."""
    payload = json.dumps({**BODY, "stream": True} if stream else BODY).encode()
    live = {name: factory() for name, factory in make.items()}
    cpu: dict[str, list[float]] = {name: [] for name in live}
    wall: dict[str, list[float]] = {name: [] for name in live}
    try:
        for transport in live.values():  # connect, handshake and warm up outside the timing
            for _ in range(20):
                await one(transport, url, payload, stream)
        for r in range(rounds):
            order = list(live.items()) if r % 2 == 0 else list(reversed(live.items()))
            for name, transport in order:
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(n):
                    await one(transport, url, payload, stream)
                cpu[name].append((time.process_time() - c0) / n * 1e6)
                wall[name].append((time.perf_counter() - w0) / n * 1e6)
    finally:
        for transport in live.values():
            await transport.aclose()
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in live}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per transport")
    parser.add_argument("--extra", action="append", default=[], help="module:Class to add")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args()
    n, rounds = (60, 3) if args.quick else (args.requests, args.rounds)

    from tierwise.testing import make_tls

    with tempfile.TemporaryDirectory() as tmp:
        tls = make_tls(tmp)  # a trustme CA and a certificate for 127.0.0.1
        ctx = tls.client_context()
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        server = mp.Process(target=serve, args=(tls.certfile, child), daemon=True)
        server.start()
        try:
            urls = parent.recv()
            rows = []
            for scheme in ("http", "https"):
                for stream in (False, True):
                    url = f"{urls[scheme]}/chat/completions"
                    got = asyncio.run(measure(transports(ctx, args.extra), url, stream, n, rounds))
                    base_cpu = got["httpx2"][0]
                    for name, (cpu_us, wall_us) in got.items():
                        rows.append(
                            {
                                "scheme": scheme,
                                "body": "sse" if stream else "json",
                                "transport": name,
                                "cpu_us": round(cpu_us, 1),
                                "wall_us": round(wall_us, 1),
                                "cpu_vs_httpx2": round(cpu_us / base_cpu, 3),
                            }
                        )
        finally:
            parent.send("stop")
            server.join(timeout=20)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{n} requests x {rounds} rounds per transport, sequential, medians of rounds")
    print(
        f"{'scheme':<6} {'body':<5} {'transport':<28} {'CPU µs/req':>11} {'wall µs/req':>12} "
        f"{'CPU ÷ httpx2':>13}"
    )
    for row in rows:
        print(
            f"{row['scheme']:<6} {row['body']:<5} {row['transport']:<28} {row['cpu_us']:>11.1f} "
            f"{row['wall_us']:>12.1f} {row['cpu_vs_httpx2']:>12.2f}×"
        )


if __name__ == "__main__":
    main()
