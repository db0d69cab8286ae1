"""Budget reservations hold atomically, in one process and across several, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierwise.cascade.budget import MemoryBudgets
from tierwise.errors import BudgetExceededError, LedgerError
from tierwise.ledger import Ledger, Reservation, open_ledger


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url) as book:
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


def test_no_limits_means_nothing_is_written(ledger: Ledger) -> None:
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


def test_stale_reservations_of_a_crashed_process_can_be_released(ledger_url: str) -> None:
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        book.reserve("t1", {"kind-day:x": Decimal(1)}, Decimal("0.6"))
        clock[0] += timedelta(hours=2)
        fresh = book.reserve("t2", {"kind-day:x": Decimal(1)}, Decimal("0.3"))
        assert book.release_stale(timedelta(hours=1)) == 1
        assert book.release_stale(timedelta(hours=1)) == 0  # released once
        assert book.spent("kind-day:x") == Decimal("0.3")
        book.settle(fresh, Decimal("0.2"))
        assert book.integrity_check() == []


def test_a_late_settlement_of_an_expired_reservation_still_counts(ledger_url: str) -> None:
    """The owner was slow, not dead: what it paid reaches the budget after all."""
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        slow = book.reserve("t1", {"kind-day:x": Decimal(1)}, Decimal("0.6"))
        gone = book.reserve("t2", {"kind-day:x": Decimal(1)}, Decimal("0.3"))
        clock[0] += timedelta(hours=2)
        assert book.release_expired() == 2
        assert book.spent("kind-day:x") == 0
        book.settle(slow, Decimal("0.5"))
        book.release(gone)
        assert book.spent("kind-day:x") == Decimal("0.5")
        with pytest.raises(LedgerError, match="already settled"):
            book.settle(slow, Decimal("0.5"))
        assert book.integrity_check() == []


def test_reservations_past_their_ttl_are_released_at_open_and_by_reserve(
    ledger_url: str,
) -> None:
    """A process killed mid-attempt holds nothing past the TTL: the next opener or the next
    reservation that would be refused releases it."""
    url = f"{ledger_url}?reservation_ttl=60"
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    limits = {"kind-day:x": Decimal(1)}
    with open_ledger(url, now=lambda: clock[0]) as dead:
        dead.reserve("t1", limits, Decimal("0.7"))  # never settled: its process "dies"
        clock[0] += timedelta(seconds=30)
        dead.reserve("t2", limits, Decimal("0.2"))
    clock[0] += timedelta(seconds=45)  # t1 is 75 s old, t2 45 s
    with open_ledger(url, now=lambda: clock[0]) as book:
        assert book.spent("kind-day:x") == Decimal("0.2")  # t1 released at open
        stats = book.stats()
        assert stats["held"]["reservations"] == 1
        assert stats["held"]["held_usd"] == Decimal("0.2")
        assert book.reserve("t3", limits, Decimal("0.8")).id is not None
        clock[0] += timedelta(seconds=20)  # t2 is now 65 s old: past the TTL
        # full (0.2 + 0.8): the refusal sweeps t2's expired hold, then the reservation fits
        assert book.reserve("t4", limits, Decimal("0.2")).id is not None
        assert book.spent("kind-day:x") == Decimal("1.0")
        assert book.integrity_check() == []


def test_integrity_check_sees_a_counter_that_disagrees_with_its_reservations(
    ledger_url: str, raw_sql: Callable[..., list[tuple[object, ...]]]
) -> None:
    with open_ledger(ledger_url) as book:
        book.reserve("t", {"task:t": Decimal(1)}, Decimal("0.5"))
    raw_sql(ledger_url, "UPDATE budget_counters SET held_pusd = held_pusd + 7")
    with open_ledger(ledger_url) as book:
        problems = book.integrity_check()
    assert len(problems) == 1 and "task:t" in problems[0]


# -- same contract as MemoryBudgets -----------------------------------------------------------

_amount = st.decimals(min_value=Decimal(0), max_value=Decimal(3), places=4)
_op = st.one_of(
    st.tuples(st.just("reserve"), st.sets(st.sampled_from("abc"), max_size=3), _amount),
    st.tuples(st.just("settle"), st.integers(min_value=0, max_value=20), _amount),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=20), st.just(Decimal(0))),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    limits=st.fixed_dictionaries(
        {s: st.decimals(min_value=1, max_value=5, places=2) for s in "abc"}
    ),
    ops=st.lists(_op, max_size=25),
)
def test_the_ledger_agrees_with_memory_budgets(
    ledger: Ledger, limits: dict[str, Decimal], ops: list[tuple[str, object, Decimal]]
) -> None:
    """Any sequence of reserve/settle/release leaves both implementations in the same state."""
    memory = MemoryBudgets()
    run = uuid.uuid4().hex[:8]  # this example's own scopes, in the test's one ledger

    def scope(name: str) -> str:
        return f"{run}:{name}"

    book = ledger
    held: list[tuple[int, Reservation]] = []
    for op, arg, amount in ops:
        if op == "reserve":
            scoped = {scope(s): limits[s] for s in arg}  # type: ignore[attr-defined]
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
        for name in "abc":
            assert book.spent(scope(name)) == memory.spent(scope(name))
    assert book.integrity_check() == []


# -- several processes, one budget --------------------------------------------------------------

_RESERVER = textwrap.dedent(
    """
    import json, sys
    from decimal import Decimal
    from tierwise.errors import BudgetExceededError
    from tierwise.ledger import open_ledger

    url, key, tries, amount = sys.argv[1], sys.argv[2], int(sys.argv[3]), Decimal(sys.argv[4])
    limits = {"kind-day:shared": Decimal(sys.argv[5]), f"key-day:{key}": Decimal(sys.argv[6])}
    ok = failed = 0
    with open_ledger(url) as ledger:
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for i in range(tries):
            try:
                res = ledger.reserve(f"{key}-{i}", limits, amount)
            except BudgetExceededError:
                failed += 1
            else:
                ok += 1
                if i % 3 == 0:  # settle some at the reserved amount: spend stays the same
                    ledger.settle(res, amount)
    print(json.dumps({"key": key, "ok": ok, "failed": failed}), flush=True)
    """
)


def test_processes_sharing_a_budget_never_overrun_it(ledger_url: str) -> None:
    """Four processes, one kind budget and two key budgets (two processes each): overshoot zero.

    Every reservation holds two scopes, so the processes also contend on row locks in two
    orders of arrival; on Postgres that is where a wrong lock order would deadlock.
    """
    open_ledger(ledger_url).close()  # migrated before the race: the race is about budgets
    amount, kind_limit, tries = Decimal("0.07"), Decimal("5"), 30
    key_limits = {"a": Decimal("1.05"), "b": Decimal("100")}  # "a" fits 15 of its 60 tries
    # 4 x 30 x 0.07 = 8.40 USD wanted against 5 USD: exactly 71 reservations fit
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RESERVER,
                ledger_url,
                key,
                str(tries),
                str(amount),
                str(kind_limit),
                str(key_limits[key]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for key in ("a", "b", "a", "b")
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
    by_key = {k: sum(r["ok"] for r in results if r["key"] == k) for k in key_limits}
    assert successes + sum(r["failed"] for r in results) == len(children) * tries
    # every refusal of a "b" process means the kind budget was full, so it ends full
    assert successes == int(kind_limit / amount)
    assert by_key["a"] <= int(key_limits["a"] / amount)
    with open_ledger(ledger_url) as book:
        used = book.spent("kind-day:shared")
        assert used == successes * amount <= kind_limit
        assert book.spent("key-day:a") == by_key["a"] * amount <= key_limits["a"]
        assert book.spent("key-day:b") == by_key["b"] * amount
        assert book.integrity_check() == []


def test_a_batch_locks_budget_counters_only_while_it_commits(postgres_url: str) -> None:
    """Settlements in an open batch hold no counter lock: other writers reserve meanwhile.

    On Postgres a group commit that locked each counter as it settled would block every
    reservation on those scopes (on every replica) until it commits, and two such batches
    settling scopes in different orders would deadlock. (A SQLite batch holds the database's
    write lock by design.)
    """
    ledger_url = postgres_url
    limits = {"key-day:k": Decimal(10), "kind-day:x": Decimal(10)}
    with open_ledger(ledger_url) as book, open_ledger(ledger_url) as other:
        first = book.reserve("t1", limits, Decimal(1))
        second = book.reserve("t2", limits, Decimal(1))
        done = threading.Event()
        with book.batch():
            book.settle(first, Decimal("0.5"))

            def reserve_elsewhere() -> None:
                other.settle(second, Decimal("0.25"))  # same two counter rows
                other.reserve("t3", limits, Decimal(1))
                done.set()

            worker = threading.Thread(target=reserve_elsewhere)
            worker.start()
            assert done.wait(timeout=10), "a reservation waited for another batch's commit"
            worker.join()
        assert book.spent("kind-day:x") == Decimal("1.75")  # 0.5 + 0.25 + 1 held
        assert book.integrity_check() == []


def test_a_read_only_ledger_still_opens_with_expired_reservations(
    postgres_url: str, postgres_admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reporting job on a read-only standby cannot release expired holds; it still reads."""
    import sqlalchemy as sa

    url = f"{postgres_url}?reservation_ttl=60"
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    with open_ledger(url, now=lambda: clock[0]) as book:
        book.reserve("dead", {"kind-day:x": Decimal(1)}, Decimal("0.5"))
    role = sa.make_url(postgres_url).username
    admin = sa.create_engine(
        postgres_admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    admin.dispose()
    clock[0] += timedelta(hours=1)
    with (
        caplog.at_level("WARNING", logger="tierwise.ledger"),
        open_ledger(url, now=lambda: clock[0]) as book,
    ):
        assert book.stats()["held"]["expired"] == 1
    assert "could not release expired reservations" in caplog.text


@pytest.mark.postgres
def test_a_counter_another_writer_creates_during_the_first_hold_is_held_against(
    postgres_databases: Callable[[], str],
) -> None:
    """The first requests of a new scope (a new UTC day) race to create its counter: a hold
    that found no row, while another writer created and committed the row, must hold again
    rather than refuse with the other's hold as the reason (seen as a spurious 429)."""
    from dataclasses import replace

    from tierwise.ledger import budgets as _budgets

    url = postgres_databases()
    limits = {"key-day:9:2026-11-30": Decimal(1)}
    with open_ledger(url) as book, open_ledger(url) as other:
        book.release(book.reserve("warm-up", {"warm:x": Decimal(1)}, Decimal("0.1")))
        dialect = book.engine.dialect
        real = _budgets._compiled[dialect]
        raced: list[Reservation] = []

        class _RacedHold:
            """The real hold; on its first run, another writer creates the counter meanwhile."""

            def run(self, cursor: object, params: dict[str, object]) -> object:
                found = real.hold.run(cursor, params)
                if not raced:
                    raced.append(other.reserve("other", limits, Decimal("0.000356")))
                return found

        _budgets._compiled[dialect] = replace(real, hold=_RacedHold())
        try:
            mine = book.reserve("mine", limits, Decimal("0.000356"))
        finally:
            _budgets._compiled[dialect] = real
        assert raced and mine.id is not None
        state = book.budget("key-day:9:2026-11-30")
        assert state is not None and state.held_usd == Decimal("0.000712")
