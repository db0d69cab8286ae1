"""Budget reservations hold atomically, in one process and across several."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.cascade.budget import MemoryBudgets
from tierwise.errors import BudgetExceededError, LedgerError
from tierwise.ledger import Ledger, Reservation, open_ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(tmp_path / "ledger.db") as book:
        yield book


def test_a_reservation_holds_spend_until_settled_at_the_actual_cost(ledger: Ledger) -> None:
    limits = {"task:t1": Decimal("1.00"), "kind-day:extract:2025-01-01": Decimal("5")}
    res = ledger.reserve("t1", limits, Decimal("0.40"))
    assert res.scopes == tuple(sorted(limits))
    state = ledger.budget("task:t1")
    assert state is not None
    assert (state.spent_usd, state.held_usd, state.limit_usd) == (
        Decimal(0),
        Decimal("0.4"),
        Decimal(1),
    )
    ledger.settle(res, Decimal("0.125"))
    for scope in limits:
        assert ledger.spent(scope) == Decimal("0.125")
        state = ledger.budget(scope)
        assert state is not None and state.held_usd == 0


def test_an_overrun_raises_names_the_scope_and_changes_nothing(ledger: Ledger) -> None:
    roomy, tight = "kind-day:extract:2025-01-01", "session:s1"
    ledger.settle(ledger.reserve("t0", {tight: Decimal("1")}, Decimal("0.7")), Decimal("0.7"))
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve("t1", {roomy: Decimal("100"), tight: Decimal("1")}, Decimal("0.5"))
    err = info.value
    assert (err.budget, err.limit_usd, err.spent_usd, err.needed_usd) == (
        tight,
        Decimal("1"),
        Decimal("0.7"),
        Decimal("0.5"),
    )
    # the roomy scope comes first in lock order and was raised before the tight one failed:
    # the rollback undid that too, down to the creation of its counter
    assert ledger.budget(roomy) is None
    assert ledger.spent(tight) == Decimal("0.7")
    assert ledger.integrity_check() == []


def test_spend_exactly_at_the_limit_is_allowed(ledger: Ledger) -> None:
    limits = {"task:t": Decimal("0.3")}
    for _ in range(3):
        ledger.reserve("t", limits, Decimal("0.1"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve("t", limits, Decimal("0.000000000001"))
    assert ledger.spent("task:t") == Decimal("0.3")


def test_release_returns_the_held_amount(ledger: Ledger) -> None:
    limits = {"task:t": Decimal("1")}
    res = ledger.reserve("t", limits, Decimal("1"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve("t", limits, Decimal("0.01"))
    ledger.release(res)
    assert ledger.spent("task:t") == 0
    ledger.reserve("t", limits, Decimal("1"))


def test_a_reservation_closes_once(ledger: Ledger) -> None:
    res = ledger.reserve("t", {"task:t": Decimal("1")}, Decimal("0.5"))
    ledger.settle(res, Decimal("0.1"))
    with pytest.raises(LedgerError, match="already settled"):
        ledger.settle(res, Decimal("0.1"))
    with pytest.raises(LedgerError, match="already settled"):
        ledger.release(res)
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.release(Reservation(999, "t", ("task:t",), Decimal(1)))
    assert ledger.spent("task:t") == Decimal("0.1")


def test_no_limits_means_nothing_is_written(tmp_path: Path, ledger: Ledger) -> None:
    res = ledger.reserve("t", {}, Decimal("3"))
    assert res.id is None
    ledger.settle(res, Decimal("3"))
    ledger.release(res)
    assert ledger.budget("anything") is None
    assert ledger.spent("anything") == 0


def test_negative_amounts_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.reserve("t", {"task:t": Decimal(1)}, Decimal("-0.1"))
    res = ledger.reserve("t", {"task:t": Decimal(1)}, Decimal("0.1"))
    with pytest.raises(ValueError):
        ledger.settle(res, Decimal("-1"))


def test_stale_reservations_of_a_crashed_process_can_be_released(tmp_path: Path) -> None:
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    with open_ledger(tmp_path / "l.db", now=lambda: clock[0]) as book:
        old = book.reserve("t1", {"kind-day:x": Decimal(1)}, Decimal("0.6"))
        clock[0] += timedelta(hours=2)
        fresh = book.reserve("t2", {"kind-day:x": Decimal(1)}, Decimal("0.3"))
        assert book.release_stale(timedelta(hours=1)) == 1
        assert book.spent("kind-day:x") == Decimal("0.3")
        with pytest.raises(LedgerError, match="already released"):
            book.settle(old, Decimal("0.6"))
        book.settle(fresh, Decimal("0.2"))
        assert book.integrity_check() == []


def test_integrity_check_sees_a_counter_that_disagrees_with_its_reservations(
    tmp_path: Path,
) -> None:
    import sqlite3

    with open_ledger(tmp_path / "l.db") as book:
        book.reserve("t", {"task:t": Decimal(1)}, Decimal("0.5"))
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("UPDATE budget_counters SET held_pusd = held_pusd + 7")
    conn.commit()
    conn.close()
    with open_ledger(tmp_path / "l.db") as book:
        problems = book.integrity_check()
    assert len(problems) == 1 and "task:t" in problems[0]


# -- same contract as MemoryBudgets -----------------------------------------------------------

_amount = st.decimals(min_value=Decimal(0), max_value=Decimal(3), places=4)
_op = st.one_of(
    st.tuples(st.just("reserve"), st.sets(st.sampled_from("abc"), max_size=3), _amount),
    st.tuples(st.just("settle"), st.integers(min_value=0, max_value=20), _amount),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=20), st.just(Decimal(0))),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.fixed_dictionaries(
        {s: st.decimals(min_value=1, max_value=5, places=2) for s in "abc"}
    ),
    ops=st.lists(_op, max_size=25),
)
def test_the_ledger_agrees_with_memory_budgets(
    limits: dict[str, Decimal], ops: list[tuple[str, object, Decimal]]
) -> None:
    """Any sequence of reserve/settle/release leaves both implementations in the same state."""
    memory = MemoryBudgets()
    with tempfile.TemporaryDirectory() as tmp, open_ledger(Path(tmp) / "l.db") as book:
        held: list[tuple[int, Reservation]] = []
        for op, arg, amount in ops:
            if op == "reserve":
                scoped = {s: limits[s] for s in arg}  # type: ignore[attr-defined]
                outcomes = []
                for impl in (memory, book):
                    try:
                        outcomes.append(impl.reserve("t", scoped, amount))
                    except BudgetExceededError as exc:
                        outcomes.append(exc)
                mem, led = outcomes
                assert isinstance(mem, BudgetExceededError) == isinstance(led, BudgetExceededError)
                if isinstance(mem, BudgetExceededError):
                    assert isinstance(led, BudgetExceededError)
                    assert led.spent_usd == mem.spent_usd
                    assert led.limit_usd == mem.limit_usd
                else:
                    assert isinstance(mem, int) and isinstance(led, Reservation)
                    held.append((mem, led))
            elif held:
                mem_id, res = held.pop(int(arg) % len(held))  # type: ignore[call-overload]
                if op == "settle":
                    memory.settle(mem_id, amount)
                    book.settle(res, amount)
                else:
                    memory.release(mem_id)
                    book.release(res)
            for scope in "abc":
                assert book.spent(scope) == memory.spent(scope)
        assert book.integrity_check() == []


# -- several processes, one budget --------------------------------------------------------------

_RESERVER = textwrap.dedent(
    """
    import json, sys
    from decimal import Decimal
    from tierwise.errors import BudgetExceededError
    from tierwise.ledger import open_ledger

    path, tries, amount, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ok = failed = 0
    with open_ledger(path) as ledger:
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for i in range(tries):
            try:
                res = ledger.reserve(f"p-{i}", {"kind-day:shared": Decimal(limit)}, Decimal(amount))
            except BudgetExceededError:
                failed += 1
            else:
                ok += 1
                if i % 3 == 0:  # settle some at the reserved amount: spend stays the same
                    ledger.settle(res, Decimal(amount))
    print(json.dumps({"ok": ok, "failed": failed}), flush=True)
    """
)


def test_processes_sharing_a_budget_never_overrun_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    amount, limit, procs, tries = Decimal("0.07"), Decimal("5"), 4, 30
    # 4 x 30 tries x 0.07 = 8.40 USD wanted against 5 USD: 71 reservations fit, 49 must fail
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _RESERVER, str(path), str(tries), str(amount), str(limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(procs)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    successes = sum(r["ok"] for r in results)
    assert successes + sum(r["failed"] for r in results) == procs * tries
    assert successes == int(limit / amount)
    with open_ledger(path) as book:
        used = book.spent("kind-day:shared")
        assert used == successes * amount
        assert used <= limit
        assert book.integrity_check() == []
