"""Several `tierwise serve` processes on one PostgreSQL ledger, as a team behind a load balancer
runs them: one budget holds across all of them, a replica killed mid-request leaves no budget
held past the reservation TTL, a revoked key stops working on every replica within seconds,
and a database stop and restart under load loses no acknowledged request.

Each replica is a real process (``python -m tierwise serve``) reached over loopback through the
official SDK; the upstream is the fake one, honest about usage. Four replicas start once for the
module (the slow part: about a second of CPU each).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import sqlalchemy as sa

from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.spool import scan
from tierwise.testing import FakeUpstream, Fault, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text
from tierwise.testing.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

_TTL_S = 10
_KIND_LIMIT = Decimal("0.0020")
# A request costs about $0.00015 and reserves about $0.0009 (its whole climb): the key's limit
# admits about nine at once, so both kinds get in whatever order the 64 arrive in, and it is
# below what all 64 would cost, so some are always refused.
_KEY_LIMIT = Decimal("0.0080")
_POLICY_EXTRA = f"""
[defaults]
doubt = "cheap"
validators = []

[kinds.burst]
budget_usd_day = {_KIND_LIMIT}

[kinds.calm]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One ``tierwise serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _spawn(policy: Path, ledger_url: str, spool: Path, folder: Path) -> Replica:
    port = _free_port()
    log = folder / f"replica-{port}.log"
    env = {
        **os.environ,
        TEST_KEY_ENV: "test",
        "TIERWISE_LEDGER": ledger_url,  # not on the command line: it holds a password
        "TIERWISE_SPOOL_DIR": str(spool),
    }
    cmd = [sys.executable, "-m", "tierwise", "serve", "--policy", str(policy)]
    cmd += ["--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(process, port, log)


def _wait_ready(replicas: list[Replica], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for replica in replicas:
        while True:
            assert replica.process.poll() is None, replica.output()
            try:
                if httpx2.get(f"{replica.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, f"replica did not start:\n{replica.output()}"
            time.sleep(0.05)


def _stop(replicas: list[Replica]) -> None:
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            replica.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()


@dataclass
class Fleet:
    """Four replicas on one ledger, the key they require, and where they spool."""

    replicas: list[Replica]
    url: str
    secret: str
    key_id: str
    spool: Path
    policy: Path


@pytest.fixture(scope="module")
def fleet(
    postgres_databases: Callable[[], str],
    fake_upstream_server: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("replicas")
    url = postgres_databases()
    with open_ledger(url) as book:  # migrated once, before the replicas start together
        secret = book.create_api_key("fleet", budget_usd_day=_KEY_LIMIT)
        key_id = book.list_api_keys()[0].id
    policy = folder / "tierwise.toml"
    policy.write_text(upstream_policy_text(fake_upstream_server, extra=_POLICY_EXTRA))
    spool = folder / "spool"
    # A short reservation TTL, so that the kill test need not wait 15 minutes; long enough that
    # no live request's reservation outlives it on this loaded machine.
    with_ttl = f"{url}?reservation_ttl={_TTL_S}"
    replicas = [_spawn(policy, with_ttl, spool, folder) for _ in range(4)]
    try:
        _wait_ready(replicas)
        yield Fleet(replicas, url, secret, key_id, spool, policy)
    finally:
        _stop(replicas)
    for replica in replicas:  # uvicorn re-raises SIGTERM once it has shut down gracefully
        assert replica.process.returncode in (0, -signal.SIGTERM), replica.output()


def _ask(base: str, secret: str, kind: str, prompt: str, *, timeout: float = 60) -> Any:
    with anthropic.Anthropic(
        base_url=base, api_key=secret, max_retries=0, timeout=timeout
    ) as client:
        return client.messages.with_raw_response.create(
            model=f"tierwise/{kind}",
            max_tokens=20,
            messages=[{"role": "user", "content": prompt}],
        )


def _scopes(book: Ledger, prefix: str) -> list[str]:
    with book.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT scope FROM budget_counters").all()
    return [r[0] for r in rows if r[0].startswith(prefix)]


def test_four_replicas_never_overshoot_one_key_and_one_kind_budget(
    fleet: Fleet, fake_upstream: FakeUpstream
) -> None:
    """64 requests at once, spread over the replicas: half of kind ``burst`` (a kind budget),
    all under one key budget. The budgets admit some and refuse others; what was admitted is
    exactly what was spent, within both limits, and every answered request is in the ledger
    at the cost its caller was told."""
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(latency_s=0.05))
    start = threading.Barrier(64)

    def one(i: int) -> tuple[str, str | None, Decimal, str]:
        kind = "burst" if i % 2 else "calm"
        replica = fleet.replicas[i % len(fleet.replicas)]
        start.wait()
        try:
            raw = _ask(replica.base, fleet.secret, kind, f"request {i:02d} " + "x" * 200)
        except anthropic.RateLimitError as exc:
            assert "budget" in str(exc)
            return "refused", exc.response.headers.get("x-tierwise-task-id"), Decimal(0), kind
        headers = raw.headers
        cost = Decimal(headers["x-tierwise-cost-usd"])
        return "ok", headers["x-tierwise-task-id"], cost, kind

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(64)))
    answered = [r for r in results if r[0] == "ok"]
    assert 0 < len(answered) < 64, "the budgets should admit some requests and refuse others"
    assert any(r[3] == "burst" for r in answered) and any(r[3] == "calm" for r in answered)
    with open_ledger(fleet.url) as book:
        for _, task_id, cost, _ in answered:  # every acknowledged request, at its told cost
            assert task_id is not None
            task = book.task(task_id)
            assert task is not None and task["outcome"] == "accepted"
            assert task["cost_usd"] == cost
        (key_scope,) = _scopes(book, f"key-day:{fleet.key_id}:")
        (kind_scope,) = _scopes(book, "kind-day:burst:")
        key, kind = book.budget(key_scope), book.budget(kind_scope)
        assert key is not None and kind is not None
        assert key.held_usd == 0 and kind.held_usd == 0
        assert key.spent_usd == sum((r[2] for r in answered), Decimal(0)) <= _KEY_LIMIT
        burst = sum((r[2] for r in answered if r[3] == "burst"), Decimal(0))
        assert kind.spent_usd == burst <= _KIND_LIMIT
        assert book.integrity_check() == []


def test_a_revoked_key_stops_working_on_every_replica_within_seconds(fleet: Fleet) -> None:
    with open_ledger(fleet.url) as book:
        secret = book.create_api_key(f"short-lived-{uuid.uuid4().hex[:6]}")
        name = book.list_api_keys()[-1].name
    for replica in fleet.replicas:  # each replica has the key cached as valid
        assert _ask(replica.base, secret, "calm", "hi").status_code == 200
    with open_ledger(fleet.url) as book:  # another host's CLI, say
        assert book.revoke_api_key(name)
    revoked_at = time.monotonic()
    pending = set(range(len(fleet.replicas)))
    while pending:
        for i in sorted(pending):
            try:
                _ask(fleet.replicas[i].base, secret, "calm", "still there?")
            except anthropic.AuthenticationError as exc:
                assert "revoked" in str(exc)
                pending.discard(i)
        # a few seconds: each replica trusts a verified key for key_cache_s (2 s by default);
        # the rest is slack for this loaded machine
        assert time.monotonic() - revoked_at < 6, f"replicas {pending} still accept the key"
        time.sleep(0.1)


def test_a_database_stop_and_restart_under_load_loses_no_acknowledged_request(
    fleet: Fleet, fake_upstream: FakeUpstream, postgres_cluster: PostgresCluster
) -> None:
    """Load on all four replicas while the server stops for two seconds and comes back.

    Requests that had not called upstream when the database went get 503 and reached no model;
    calls already under way are answered and their rows spooled; after the restart every
    answered request is in the ledger, with its budget settlement.
    """
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(latency_s=0.3))
    with open_ledger(fleet.url) as book:  # the fleet's own key spent its budget above
        secret = book.create_api_key(f"outage-{uuid.uuid4().hex[:6]}", budget_usd_day=Decimal(1))
        key_id = book.list_api_keys()[-1].id
    stop = threading.Event()
    results: list[tuple[int, str, str | None, Decimal]] = []
    unexpected: list[str] = []
    lock = threading.Lock()
    counter = iter(range(1_000_000))

    def load(replica: Replica) -> None:
        while not stop.is_set():
            with lock:
                i = next(counter)
            prompt = f"outage {i:06d}"
            try:
                raw = _ask(replica.base, secret, "calm", prompt, timeout=30)
                entry = (
                    i,
                    "ok",
                    raw.headers["x-tierwise-task-id"],
                    Decimal(raw.headers["x-tierwise-cost-usd"]),
                )
            except anthropic.APIStatusError as exc:
                entry = (
                    i,
                    str(exc.status_code),
                    exc.response.headers.get("x-tierwise-task-id"),
                    Decimal(0),
                )
                if exc.status_code != 503:
                    with lock:
                        unexpected.append(f"{exc.status_code}: {exc.response.text}")
            with lock:
                results.append(entry)

    threads = [threading.Thread(target=load, args=(r,)) for r in fleet.replicas for _ in range(3)]
    spooled_during = 0
    for t in threads:
        t.start()
    try:
        time.sleep(0.8)
        postgres_cluster.stop()
        try:
            time.sleep(2.0)
            spooled_during = sum(f.tasks for f in scan(fleet.spool) if not f.rejected)
        finally:
            postgres_cluster.start()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    statuses = {status for _, status, _, _ in results}
    assert statuses <= {"ok", "503"}, unexpected[:3]
    answered = [r for r in results if r[1] == "ok"]
    refused = [r for r in results if r[1] == "503"]
    assert refused, "some requests should have met the database down"
    assert spooled_during > 0, "calls under way when it stopped should have been spooled"
    seen = {str(r.body) for r in fake_upstream.requests}
    for i, _, _, _ in refused:  # refused before the call: no model saw them, nothing charged
        assert f"outage {i:06d}" not in "".join(seen)
    deadline = time.monotonic() + 20  # the replicas replay their spools by themselves
    while sum(f.tasks for f in scan(fleet.spool)) > 0:
        assert time.monotonic() < deadline, scan(fleet.spool)
        time.sleep(0.2)
    with open_ledger(fleet.url) as book:
        for _, _, task_id, cost in answered:
            assert task_id is not None
            task = book.task(task_id)
            assert task is not None, f"acknowledged task {task_id} is missing from the ledger"
            assert task["outcome"] == "accepted" and task["cost_usd"] == cost
        assert book.integrity_check() == []
        (key_scope,) = _scopes(book, f"key-day:{key_id}:")
        key = book.budget(key_scope)
        assert key is not None and key.held_usd == 0  # every settlement made it, spooled or not
        assert key.spent_usd == sum((r[3] for r in answered), Decimal(0))
    for replica in fleet.replicas:
        assert httpx2.get(f"{replica.base}/healthz").json() == {"status": "ok"}


