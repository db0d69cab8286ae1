"""Gateway overhead: direct calls vs calls through `tierwise serve` vs LiteLLM's proxy.

All three talk to the same fake upstream (``python -m tierwise.testing``, zero added latency)
in the OpenAI Chat Completions dialect. For 1, 16 and 64 concurrent clients, non-streamed and
streamed, each client interleaves requests to the three targets (direct, tierwise, LiteLLM) so
they see the same conditions; the added latency of a gateway is its p50/p99 minus the direct
p50/p99 measured in the same run. Throughput is measured in alternating fixed-time phases per
target and given as a ratio to direct.

With ``--baseline GIT_REF`` another tierwise gateway runs from that commit (checked out into a
temporary git worktree, imported through ``PYTHONPATH``), interleaved with the others, so a
change can be compared with what it replaced under the same load. The baseline runs with its
own declared dependencies: a package this tree declares and the baseline's ``pyproject.toml``
did not (``httptools``, say, which uvicorn would otherwise pick up for the old code too) is
hidden from the baseline's process by a ``sitecustomize`` on its ``PYTHONPATH``, so the
comparison is with what that commit shipped. With ``--nowait`` a second tierwise gateway runs
with ``--no-wait-for-ledger`` (answers before its ledger commit is on disk), to show what the
durable commit costs. The gateways run pinned to one core (``taskset -c 1``), the load
generator and the fake upstream to the other (``taskset -c 0``). The tierwise gateway runs as
shipped: the cascade, a durable
SQLite ledger (WAL, synchronous=FULL, group commit), metrics. LiteLLM 1.109.1 is installed by
this script into ``/tmp/litellm-venv`` (never part of CI) and run with ``LITELLM_MASTER_KEY``
and ``LITELLM_LOCAL_MODEL_COST_MAP=True``.

Run: ``.venv/bin/python benchmarks/gateway_overhead.py [--quick] [--no-litellm]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

LITELLM_VERSION = "1.109.1"
LITELLM_VENV = Path("/tmp/litellm-venv")
MASTER_KEY = "sk-bench-master"
UPSTREAM_MODEL = "gpt-4o-mini"
PROMPT = "hello benchmark"


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cores() -> tuple[str, str]:
    """(load generator + upstream core, gateway core)."""
    n = os.cpu_count() or 1
    return ("0", "1") if n >= 2 else ("0", "0")


def taskset(core: str) -> list[str]:
    return ["taskset", "-c", core] if shutil.which("taskset") else []


def wait_http(port: int, path: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> float:
    """Seconds until GET path answers (any status); raises if the process dies or time runs out."""
    start = time.perf_counter()
    deadline = start + timeout_s
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving {path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1.1"):
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port} within {timeout_s} s")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _name(requirement: str) -> str:
    import re

    return re.split(r"[\s<>=!~\[;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared(pyproject: Path) -> set[str]:
    """The names of the runtime dependencies a ``pyproject.toml`` declares."""
    import tomllib

    return {_name(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]}


def installed_closure(names: set[str]) -> set[str]:
    """*names* and everything they require, as installed here (extras' requirements left out)."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo.extend(_name(r) for r in reqs if "extra ==" not in r and "extra==" not in r)
    return seen


def hide_undeclared(tree: Path, into: Path) -> list[str]:
    """Write a ``sitecustomize.py`` into *into* hiding the modules of packages this repository
    declares and *tree* (an older checkout) did not; returns the hidden module names."""
    from importlib.metadata import packages_distributions

    repo = Path(__file__).resolve().parent.parent
    extra = installed_closure(declared(repo / "pyproject.toml")) - installed_closure(
        declared(tree / "pyproject.toml")
    )
    modules = sorted(
        module
        for module, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in extra for d in dists)
    )
    into.mkdir(parents=True, exist_ok=True)
    (into / "sitecustomize.py").write_text(
        "import sys\n"
        f"HIDDEN = {set(modules)!r}\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in HIDDEN:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (not a dependency "
        "of the baseline)', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    return modules


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensure_litellm() -> Path:
    """LiteLLM's proxy at the pinned version in its own venv; installed on first use.

    When the package index lacks a dependency at the exact version LiteLLM pins (this
    machine's mirror lags: ``certifi``, ``litellm-proxy-extras``), LiteLLM is installed without
    dependencies and its ``proxy`` requirements are installed with those pins relaxed.
    """
    exe = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if exe.exists():
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        )
        if out.stdout.strip() == LITELLM_VERSION:
            return exe
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    if subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"]).returncode == 0:
        return exe
    print("  a pinned dependency is missing from the index; relaxing those pins", flush=True)
    subprocess.run([*pip, "--no-deps", f"litellm=={LITELLM_VERSION}", "packaging"], check=True)
    reqs = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m\n"
            "from packaging.requirements import Requirement\n"
            "for r in m.requires('litellm'):\n"
            "    q = Requirement(r)\n"
            "    if q.marker and not q.marker.evaluate({'extra': 'proxy'}): continue\n"
            "    relax = q.name in ('certifi', 'litellm-proxy-extras')\n"
            "    print(q.name if relax else str(q).split(';')[0])\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    subprocess.run([*pip, *reqs], check=True)
    return exe


