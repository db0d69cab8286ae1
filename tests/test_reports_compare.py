"""Before/after: the bill's change split into volume, tier mix and tokens against splits worked
out by hand (exact, rounding included), and the compare table against each window's own weekly
report, from a hand-built ledger (both backends) and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_trail
from tierwise.ledger.schema import to_pico
from tierwise.policy import default_policy
from tierwise.reports.compare import compare, split_bill
from tierwise.reports.measures import TierShare
from tierwise.reports.weekly import weekly_report


def mix(**tiers: tuple[int, str]) -> tuple[TierShare, ...]:
    """Calls and USD per tier, in the order given."""
    return tuple(
        TierShare(name, i, calls, to_pico(usd), None, None)
        for i, (name, (calls, usd)) in enumerate(tiers.items())
    )


def test_a_routing_win_is_split_as_worked_out_by_hand() -> None:
    # before: 80 calls on mid at $0.10, 20 on strong at $0.50 (100 calls, $18)
    # after:  80 on cheap at $0.01, 24 on mid at $0.12, 6 on strong at $0.52 (110 calls, $6.80)
    before = mix(mid=(80, "8.00"), strong=(20, "10.00"))
    after = mix(cheap=(80, "0.80"), mid=(24, "2.88"), strong=(6, "3.12"))
    split = split_bill(before, after, side_before=to_pico("0.50"), side_after=to_pico("0.20"))
    # volume: 10 more calls at $0.18 a call
    assert split.volume_usd == Decimal("1.80")
    # mix: cheap is new (all $0.80 of it); mid (24 − 110·0.8)·$0.10 = −$6.40;
    # strong (6 − 110·0.2)·$0.50 = −$8.00
    assert split.mix_by_tier == {
        "mid": to_pico("-6.40"),
        "strong": to_pico("-8.00"),
        "cheap": to_pico("0.80"),
    }
    assert split.mix_usd == Decimal("-13.60")
    # tokens and prices: mid 24·($0.12 − $0.10) = $0.48, strong 6·($0.52 − $0.50) = $0.12
    assert split.unit_by_tier == {"mid": to_pico("0.48"), "strong": to_pico("0.12"), "cheap": 0}
    assert split.unit_usd == Decimal("0.60")
    assert split.side_usd == Decimal("-0.30")
    assert split.total_usd == Decimal("6.80") - Decimal("18") - Decimal("0.30")
    assert split.volume + split.mix + split.unit + split.side == split.total
    assert split.verdict.startswith("the tier mix explains most of it: routing saved $13.6")


def test_a_quiet_week_is_volume_and_tokens() -> None:
    before = mix(cheap=(700, "7.00"), mid=(300, "30.00"))
    after = mix(cheap=(560, "5.60"), mid=(240, "26.40"))  # fewer calls, same mix, dearer mid
    split = split_bill(before, after)
    assert split.volume_usd == Decimal("-7.40")  # 200 calls fewer at $0.037
    assert split.mix_usd == 0
    assert split.unit_usd == Decimal("2.40")  # 240 mid calls · $0.01 more
    assert split.verdict.startswith("volume and token counts explain most of it")


def test_rounding_goes_to_the_unit_part_and_the_parts_add_up_exactly() -> None:
    before = (TierShare("cheap", 0, 3, 10, None, None),)  # pico-USD
    after = (TierShare("cheap", 0, 4, 20, None, None), TierShare("mid", 1, 1, 7, None, None))
    split = split_bill(before, after)
    exact_volume = Fraction(2) * Fraction(10, 3)  # 5 − 3 calls at 10/3 pico
    exact_mix = (Fraction(4) - Fraction(5 * 3, 3)) * Fraction(10, 3) + 7
    assert split.volume == round(exact_volume) == 7
    assert split.mix == round(Fraction(-10, 3)) + 7 == 4
    assert abs(split.unit - (17 - exact_volume - exact_mix)) <= 1
    assert split.volume + split.mix + split.unit == 17


def test_no_calls_before_is_all_volume_and_none_after_gives_it_back() -> None:
    after = mix(cheap=(10, "1.00"))
    grown = split_bill((), after)
    assert (grown.volume_usd, grown.mix_usd, grown.unit_usd) == (Decimal("1.00"), 0, 0)
    gone = split_bill(after, ())
    assert (gone.volume_usd, gone.mix_usd, gone.unit_usd) == (Decimal("-1.00"), 0, 0)


# -- over a ledger --------------------------------------------------------------------------------

A = datetime(2026, 4, 6, tzinfo=UTC)  # the week before
B = datetime(2026, 5, 4, tzinfo=UTC)  # the week after


@pytest.fixture
def two_weeks(ledger_url: str) -> Iterator[tuple[str, Ledger]]:
    clock = [A]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        for i in range(10):  # before: everything on mid, $0.01 each
            clock[0] = A + timedelta(hours=i)
            record_trail(book, [Step.of(1, "accepted", "0.01")], start_tier=1)
        for i in range(10):  # after: cheap first, $0.001 each ...
            clock[0] = B + timedelta(hours=i)
            record_trail(book, [Step.of(0, "accepted", "0.001")])
        for i in range(2):  # ... two climbed to mid
            clock[0] = B + timedelta(days=1, hours=i)
            task, _ = record_trail(
                book, [Step.of(0, "rejected", "0.001"), Step.of(1, "accepted", "0.012")]
            )
        book.record_feedback(task.id, "needed_frontier", author="ana")
        clock[0] = B + timedelta(days=9)
        yield ledger_url, book


def test_the_compare_table_is_each_windows_own_report(two_weeks: tuple[str, Ledger]) -> None:
    _, book = two_weeks
    policy, now = default_policy(), B + timedelta(days=9)
    before, after = (A, A + timedelta(days=7)), (B, B + timedelta(days=7))
    c = compare(book, policy, before, after, now=now)
    split = c.split
    # calls 10 → 14; volume 4·$0.01; cheap new $0.012; mid (2 − 14)·$0.01; mid 2·($0.012 − $0.01)
    assert (split.calls_before, split.calls_after) == (10, 14)
    assert split.volume_usd == Decimal("0.04")
    assert split.mix_usd == Decimal("0.012") - Decimal("0.12")
    assert split.unit_usd == Decimal("0.004")
    assert split.total_usd == Decimal("0.036") - Decimal("0.10")
    assert c.row("calls").before_value == 10 and c.row("calls").after_value == 14
    assert c.row("mix_calls:cheap").after_value == 12 / 14
    assert c.row("escalation").before_value == 0 and c.row("escalation").after_value == 2 / 12
    assert c.row("flag:needed_frontier").after_value == 1 / 12
    assert c.row("bill").change == "-$0.064000 (-64.0%)"
    for window, report in ((before, c.before), (after, c.after)):
        own = weekly_report(book, policy, since=window[0], until=window[1], now=now)
        assert own.as_dict() | {"source": None} == report.as_dict() | {"source": None}
    assert c.row("bill").before_value == c.before.total_usd == Decimal("0.10")
    assert c.row("efficiency").after_value == c.after.efficiency.ratio.value


def test_cli_compare_json_and_text(two_weeks: tuple[str, Ledger]) -> None:
    url, _ = two_weeks
    args = ["report", "compare", "--before", "2026-04-06..2026-04-13",
            "--after", "2026-05-04..2026-05-11", "--ledger", url]  # fmt: skip
    out = CliRunner().invoke(build_app(), [*args, "--json"])
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["bill_split"]["mix_usd"] == "-0.108"
    rows = {r["key"]: r for r in data["rows"]}
    assert (rows["bill"]["before"], rows["bill"]["after"]) == ("0.1", "0.036")
    text = CliRunner().invoke(build_app(), args, env={"COLUMNS": "200"})
    assert text.exit_code == 0
    assert "tier mix (share of calls per tier" in text.stdout and "-$0.108000" in text.stdout


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--before", "2026-04-06", "START..END"),
        ("--before", "2026-04-13..2026-04-06", "is not before"),
        ("--after", "yesterday..now", "--after"),
    ],
)
def test_bad_periods_are_one_line_errors(flag: str, value: str, message: str) -> None:
    other = "--after" if flag == "--before" else "--before"
    out = CliRunner().invoke(
        build_app(), ["report", "compare", flag, value, other, "2026-04-06..2026-04-13"]
    )
    assert out.exit_code == 2 and message in out.stderr and "Traceback" not in out.stderr
