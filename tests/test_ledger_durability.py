"""What a caller has seen is committed: a process killed with SIGKILL mid-run loses nothing it
reported, and the ledger it leaves behind opens and passes the integrity check — a SQLite file,
or a PostgreSQL database whose server outlives its client."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from tierwise.ledger import open_ledger

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

# The child runs tasks through the real Cascade, the real Anthropic SDK and the fake upstream
# over loopback. The cheap model fails the schema on "odd" tasks, so half of them escalate; a
# kind-day budget makes every attempt reserve and settle spend in the ledger. Each ledger write
# is reported on stdout only once the Ledger says it is committed: when the call returns, or for
# writes the cascade groups in ``Ledger.batch()``, when the batch exits.
_CHILD = textwrap.dedent(
    """
    import json, sys
    from contextlib import contextmanager
    from tierwise.cascade import Cascade
    from tierwise.ledger import open_ledger
    from tierwise.policy import loads_policy
    from tierwise.task import Task
    from tierwise.testing import FakeUpstream, ModelScript

    path = sys.argv[1]

    def cheap(body):
        text = " ".join(str(m.get("content")) for m in body.get("messages", []))
        return '{"total": "many"}' if "odd" in text else '{"total": 12}'

    models = {
        "claude-haiku-4-5": ModelScript(reply=cheap),
        "claude-sonnet-4-6": ModelScript(reply='{"total": 12.5}'),
        "claude-opus-4-6": ModelScript(reply='{"total": 13}'),
    }
    with FakeUpstream(models, default=None) as up:
        tiers = "".join(
            f'''
    [[tiers]]
    name = "{name}"
    provider = "anthropic"
    model = "{model}"
    base_url = "{up.base_url}"
    api_key_env = "TW_KILL_KEY"
    '''
            for name, model in zip(("cheap", "mid", "strong"), models)
        )
        policy = loads_policy(
            "version = 1\\n" + tiers + '''
    [retry]
    attempts = 1
    [budgets]
    kind_day_usd = 1000
    [validators.invoice]
    type = "json_schema"
    schema = { type = "object", required = ["total"], properties = { total = { type = "number" } } }
    [[rules]]
    when = { kind = "extract" }
    tier = "cheap"
    [kinds.extract]
    validators = ["invoice"]
    '''
        )
        ledger = open_ledger(path)
        record_attempt, finish_task, batch = ledger.record_attempt, ledger.finish_task, ledger.batch
        pending, depth = [], [0]

        def report(event):
            # Outside a batch a write is committed when its call returns; inside one, when the
            # outermost batch exits normally. Report only then.
            if depth[0]:
                pending.append(event)
            else:
                print(json.dumps(event), flush=True)

        @contextmanager
        def reported_batch():
            depth[0] += 1
            ok = False
            try:
                with batch():
                    yield
                ok = True
            finally:
                depth[0] -= 1
                if not depth[0]:
                    events = pending[:] if ok else []
                    pending.clear()
                    for event in events:
                        report(event)

        def reported_attempt(attempt, **kw):
            row_id = record_attempt(attempt, **kw)
            report(["attempt", row_id, attempt.task_id, attempt.attempt_no, attempt.outcome,
                    str(attempt.cost_usd)])
            return row_id

        def reported_finish(task_id, **kw):
            finish_task(task_id, **kw)
            report(["finish", task_id, kw["outcome"], str(kw["cost_usd"])])

        ledger.record_attempt = reported_attempt
        ledger.finish_task = reported_finish
        ledger.batch = reported_batch
        cascade = Cascade(policy, ledger=ledger, env={"TW_KILL_KEY": "sk-kill-test-key-000"})
        print(json.dumps(["ready"]), flush=True)
        i = 0
        while True:  # until killed
            parity = "odd" if i % 2 else "even"
            cascade.run(Task.create("extract", f"Invoice {i} ({parity}): total 12 EUR"))
            i += 1
    """
)


def test_sigkill_mid_run_loses_no_reported_attempt(ledger_url: str) -> None:
    import json

    path = ledger_url
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    attempts: dict[tuple[str, int], tuple[int, str, str]] = {}
    finished: dict[str, tuple[str, str]] = {}
    stop_after = random.Random().randint(40, 160)  # a different kill point every run
    seen = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            event = json.loads(line)
            if event[0] == "attempt":
                _, row_id, task_id, attempt_no, outcome, cost = event
                attempts[(task_id, attempt_no)] = (row_id, outcome, cost)
                seen += 1
                if seen >= stop_after:
                    break
            elif event[0] == "finish":
                finished[event[1]] = (event[2], event[3])
        else:
            pytest.fail(f"child ended early: {child.wait()} {child.stderr and child.stderr.read()}")
        os.kill(child.pid, signal.SIGKILL)
        # Reports written before the kill landed are still in the pipe: they count too.
        for line in child.stdout:
            event = json.loads(line)
            if event[0] == "attempt":
                _, row_id, task_id, attempt_no, outcome, cost = event
                attempts[(task_id, attempt_no)] = (row_id, outcome, cost)
            elif event[0] == "finish":
                finished[event[1]] = (event[2], event[3])
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    with open_ledger(path, create=False) as book:
        assert book.integrity_check() == []
        rows = {(a["task_id"], a["attempt_no"]): a for a in book.iter_attempts()}
        for key, (row_id, outcome, cost) in attempts.items():
            assert key in rows, f"reported attempt {key} is missing after SIGKILL"
            assert rows[key]["id"] == row_id
            assert rows[key]["outcome"] == outcome
            assert rows[key]["cost_usd"] == Decimal(cost)
        for task_id, (outcome, cost) in finished.items():
            task = book.task(task_id)
            assert task is not None and task["outcome"] == outcome
            assert task["cost_usd"] == Decimal(cost)
        # the run really exercised escalation: rejected cheap attempts were recorded
        assert any(outcome == "rejected" for _, outcome, _ in attempts.values())
        assert len(finished) >= 10
