"""Gateway throughput on each ledger backend: one and two workers, SQLite and PostgreSQL.

Targets, all in the OpenAI Chat Completions dialect against one fake upstream
(``python -m tierwise.testing``, zero added latency):

* ``direct`` — the upstream itself, the baseline every ratio is taken against;
* ``sqlite-1w`` / ``sqlite-2w`` — ``tierwise serve`` with one / two worker processes on one
  SQLite ledger file (WAL, ``synchronous=FULL``, group commit);
* ``pg-1w`` / ``pg-2w`` — the same on a PostgreSQL ledger (``synchronous_commit=on``) on a
  throwaway cluster this script starts with ``fsync=on`` (Debian's binaries, a temporary folder
  on the same disk as the SQLite files).

Every gateway runs as shipped (cascade, durable group commit, metrics). For 16 and 64 clients,
each target gets alternating fixed-time phases (default 2 rounds of 3 s each), so drifting load
hits every target alike; the figure is requests per second and its ratio to ``direct`` at the
same concurrency. Non-streamed requests.

Placement on a 2-core machine: the load generator and the fake upstream are pinned to core 0,
every gateway worker and the PostgreSQL server to core 1 (as in ``gateway_overhead.py``), so a
second worker adds a process, not a core: the two-worker rows show what a second process on the
same core costs or gains (its own event loop and writer thread; on SQLite the two share one
write lock, on Postgres they share the server). ``--no-pin`` lets the scheduler place everything.

Run: ``.venv/bin/python benchmarks/gateway_backends.py [--quick] [--clients 16,64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from gateway_overhead import (  # the same load generator and process helpers
    UPSTREAM_MODEL,
    Target,
    cores,
    free_port,
    start,
    stop,
    taskset,
    throughput,
    wait_http,
)

from tierwise.testing.postgres import PostgresCluster

_POLICY = """version = 1
[[tiers]]
name = "only"
provider = "openai"
model = "{model}"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[defaults]
doubt = "cheap"
validators = []

[kinds.bench]
"""


def _pin_postgres(cluster: PostgresCluster, core: str) -> None:
    """Pin the postmaster (and so every backend it forks later) to *core*."""
    pid = (cluster.data_dir / "postmaster.pid").read_text().split()[0]
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-a", "-p", "-c", core, pid], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (a smoke run)")
    parser.add_argument("--clients", default="16,64", help="concurrency levels")
    parser.add_argument("--phase", type=float, default=3.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases per target")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    phase = 1.0 if args.quick else args.phase

    load_core, gw_core = cores()
    pin_load = [] if args.no_pin else taskset(load_core)
    pin_gw = [] if args.no_pin else taskset(gw_core)
    if not args.no_pin:
        os.sched_setaffinity(0, {int(load_core)})
    work = Path(tempfile.mkdtemp(prefix="tierwise-bench-backends-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "sk-fake", "PYTHONUNBUFFERED": "1"}
    up_port = free_port()
    policy = work / "bench.toml"
    policy.write_text(_POLICY.format(model=UPSTREAM_MODEL, port=up_port))
    with ExitStack() as stack:
        cluster = PostgresCluster(fsync=True)
        stack.callback(cluster.close)
        cluster.start()
        if not args.no_pin:
            _pin_postgres(cluster, gw_core)
        upstream = start(
            [*pin_load, sys.executable, "-m", "tierwise.testing", "--port", str(up_port)],
            env,
            work / "upstream.log",
        )
        stack.callback(stop, upstream)
        wait_http(up_port, "/v1/models", 30, upstream)

        def serve(name: str, ledger: str, workers: int) -> Target:
            port = free_port()
            cmd = [*pin_gw, sys.executable, "-m", "tierwise", "serve", "--policy", str(policy)]
            cmd += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
            # the ledger URL through the environment, as in production (it may hold a password)
            proc = start(cmd, {**env, "TIERWISE_LEDGER": ledger}, work / f"{name}.log")
            stack.callback(stop, proc)
            wait_http(port, "/healthz", 120, proc)
            return Target(name, port, "/v1/chat/completions", "tierwise/bench")

        targets = [Target("direct", up_port, "/v1/chat/completions", UPSTREAM_MODEL)]
        for workers in (1, 2):
            targets.append(serve(f"sqlite-{workers}w", str(work / f"l{workers}.db"), workers))
            pg_url = cluster.create_database(f"bench_{workers}w")
            targets.append(serve(f"pg-{workers}w", pg_url, workers))
        print(
            f"cores: load generator + upstream on {load_core}, gateways + postgres on {gw_core}"
            if not args.no_pin
            else "cores: not pinned"
        )
        results: dict[int, dict[str, float]] = {}
        for clients in [int(c) for c in args.clients.split(",")]:
            results[clients] = asyncio.run(throughput(targets, clients, False, phase, args.rounds))
            print(f"  done: x{clients}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    report(results, [t.name for t in targets])


def report(results: dict[int, dict[str, float]], names: list[str]) -> None:
    print()
    head = f"{'clients':>7} {'direct req/s':>13}"
    for name in names[1:]:
        head += f" | {name + ' req/s (ratio)':>24}"
    print(head)
    print("-" * len(head))
    for clients, thr in results.items():
        line = f"{clients:>7} {thr['direct']:>13.0f}"
        for name in names[1:]:
            line += f" | {thr[name]:>15.0f} ({thr[name] / thr['direct']:.2f})"
        print(line)
    print()
    print("ratio = target req/s / direct req/s at the same concurrency, measured in this run")


if __name__ == "__main__":
    main()