def test_a_replica_killed_mid_request_leaves_no_reservation_held_past_its_ttl(
    fleet: Fleet, fake_upstream: FakeUpstream
) -> None:
    """SIGKILL while a budgeted call is under way: the reservation it held is released by the
    other replicas' timers once the TTL has passed, with no request needed."""
    with open_ledger(fleet.url) as book:
        secret = book.create_api_key(f"killed-{uuid.uuid4().hex[:6]}", budget_usd_day=Decimal(1))
        key_id = book.list_api_keys()[-1].id
    victim = fleet.replicas.pop()  # the others serve on
    engine = sa.create_engine(fleet.url, poolclass=sa.NullPool)

    def reservations() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT state, created_at FROM reservations WHERE scopes_json LIKE :s"),
                {"s": f"%key-day:{key_id}:%"},
            ).all()
        return [tuple(r) for r in rows]

    try:
        fake_upstream.set_script("claude-haiku-4-5", ModelScript(faults=(Fault("hang"),)))
        asking = threading.Thread(
            target=_ignore_errors(lambda: _ask(victim.base, secret, "calm", "slow", timeout=40)),
            daemon=True,
        )
        asking.start()
        deadline = time.monotonic() + 15
        while not reservations():
            assert time.monotonic() < deadline, "no reservation was made"
            time.sleep(0.05)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        killed_at = time.monotonic()
        while any(state == "held" for state, _ in reservations()):
            # the TTL + the survivors' sweep period (a tenth of the TTL, at least 1 s) + a tick
            assert time.monotonic() - killed_at < _TTL_S + 5, reservations()
            time.sleep(0.2)
        assert [state for state, _ in reservations()] == ["expired"]
        with open_ledger(fleet.url) as book:
            (scope,) = _scopes(book, f"key-day:{key_id}:")
            state = book.budget(scope)
            assert state is not None and state.held_usd == 0 and state.spent_usd == 0
            assert book.stats()["held"]["expired"] == 0  # nothing held past its TTL anywhere
    finally:
        engine.dispose()


def _ignore_errors(call: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except Exception:  # the replica was killed under it
            return

    return run
