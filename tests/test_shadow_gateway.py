"""Shadow mode through the gateway: official SDK → tierwise serve → the fake upstream → ledger.

One kind with a shadow share of 1.0: every task is also sent to every tier it did not try,
after the caller has received its last byte, paid from the shadow budget; then the ledger is
exported and evaluated like a benchmark.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.testing import FakeUpstream, ModelScript, timed_post
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text
from tierwise.testing.script import last_user_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
LADDER = ("cheap", "mid", "strong")
N = 200
_NUMBER = re.compile(r"#(\d+)")

KIND = """
[kinds.extract]
doubt = "cheap"
validators = [{ type = "json" }]
shadow = 1.0

# Every task is to be shadowed: on a loaded machine a shadow run can outlast the next request,
# and the default limit of 4 runs at once would skip some as busy (tested on its own elsewhere).
[shadow]
max_in_flight = 256
"""


def _stored(text: str) -> str:
    """The policy with ``store_content = true`` (a top-level key: before the first table)."""
    return text.replace("version = 1", "version = 1\nstore_content = true", 1)


def _number(request: dict[str, Any]) -> int:
    found = _NUMBER.search(last_user_text(request))
    return int(found.group(1)) if found else 0


def cheap(request: dict[str, Any]) -> str:
    """Every fifth invoice gets prose (the json validator rejects it: the task climbs)."""
    i = _number(request)
    return f"the total is {i}" if i % 5 == 0 else json.dumps({"total": i})


def mid(request: dict[str, Any]) -> str:
    return json.dumps({"total": _number(request)})


def strong(request: dict[str, Any]) -> str:
    """Disagrees with the others on every seventh invoice."""
    i = _number(request)
    return json.dumps({"total": i + 1 if i % 7 == 0 else i})


def _scripts() -> dict[str, ModelScript]:
    return {
        CHEAP: ModelScript(reply=cheap),
        MID: ModelScript(reply=mid),
        STRONG: ModelScript(reply=strong),
    }


@dataclass
class Fleet:
    """The 200 requests' outcome: the ledger, the fake upstream's log, what each caller saw."""

    db: Path
    policy_file: Path
    up: FakeUpstream
    metrics: str
    status: dict[str, Any]
    key_id: int
    #: prompt number → (task id, monotonic time the caller had the last byte, cost header)
    seen: dict[int, tuple[str, float, Decimal]] = field(default_factory=dict)


def _ask(base: str, secret: str, i: int) -> tuple[str, float, Decimal, str]:
    """Invoice #i through the gateway; every fourth streamed. The answer's text and timing."""
    stream = i % 4 == 0
    request = {
        "model": "tierwise/extract",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"Extract the total of invoice #{i}"}],
        "stream": stream,
    }
    headers = {
        "x-api-key": secret,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    reply = timed_post(base, "/v1/messages", json.dumps(request).encode(), headers)
    assert reply.status == 200, reply
    assert reply.kernel_stamped  # the receipt time is the kernel's, not this thread's read
    text = reply.body.decode()
    if stream:
        answer = "".join(
            json.loads(line[6:])["delta"].get("text", "")
            for line in text.splitlines()
            if line.startswith("data: ") and '"content_block_delta"' in line
        )
    else:
        answer = "".join(b["text"] for b in json.loads(text)["content"])
    h = reply.headers
    return h["x-tierwise-task-id"], reply.last_byte_at, Decimal(h["x-tierwise-cost-usd"]), answer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("shadow-fleet")
    db = tmp / "ledger.db"
    with FakeUpstream(_scripts()) as up:
        text = _stored(upstream_policy_text(up, extra=KIND + "\n[budgets]\nshadow_day_usd = 5\n"))
        policy_file = tmp / "tierwise.toml"
        policy_file.write_text(text, encoding="utf-8")
        with open_ledger(db) as book:
            secret = book.create_api_key("agent", budget_usd_day=Decimal(5))
            key_id = next(k.id for k in book.list_api_keys() if k.name == "agent")
            admin = book.create_api_key("ops", role="admin")
        config = GatewayConfig(
            policy=loads_policy(text), ledger_url=str(db), env={TEST_KEY_ENV: "k"}
        )
        seen: dict[int, tuple[str, float, Decimal]] = {}
        with GatewayServer(config) as gateway:
            for i in range(1, N + 1):
                task_id, done, cost, answer = _ask(gateway.base_url, secret, i)
                assert json.loads(answer)["total"] == i  # the live answer, untouched
                seen[i] = (task_id, done, cost)
            auth = {"authorization": f"Bearer {admin}"}
            metrics = _wait_for_shadows(gateway.base_url, auth)
            status = httpx2.get(
                f"{gateway.base_url}/v1/tierwise/admin/status", headers=auth, timeout=5
            ).json()
        yield Fleet(db, policy_file, up, metrics, status, key_id, seen)


def _wait_for_shadows(base: str, headers: dict[str, str]) -> str:
    """/metrics once every request's shadow run has finished (they run after the answers)."""
    deadline = time.monotonic() + 60
    while True:
        text = httpx2.get(f"{base}/metrics", headers=headers, timeout=5).text
        runs = sum(
            float(m.group(1))
            for m in re.finditer(r"^tierwise_shadow_runs_total\{[^}]*\} (\S+)$", text, re.M)
        )
        if runs >= N or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _attempts(db: Path) -> dict[str, list[dict[str, Any]]]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    with open_ledger(db) as book:
        for a in book.iter_attempts():
            by_task.setdefault(a["task_id"], []).append(a)
    return by_task


def test_every_task_leaves_one_shadow_attempt_per_untried_tier(fleet: Fleet) -> None:
    by_task = _attempts(fleet.db)
    assert len(by_task) == N
    climbed = 0
    for i, (task_id, _, _) in fleet.seen.items():
        rows = by_task[task_id]
        live = [a["tier"] for a in rows if a["role"] == "live"]
        shadow = Counter(a["tier"] for a in rows if a["role"] == "shadow")
        assert live == (["cheap", "mid"] if i % 5 == 0 else ["cheap"])
        untried = [t for t in LADDER if t not in live]
        assert shadow == Counter(untried), (i, live, shadow)
        # numbered after the live attempts, never between them
        assert [a["attempt_no"] for a in rows] == list(range(len(rows)))
        climbed += len(live) > 1
    assert climbed == N // 5


def test_no_shadow_request_reaches_the_upstream_before_the_caller_has_its_last_byte(
    fleet: Fleet,
) -> None:
    by_task = _attempts(fleet.db)
    arrivals: dict[tuple[int, str], list[float]] = {}
    for r in fleet.up.requests:
        if isinstance(r.body, dict) and r.model is not None:
            arrivals.setdefault((_number(r.body), r.model), []).append(r.at)
    checked = 0
    for i, (task_id, done, _) in fleet.seen.items():
        for a in by_task[task_id]:
            at = arrivals[(i, a["model"])]
            assert len(at) == 1  # one request per model per task: live or shadow, not both
            if a["role"] == "shadow":
                assert at[0] > done, f"shadow call to {a['model']} for #{i} before the answer"
                checked += 1
            else:
                assert at[0] < done
    assert checked == 2 * N - N // 5  # two untried tiers, one for the tasks that climbed


def test_the_shadow_request_is_the_callers_request(fleet: Fleet) -> None:
    """Same body as the live call but the model: here system-less; tools are checked below."""
    live = [r for r in fleet.up.requests if r.model == CHEAP and _number(r.body) == 1]
    shadow = [r for r in fleet.up.requests if r.model == MID and _number(r.body) == 1]
    assert len(live) == len(shadow) == 1
    assert {**live[0].body, "model": MID} == shadow[0].body


def test_shadow_spend_is_its_own_line_never_the_callers(fleet: Fleet) -> None:
    by_task = _attempts(fleet.db)
    live_cost = sum(
        (Decimal(a["cost_usd"]) for rows in by_task.values() for a in rows if a["role"] == "live"),
        Decimal(0),
    )
    shadow_cost = sum(
        (
            Decimal(a["cost_usd"])
            for rows in by_task.values()
            for a in rows
            if a["role"] == "shadow"
        ),
        Decimal(0),
    )
    assert shadow_cost > 0
    # what each caller was told it cost is what its task cost: live attempts only
    with open_ledger(fleet.db) as book:
        for task_id, _, header_cost in fleet.seen.values():
            task = book.task(task_id)
            assert task is not None and task["cost_usd"] == header_cost
            own = [a for a in by_task[task_id] if a["role"] == "live"]
            assert header_cost == sum((Decimal(a["cost_usd"]) for a in own), Decimal(0))
        today = datetime.now(UTC).date().isoformat()
        key = book.budget(f"key-day:{fleet.key_id}:{today}")
        kind = book.budget(f"kind-day:extract:{today}")
        shadow = book.budget(f"shadow-day:{today}")
        stats = book.stats()
    assert key is not None and key.spent_usd == live_cost  # the key paid for its own calls
    assert kind is None or kind.spent_usd == live_cost
    assert shadow is not None and shadow.spent_usd == shadow_cost
    assert stats["spend_usd"] == live_cost
    assert stats["shadow"]["spend_usd"] == shadow_cost
    assert stats["shadow"]["attempts"] == 2 * N - N // 5
    # escalation: a fifth of the tasks climbed; shadow calls are no climb
    assert stats["escalated_tasks"] == N // 5
    assert "strong" not in stats["by_tier"]  # no live task reached it
    result = CliRunner().invoke(build_app(), ["ledger", "stats", "-l", str(fleet.db)])
    assert result.exit_code == 0, result.output
    assert f"shadow calls (shadow budget; in none of the figures above): {2 * N - N // 5}" in (
        result.output
    )


def test_metrics_and_status_show_shadowing(fleet: Fleet) -> None:
    assert f'tierwise_shadow_runs_total{{kind="extract",status="done"}} {N:.1f}' in fleet.metrics
    assert "tierwise_shadow_paused 0.0" in fleet.metrics
    assert re.search(
        r'^tierwise_shadow_cost_usd_total\{kind="extract",tier="strong"\} ', fleet.metrics, re.M
    )
    # the request counters and spend do not count shadow calls
    assert 'tierwise_gateway_cost_usd_total{kind="extract",tier="strong"}' not in fleet.metrics
    assert fleet.status["shadow"]["paused"] is False
    assert fleet.status["shadow"]["day_budget_usd"] == "5"


def test_agreement_per_tier_pair_with_intervals(fleet: Fleet) -> None:
    result = CliRunner().invoke(build_app(), ["ledger", "agreement", "-l", str(fleet.db), "--json"])
    assert result.exit_code == 0, result.output
    pairs = {(p["low_tier"], p["high_tier"]): p for p in json.loads(result.output)["pairs"]}
    assert set(pairs) == {("cheap", "mid"), ("cheap", "strong"), ("mid", "strong")}
    sevens = N // 7
    # cheap vs mid: every task has both; cheap's prose (every fifth) disagrees and fails
    cm = pairs[("cheap", "mid")]
    assert cm["pairs"] == N and cm["methods"] == {"json": N}
    assert cm["agree"]["count"] == N - N // 5
    assert cm["both_passed"]["count"] == N - N // 5
    assert cm["decided"] == N // 5 and cm["high_right"]["count"] == N // 5
    assert cm["agree"]["low"] < cm["agree"]["rate"] < cm["agree"]["high"]
    # mid vs strong: strong is off by one on every seventh invoice; both pass the json check
    ms = pairs[("mid", "strong")]
    assert ms["pairs"] == N
    assert ms["agree"]["count"] == N - sevens
    assert ms["both_passed"]["count"] == N and ms["decided"] == 0


def test_export_then_eval_reports_every_strategy(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "logs" / "fleet.jsonl"
    runner = CliRunner()
    exported = runner.invoke(
        build_app(),
        ["ledger", "export", "-l", str(fleet.db), "-o", str(out), "-p", str(fleet.policy_file)],
    )
    assert exported.exit_code == 0, exported.output
    assert f"exported {N} task(s): {N} with prompt text, {N} answered by every tier's" in (
        exported.output
    )
    evaluated = runner.invoke(
        build_app(), ["eval", str(out.parent), "--json", "--folds", "2", "--progress-every", "0"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output[evaluated.output.index("{") :])
    names = {s["name"] for s in report["strategies"]}
    assert names == {
        CHEAP,
        MID,
        STRONG,
        "current policy (as served)",
        "cascade: checks",
        "cascade: learned verifier",
        "learned router",
        "learned router + cascade",
        "oracle (bound)",
        "perfect-verifier cascade (bound)",
    }
    served = next(s for s in report["strategies"] if s["name"] == "current policy (as served)")
    assert served["quality"] == 1.0  # every delivered answer passed, none was flagged
    assert served["escalation_rate"] == pytest.approx(0.2)


# -- the learned router and verifier, live -------------------------------------------------------


@pytest.fixture(scope="module")
def saved(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The fleet's traffic exported, and the router and verifier `tierwise eval` trains on it
    and saves (trained on every row: the live test asks the same prompts again)."""
    tmp = tmp_path_factory.mktemp("saved")
    out = tmp / "logs" / "fleet.jsonl"
    runner = CliRunner()
    args = ["ledger", "export", "-l", str(fleet.db), "-o", str(out), "-p", str(fleet.policy_file)]
    assert runner.invoke(build_app(), args).exit_code == 0
    router = tmp / "router.json"
    trained = runner.invoke(
        build_app(),
        ["eval", str(out.parent), "--folds", "2", "--save-router", str(router), "--json"],
    )
    assert trained.exit_code == 0, trained.output
    return out.parent, router


def _decisions(db: Path, key: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Per row, the (tier, outcome) of each answer attempt, in order; *key* maps task → row."""
    out: dict[str, list[tuple[str, str]]] = {}
    with open_ledger(db) as book:
        for a in book.iter_attempts():
            row = key.get(a["task_id"])
            if row is not None and a["role"] in ("live", "replay"):
                out.setdefault(row, []).append((a["tier"], a["outcome"]))
    return out


def test_a_saved_verifier_decides_live_as_it_did_in_eval(
    fleet: Fleet, saved: tuple[Path, Path], tmp_path: Path
) -> None:
    logs, router = saved
    # tierwise eval with the saved models, its replay ledger kept: the verifier cascade's rows
    replay = tmp_path / "replay.db"
    evaluated = CliRunner().invoke(
        build_app(),
        ["eval", str(logs), "--router", str(router), "--ledger", str(replay), "--json"],
    )
    assert evaluated.exit_code == 0, evaluated.output
    with open_ledger(replay) as book:
        ids = [a["task_id"] for a in book.iter_attempts()]
    by_row = {t: t.split("@")[0] for t in ids if t.split("@")[1] == "cascade--learned-verifier"}
    in_eval = _decisions(replay, by_row)
    # the same verifier live: a policy whose only check is the `learned` validator
    text = upstream_policy_text(
        fleet.up,
        extra=f"""
[learned]
path = "{router}"
[kinds.extract]
doubt = "cheap"
validators = [{{ type = "learned" }}]
""",
    )
    db = tmp_path / "live.db"
    config = GatewayConfig(policy=loads_policy(text), ledger_url=str(db), env={TEST_KEY_ENV: "k"})
    task_of_row: dict[str, str] = {}
    with GatewayServer(config) as gateway:
        for i, (row, _, _) in fleet.seen.items():
            headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
            body = {
                "model": "tierwise/extract",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Extract the total of invoice #{i}"}],
            }
            reply = timed_post(gateway.base_url, "/v1/messages", json.dumps(body).encode(), headers)
            assert reply.status == 200, reply
            task_of_row[reply.headers["x-tierwise-task-id"]] = row
    live = _decisions(db, task_of_row)
    assert set(live) == set(in_eval) == {row for row, _, _ in fleet.seen.values()}
    for row, decisions in live.items():
        assert decisions == in_eval[row], row
    outcomes = Counter(o for d in live.values() for _, o in d)
    assert outcomes["rejected"] > 0 and outcomes["accepted"] > 0  # it escalated and accepted


def test_start_learned_routes_where_the_saved_router_proposes(
    fleet: Fleet, saved: tuple[Path, Path], tmp_path: Path
) -> None:
    from tierwise.evaluation.learned import LearnedRouter
    from tierwise.task import Task

    _, router_file = saved
    router = LearnedRouter.load(router_file)
    text = upstream_policy_text(
        fleet.up,
        extra=f'\n[learned]\npath = "{router_file}"\n[kinds.extract]\nstart = "learned"\n',
    )
    db = tmp_path / "live.db"
    config = GatewayConfig(policy=loads_policy(text), ledger_url=str(db), env={TEST_KEY_ENV: "k"})
    prompts = {i: f"Extract the total of invoice #{i}" for i in range(1, 41)}
    started: dict[int, str] = {}
    with GatewayServer(config) as gateway, httpx2.Client(base_url=gateway.base_url) as client:
        for i, prompt in prompts.items():
            reply = client.post(
                "/v1/messages",
                headers={"anthropic-version": "2023-06-01"},
                json={
                    "model": "tierwise/extract",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": prompt}],
                },
            )
            assert reply.status_code == 200, reply.text
            started[i] = reply.headers["x-tierwise-task-id"]
    with open_ledger(db) as book:
        for i, task_id in started.items():
            task = book.task(task_id)
            assert task is not None
            assert task["decision_tier"] == router.propose(Task.create("extract", prompts[i]))