# -- a minimal HTTP/1.1 client (low overhead, so the load generator stays out of the way) -------


class Connection:
    """One keep-alive HTTP/1.1 connection; reads Content-Length and chunked bodies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def fresh(self, max_idle_s: float = 4.0) -> None:
        """Reconnect (untimed) if idle long enough for the server to drop it (uvicorn: 5 s)."""
        if self.writer is not None and time.perf_counter() - self.last_used > max_idle_s:
            await self.close()
            self.writer = None
        if self.writer is None:
            await self.open()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with suppress(OSError):
                await self.writer.wait_closed()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"content-length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        if "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await self.reader.read()
            await self.close()
            self.writer = None
        if fields.get("connection", "").lower() == "close":
            await self.close()
            self.writer = None
        self.last_used = time.perf_counter()
        return status, data


@dataclass
class Target:
    name: str
    port: int
    path: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, stream: bool) -> bytes:
        data: dict[str, object] = {
            "model": self.model,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if stream:
            data["stream"] = True
        return json.dumps(data).encode()


async def one(conn: Connection, target: Target, body: bytes, stream: bool) -> float:
    await conn.fresh()
    t0 = time.perf_counter()
    status, data = await conn.post(target.path, body, target.headers)
    elapsed = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"{target.name}: HTTP {status}: {data[:300]!r}")
    if stream and b"[DONE]" not in data:
        raise RuntimeError(f"{target.name}: stream without [DONE]: {data[-300:]!r}")
    return elapsed


async def latencies(
    targets: list[Target], clients: int, per_client: int, stream: bool
) -> dict[str, list[float]]:
    """Each client interleaves requests to every target (rotating the order)."""
    out: dict[str, list[float]] = {t.name: [] for t in targets}
    bodies = {t.name: t.body(stream) for t in targets}

    async def client(i: int) -> None:
        conns = {t.name: Connection(t.port) for t in targets}
        try:
            for t in targets:  # warm each connection
                await one(conns[t.name], t, bodies[t.name], stream)
            for n in range(per_client):
                k = (i + n) % len(targets)
                for t in targets[k:] + targets[:k]:
                    out[t.name].append(await one(conns[t.name], t, bodies[t.name], stream))
        finally:
            for c in conns.values():
                await c.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return out


async def throughput(
    targets: list[Target], clients: int, stream: bool, phase_s: float, rounds: int
) -> dict[str, float]:
    """Requests per second per target, in alternating fixed-time phases."""
    done = {t.name: 0 for t in targets}
    spent = {t.name: 0.0 for t in targets}
    for _ in range(rounds):
        for t in targets:
            body = t.body(stream)
            conns = [Connection(t.port) for _ in range(clients)]
            stop_at = time.perf_counter() + phase_s
            counts = [0] * clients

            async def run(
                j: int,
                conn: Connection,
                t: Target = t,
                body: bytes = body,
                stop_at: float = stop_at,
                counts: list[int] = counts,
            ) -> None:
                await one(conn, t, body, stream)  # warm
                while time.perf_counter() < stop_at:
                    await one(conn, t, body, stream)
                    counts[j] += 1

            t0 = time.perf_counter()
            try:
                await asyncio.gather(*(run(j, c) for j, c in enumerate(conns)))
            finally:
                for c in conns:
                    await c.close()
            spent[t.name] += time.perf_counter() - t0
            done[t.name] += sum(counts)
    return {name: done[name] / spent[name] for name in done}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument("--clients", default="1,16,64", help="concurrency levels")
    parser.add_argument(
        "--nowait",
        action="store_true",
        help="also measure `tierwise serve --no-wait-for-ledger` (diagnostic: what the durable "
        "ledger commit costs)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run tierwise as of GIT_REF (e.g. HEAD~3), interleaved, to compare in one run",
    )
    args = parser.parse_args()

    load_core, gw_core = cores()
    os.sched_setaffinity(0, {int(load_core)})
    work = Path(tempfile.mkdtemp(prefix="tierwise-bench-"))
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "sk-fake", "PYTHONUNBUFFERED": "1"}
    up_port, tw_port, ll_port, nw_port = free_port(), free_port(), free_port(), free_port()
    policy = work / "bench.toml"
    policy.write_text(
        f"""version = 1
