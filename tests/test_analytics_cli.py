"""`tierwise learn status` and `tierwise feedback`: exit codes for cron and CI, JSON that agrees
with `ledger stats`, one-line errors, a flag that lands on the right task once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import open_ledger
from tierwise.ledger.fixtures import record_task


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def below(ledger_url: str) -> str:
    """19 direct tasks and one escalated: 5%, below the default red line of 9%."""
    with open_ledger(ledger_url) as book:
        for i in range(20):
            record_task(book, outcomes=["rejected", "accepted"] if i == 0 else ["accepted"])
    return ledger_url


@pytest.fixture
def above(below: str) -> str:
    with open_ledger(below) as book:
        for _ in range(5):
            record_task(book, kind="classify", outcomes=["rejected", "accepted"])
    return below


def test_status_exits_0_below_the_red_line(below: str) -> None:
    code, out, err = invoke("learn", "status", "--ledger", below)
    assert code == 0, err
    assert "below the red line of 9.0%" in out
    assert "extract" in out and "kinds contributing most" not in out


def test_status_exits_1_above_it_and_names_the_kinds_that_push_it(above: str) -> None:
    code, out, _ = invoke("learn", "status", "--ledger", above)
    assert code == 1
    assert "ABOVE the red line of 9.0%" in out
    contributors = out.split("kinds contributing most", 1)[1]
    assert contributors.index("classify") < contributors.index("extract")


def test_a_policy_with_a_higher_line_turns_the_alarm_off(above: str, tmp_path: Path) -> None:
    policy = tmp_path / "tierwise.toml"
    assert invoke("init", str(policy))[0] == 0
    text = policy.read_text()
    assert "escalation_red_line = 0.09" in text
    policy.write_text(text.replace("escalation_red_line = 0.09", "escalation_red_line = 0.5"))
    code, out, _ = invoke("learn", "status", "--ledger", above, "--policy", str(policy), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["red_line"]["threshold"] == 0.5 and data["red_line"]["above"] is False


def test_status_json_agrees_with_ledger_stats(above: str) -> None:
    code, out, _ = invoke("learn", "status", "--ledger", above, "--json", "--since", "1d")
    assert code == 1
    status = json.loads(out)
    code, out, _ = invoke("ledger", "stats", "--ledger", above, "--json", "--since", "1d")
    assert code == 0
    stats = json.loads(out)
    assert status["fleet"]["escalation"]["rate"] == stats["escalation_rate"] == 6 / 25
    for kind in status["kinds"]:
        entry = stats["by_kind"][kind["kind"]]
        assert kind["escalation"]["count"] == entry["escalated_tasks"]
        assert kind["escalation"]["rate"] == entry["escalation_rate"]
    group = status["groups"][0]
    assert set(group) >= {
        "kind",
        "start_tier",
        "status",
        "escalation",
        "first_try_pass",
        "reasons",
        "cost_per_accepted_usd",
        "wasted_usd",
        "latency",
        "flags",
        "failure_with_flags",
    }
    assert group["escalation"]["low"] is not None and group["reasons"] == {"json": 5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--window", "soon"), "--window"),
        (("--window", "0d"), "--window"),
        (("--since", "yesterday"), "--since"),
        (("--since", "2026-01-02", "--until", "2026-01-01"), "empty"),
    ],
)
def test_bad_windows_exit_2_with_one_line(below: str, args: tuple[str, ...], message: str) -> None:
    code, _, err = invoke("learn", "status", "--ledger", below, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_status_of_a_missing_ledger_exits_2(tmp_path: Path) -> None:
    code, _, err = invoke("learn", "status", "--ledger", str(tmp_path / "none.db"))
    assert code == 2 and "does not exist" in err


# -- feedback ----------------------------------------------------------------------------------


def test_feedback_lands_on_the_task_once(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        task, _ = record_task(book, outcomes=["accepted"])
        other, _ = record_task(book, outcomes=["accepted"])
    for _ in range(2):
        code, out, err = invoke(
            "feedback", task.id[:10], "--wrong", "--note", "total off", "--ledger", ledger_url
        )
        assert code == 0, err
    assert out.startswith("unchanged wrong on task " + task.id)
    assert "late failure of the cheap tier" in out
    code, out, _ = invoke(
        "feedback", task.id, "--cheaper-would-do", "--ledger", ledger_url, "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert (data["change"], data["flag"], data["author"].startswith("cli")) == (
        "replaced",
        "cheaper_would_do",
        True,
    )
    with open_ledger(ledger_url) as book:
        assert [(f.flag, f.note) for f in book.feedback_of(task.id)] == [("cheaper_would_do", None)]
        assert book.feedback_of(other.id) == []


def test_needed_frontier_on_the_top_tier_confirms_the_routing(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        top, _ = record_task(book, start_tier=2)
        low, _ = record_task(book)
    code, out, _ = invoke("feedback", top.id, "--needed-frontier", "-l", ledger_url)
    assert code == 0 and "confirms the routing" in out
    code, out, _ = invoke("feedback", low.id, "--needed-frontier", "-l", ledger_url)
    assert code == 0 and "under-routing" in out
    code, out, _ = invoke("learn", "status", "-l", ledger_url, "--json")
    flags = {f["tier"]: f for f in json.loads(out)["flags"]}
    assert (flags["strong"]["confirmed"], flags["cheap"]["under_routed"]) == (1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "exactly one of --wrong"),
        (("--wrong", "--needed-frontier"), "exactly one of --wrong"),
        (("--wrong", "--note", "x" * 4001), "at most 4000"),
    ],
)
def test_feedback_refuses_bad_input_with_one_line(
    ledger_url: str, args: tuple[str, ...], message: str
) -> None:
    with open_ledger(ledger_url) as book:
        task, _ = record_task(book)
    code, _, err = invoke("feedback", task.id, *args, "-l", ledger_url)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    with open_ledger(ledger_url) as book:
        assert book.feedback_of(task.id) == []


def test_feedback_on_an_unknown_task_exits_2(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    code, _, err = invoke("feedback", "0123456789", "--wrong", "-l", ledger_url)
    assert code == 2 and "no task '0123456789'" in err