[[tiers]]
name = "only"
provider = "openai"
model = "{UPSTREAM_MODEL}"
base_url = "http://127.0.0.1:{up_port}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[defaults]
doubt = "cheap"
validators = []

[kinds.bench]
"""
    )
    litellm = None if args.no_litellm else ensure_litellm()
    with ExitStack() as stack:
        upstream = start(
            [*taskset(load_core), sys.executable, "-m", "tierwise.testing", "--port", str(up_port)],
            env,
            work / "upstream.log",
        )
        stack.callback(stop, upstream)
        wait_http(up_port, "/v1/models", 30, upstream)

        def serve(port: int, name: str, *extra: str, src: str | None = None) -> float:
            proc = start(
                [
                    *taskset(gw_core),
                    sys.executable,
                    "-m",
                    "tierwise",
                    "serve",
                    "--policy",
                    str(policy),
                    "--port",
                    str(port),
                    "--ledger",
                    str(work / f"{name}.db"),
                    "--log-level",
                    "warning",
                    *extra,
                ],
                env if src is None else {**env, "PYTHONPATH": src},
                work / f"{name}.log",
            )
            stack.callback(stop, proc)
            return wait_http(port, "/healthz", 30, proc)

        tw_start = serve(tw_port, "tierwise")
        targets = [
            Target("direct", up_port, "/v1/chat/completions", UPSTREAM_MODEL),
            Target("tierwise", tw_port, "/v1/chat/completions", "tierwise/bench"),
        ]
        if args.baseline:
            tree = work / "baseline"
            repo = Path(__file__).resolve().parent.parent
            git = ["git", "-C", str(repo), "worktree"]
            subprocess.run([*git, "add", "--detach", str(tree), args.baseline], check=True)
            stack.callback(subprocess.run, [*git, "remove", "--force", str(tree)], check=False)
            bl_port = free_port()
            hidden = hide_undeclared(tree, work / "baseline-site")
            if hidden:
                print(f"hidden from {args.baseline} (not its dependencies): {', '.join(hidden)}")
            serve(bl_port, "baseline", src=f"{work / 'baseline-site'}{os.pathsep}{tree / 'src'}")
            name = f"tw-{args.baseline}"
            targets.append(Target(name, bl_port, "/v1/chat/completions", "tierwise/bench"))
        if args.nowait:
            serve(nw_port, "nowait", "--no-wait-for-ledger")
            targets.append(Target("tw-nowait", nw_port, "/v1/chat/completions", "tierwise/bench"))
        ll_start = None
        if litellm is not None:
            config = work / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                "  - model_name: bench\n"
                "    litellm_params:\n"
                f"      model: openai/{UPSTREAM_MODEL}\n"
                f"      api_base: http://127.0.0.1:{up_port}/v1\n"
                "      api_key: sk-fake\n"
            )
            ll_env = {
                **env,
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
            }
            proxy = start(
                [*taskset(gw_core), str(litellm), "--config", str(config), "--port", str(ll_port)],
                ll_env,
                work / "litellm.log",
            )
            stack.callback(stop, proxy)
            ll_start = wait_http(ll_port, "/health/liveliness", 120, proxy)
            targets.append(
                Target(
                    "litellm",
                    ll_port,
                    "/v1/chat/completions",
                    "bench",
                    {"authorization": f"Bearer {MASTER_KEY}"},
                )
            )
        print(f"cores: load generator + upstream on {load_core}, gateways on {gw_core}")
        print(f"tierwise serve answered after {tw_start:.2f} s", end="")
        print(f"; litellm after {ll_start:.2f} s" if ll_start is not None else "")
        rows = []
        for stream in (False, True):
            for clients in [int(c) for c in args.clients.split(",")]:
                total = (
                    (300 if args.quick else 2000) if clients == 1 else (600 if args.quick else 3000)
                )
                per_client = max(10, total // clients)
                lat = asyncio.run(latencies(targets, clients, per_client, stream))
                thr = asyncio.run(
                    throughput(targets, clients, stream, 1.0 if args.quick else 3.0, 2)
                )
                rows.append((stream, clients, lat, thr))
                print(f"  done: {'stream' if stream else 'plain '} x{clients}", flush=True)
        report(rows, [t.name for t in targets])
    shutil.rmtree(work, ignore_errors=True)


def report(
    rows: list[tuple[bool, int, dict[str, list[float]], dict[str, float]]], names: list[str]
) -> None:
    ms = 1000.0
    print()
    head = f"{'mode':<6} {'clients':>7} {'direct p50/p99 ms':>18}"
    for name in names[1:]:
        head += f" | {name + ' +p50/+p99 ms':>24} {'thr':>5}"
    if "litellm" in names:
        head += " | litellm/tierwise added p50, p99"
    print(head)
    print("-" * len(head))
    verdicts = []
    for stream, clients, lat, thr in rows:
        d50, d99 = pct(lat["direct"], 50), pct(lat["direct"], 99)
        line = (
            f"{'stream' if stream else 'plain':<6} {clients:>7} {d50 * ms:>8.2f} / {d99 * ms:>7.2f}"
        )
        added = {}
        for name in names[1:]:
            a50 = pct(lat[name], 50) - d50
            a99 = pct(lat[name], 99) - d99
            added[name] = (a50, a99)
            ratio = thr[name] / thr["direct"]
            line += f" | {a50 * ms:>10.2f} / {a99 * ms:>9.2f} {ratio:>5.2f}"
        if "litellm" in added:
            t50, t99 = added["tierwise"]
            l50, l99 = added["litellm"]
            r50 = l50 / t50 if t50 > 0 else float("inf")
            r99 = l99 / t99 if t99 > 0 else float("inf")
            line += f" | {r50:>8.1f}x {r99:>8.1f}x"
        print(line)
        t50, t99 = added["tierwise"]
        if clients == 1:
            for name in [n for n in names[1:] if n.startswith("tw-")]:
                n50, n99 = added[name]
                verdicts.append(
                    f"{'stream' if stream else 'plain'} x1 ({name}, diagnostic): added p50 "
                    f"{n50 * ms:.2f} ms, p99 {n99 * ms:.2f} ms"
                )
            verdicts.append(
                f"{'stream' if stream else 'plain'} x1: added p50 {t50 * ms:.2f} ms "
                f"({'met' if t50 <= 0.001 else 'NOT met'}, target <= 1 ms), added p99 "
                f"{t99 * ms:.2f} ms ({'met' if t99 <= 0.005 else 'NOT met'}, target <= 5 ms)"
            )
        if clients != 1 and "litellm" in added:
            l50 = added["litellm"][0]
            factor = l50 / t50 if t50 > 0 else float("inf")
            verdicts.append(
                f"{'stream' if stream else 'plain'} x{clients}: LiteLLM adds {factor:.1f}x "
                f"tierwise's p50 ({'met' if factor >= 3 else 'NOT met'}, target >= 3x)"
            )
    print()
    print("throughput ratio (thr) = target req/s / direct req/s at the same concurrency")
    print(f"direct requests per config: p50 over {len(rows[0][2]['direct'])}+ samples")
    for v in verdicts:
        print(" ", v)


if __name__ == "__main__":
    main()
