"""The weekly report against a hand-built week whose every figure is worked out by hand: spend by
line and by day, tier mix, escalation, waste, latency, keys, sessions, top kinds and proposals,
the routing efficiency ratio, estimates; the text, the HTML page and the CLI. Both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_trail
from tierwise.ledger.schema import from_pico, policy_changes
from tierwise.policy import Policy, loads_policy
from tierwise.reports.weekly import WeeklyReport, weekly_report

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)  # Monday of ISO week 19
WEEK = (T0, T0 + timedelta(days=7))

POLICY = """\
version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "cheap-model"
[[tiers]]
name = "mid"
provider = "anthropic"
model = "mid-model"
[[tiers]]
name = "strong"
provider = "anthropic"
model = "strong-model"
[prices."cheap-model"]
input = 1
output = 5
cache_read = 0.1
[prices."mid-model"]
input = 3
output = 15
cache_read = 0.3
[prices."strong-model"]
input = 15
output = 75
cache_read = 1.5
[validators.shape]
type = "json"
[[rules]]
when = { kind = "code_edit" }
tier = "mid"
[kinds.extract]
validators = ["shape"]
[kinds.classify]
validators = []
[kinds.summarize]
validators = [{ type = "agreement", tiers = ["mid"] }]
[fleet]
escalation_red_line = 0.09
"""


def week_policy() -> Policy:
    return loads_policy(POLICY)


def at(clock: list[datetime], when: datetime) -> None:
    clock[0] = when


def fill_week(ledger: Ledger, clock: list[datetime]) -> dict[str, str]:
    """The hand-built week (see the comments for each task); returns task ids by letter."""
    k1 = ledger.create_api_key("ci-agent")
    k2 = ledger.create_api_key("<b>bot</b>")
    keys = {k.name: k.id for k in ledger.list_api_keys()}
    assert k1 and k2
    ids: dict[str, str] = {}
    mon, tue = T0 + timedelta(hours=10), T0 + timedelta(days=1, hours=9)

    def task(letter: str, when: datetime, steps: list[Step], **kw: object) -> None:
        at(clock, when)
        t, _ = record_trail(ledger, steps, **kw)  # type: ignore[arg-type]
        ids[letter] = t.id

    # outside the window on both sides
    task("before", T0 - timedelta(minutes=1), [Step.of(0, "accepted", "7")])
    task("after", T0 + timedelta(days=7), [Step.of(0, "accepted", "7")])
    # Monday
    task("a", mon, [Step.of(0, "accepted", "0.001")], session="s1", key_id=keys["ci-agent"],
         latency_s=1.0)  # fmt: skip
    task("b", mon + timedelta(minutes=5),
         [Step.of(0, "rejected", "0.002"), Step.of(1, "accepted", "0.010")],
         session="s1", latency_s=5.0)  # fmt: skip
    task("c", mon + timedelta(hours=3),
         [Step.of(0, "rejected", "0.001"), Step.of(1, "rejected", "0.004"),
          Step.of(2, "rejected", "0.02")],
         kind="classify", session="s2", latency_s=9.0)  # fmt: skip
    # Tuesday
    task("d", tue,
         [Step.of(0, "accepted", "0.0005", role="validator"), Step.of(1, "accepted", "0.05")],
         kind="code_edit", start_tier=1, key_id=keys["<b>bot</b>"], latency_s=2.0)  # fmt: skip
    task("e", tue + timedelta(minutes=1), [Step.of(-1, "accepted", "0.03")], kind="chat",
         start_tier=-1, latency_s=3.0)  # fmt: skip
    task("f", tue + timedelta(minutes=2), [Step.of(0, "accepted", "0.004", role="probe")],
         role="probe", latency_s=0.5)  # fmt: skip
    task("g", tue + timedelta(minutes=3),
         [Step.of(0, "accepted", "0.0007", role="shadow"), Step.of(0, "accepted", "0.001")],
         kind="summarize", latency_s=3.0)  # fmt: skip
    task("h", tue + timedelta(minutes=4), [Step.of(0, "accepted", "0.5", role="replay")],
         role="replay", latency_s=1.0)  # fmt: skip
    task("i", tue + timedelta(minutes=5), [Step.of(0, "accepted", "0.002")], latency_s=4.0)
    task("j", tue + timedelta(minutes=6), [Step.of(0, "rejected", "0.001")],
         task_outcome="budget", latency_s=0.2)  # fmt: skip
    at(clock, tue + timedelta(hours=2))
    ledger.record_feedback(ids["i"], "wrong", author="ana", note="the total is off")
    ledger.record_feedback(ids["b"], "cheaper_would_do", author="ana")
    with ledger.engine.begin() as conn:
        for kind, change, status in (
            ("extract", json.dumps({"floor_before": None, "floor_after": "mid"}), "proposed"),
            ("classify", "not json at all", "proposed"),
            ("extract", json.dumps({"floor_before": "mid", "floor_after": None}), "applied"),
        ):
            conn.execute(
                sa.insert(policy_changes).values(
                    created_at=tue, kind=kind, change_json=change, reason="learner", status=status
                )
            )
    at(clock, T0 + timedelta(days=8))
    return ids


#: What the hand count says (see fill_week): spend by line, USD.
ROUTED = Decimal("0.001") + Decimal("0.012") + Decimal("0.025") + Decimal("0.0505")
ROUTED += Decimal("0.001") + Decimal("0.002") + Decimal("0.001")  # g's live call, i, j
PASSTHROUGH, PROBE, SHADOW = Decimal("0.03"), Decimal("0.004"), Decimal("0.0007")
TOTAL = ROUTED + PASSTHROUGH + PROBE + SHADOW


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


@pytest.fixture
def week(ledger_url: str, clock: list[datetime]) -> Iterator[tuple[Ledger, dict[str, str]]]:
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        ids = fill_week(book, clock)
        yield book, ids


def _report(book: Ledger, **kw: Any) -> WeeklyReport:
    return weekly_report(
        book, week_policy(), since=WEEK[0], until=WEEK[1], now=T0 + timedelta(days=8), **kw
    )


def test_spend_by_line_and_by_day_is_the_hand_count(week: tuple[Ledger, dict[str, str]]) -> None:
    r = _report(week[0])
    assert r.total_usd == TOTAL == Decimal("0.1272")
    assert (from_pico(r.lines.routed), from_pico(r.lines.passthrough)) == (ROUTED, PASSTHROUGH)
    assert (from_pico(r.lines.probe), from_pico(r.lines.shadow)) == (PROBE, SHADOW)
    assert from_pico(r.lines.replay) == Decimal("0.5")  # priced, never spent, outside the total
    assert [(d.day.isoformat(), d.tasks, d.spend_usd, d.partial) for d in r.days] == [
        ("2026-05-04", 3, Decimal("0.038"), False),
        ("2026-05-05", 6, Decimal("0.0892"), False),
    ]
    assert sum(d.spend_usd for d in r.days) == r.total_usd


def test_the_total_agrees_with_the_stored_costs_to_the_cent(
    week: tuple[Ledger, dict[str, str]], ledger_url: str, raw_sql: Any
) -> None:
    (stored,) = raw_sql(
        ledger_url,
        "SELECT sum(a.cost_pusd) FROM attempts a JOIN tasks t ON t.id = a.task_id "
        "WHERE t.role <> 'replay' AND t.created_at >= :a AND t.created_at < :b",
        a=WEEK[0].replace(tzinfo=None),
        b=WEEK[1].replace(tzinfo=None),
    )
    assert from_pico(int(stored[0])) == _report(week[0]).total_usd


def test_per_session_per_accepted_task_and_waste(week: tuple[Ledger, dict[str, str]]) -> None:
    r, f = _report(week[0]), _report(week[0]).fleet
    assert (r.sessions, r.session_tasks, r.session_spend_usd) == (2, 3, Decimal("0.038"))
    assert r.per_session_usd == Decimal("0.019")
    assert (f.tasks, f.resolved, f.accepted, f.exhausted, f.unresolved) == (
        7,
        6,
        5,
        1,
        {"budget": 1},
    )
    assert f.cost_usd == Decimal("0.0932") and f.cost_per_accepted_usd == Decimal("0.01864")
    assert f.wasted_usd == Decimal("0.028")
    assert (f.validator_usd, f.shadow_usd, f.probe_usd) == (Decimal("0.0005"), SHADOW, 0)


def test_tier_mix_by_calls_and_by_money(week: tuple[Ledger, dict[str, str]]) -> None:
    mix = {t.tier: (t.tier_index, t.calls, t.cost_usd) for t in _report(week[0]).tier_mix}
    assert mix == {
        "passthrough": (-1, 1, Decimal("0.03")),
        "cheap": (0, 7, Decimal("0.0085")),
        "mid": (1, 3, Decimal("0.064")),
        "strong": (2, 1, Decimal("0.02")),
    }
    shares = {t.tier: (t.calls_share, t.cost_share) for t in _report(week[0]).tier_mix}
    assert shares["cheap"] == (7 / 12, pytest.approx(0.0085 / 0.1225))
    assert shares["passthrough"] == (1 / 12, pytest.approx(0.03 / 0.1225))
    assert sum(t.cost_usd for t in _report(week[0]).tier_mix) == ROUTED + PASSTHROUGH


def test_escalation_per_kind_against_the_red_line_and_latency(
    week: tuple[Ledger, dict[str, str]],
) -> None:
    r = _report(week[0])
    f = r.fleet
    assert (f.escalated, f.resolved) == (2, 6) and r.above_line(f)
    per_kind = {k: (t.resolved, t.escalated) for k, t in r.kinds.items()}
    assert per_kind == {
        "classify": (1, 1),
        "code_edit": (1, 0),
        "extract": (3, 1),
        "summarize": (1, 0),
    }
    assert [k for k, t in r.kinds.items() if r.above_line(t)] == ["classify", "extract"]
    assert (f.latency_direct.tasks, f.latency_direct.p50_s) == (4, 2.5)
    assert f.latency_direct.p95_s == pytest.approx(3.85)
    assert (f.latency_escalated.tasks, f.latency_escalated.p50_s) == (2, 7.0)
    assert f.latency_escalated.p95_s == pytest.approx(8.8)


def test_routing_efficiency_ratio_and_its_parts(week: tuple[Ledger, dict[str, str]]) -> None:
    r = _report(week[0])
    e = r.efficiency
    # a, d, g, i accepted first try; i was flagged wrong (b's flag is on an escalated task)
    assert (e.resolved, e.first_try, e.flagged_any, e.efficient) == (6, 4, 1, 3)
    assert e.flagged == {"wrong": 1, "needed_frontier": 0, "cheaper_would_do": 0}
    assert e.ratio.value == 0.5
    assert {k: (v.count, v.of) for k, v in r.flags.items()} == {
        "wrong": (1, 5),
        "needed_frontier": (0, 5),
        "cheaper_would_do": (1, 5),
    }


def test_top_keys_sessions_kinds_and_proposals(week: tuple[Ledger, dict[str, str]]) -> None:
    r = _report(week[0], top=3)
    assert [(k.name, k.tasks, k.spend_usd) for k in r.top_keys] == [
        (None, 7, Decimal("0.075")),  # without g's shadow call (the shadow budget's)
        ("<b>bot</b>", 1, Decimal("0.0505")),
        ("ci-agent", 1, Decimal("0.001")),
    ]
    assert [(s.id, s.tasks, s.spend_usd) for s in r.top_sessions] == [
        ("s2", 1, Decimal("0.025")),
        ("s1", 2, Decimal("0.013")),
    ]
    assert [(k.kind, k.tasks, k.spend_usd) for k in r.top_kinds] == [
        ("code_edit", 1, Decimal("0.0505")),
        ("chat", 1, Decimal("0.03")),
        ("classify", 1, Decimal("0.025")),
    ]
    code_edit = r.top_kinds[0]
    assert code_edit.start_tiers == {"mid": 1} and code_edit.current_tier == "mid"
    classify = r.top_kinds[2]
    assert [(p.kind, p.floor_before, p.floor_after) for p in classify.proposals] == [
        ("classify", None, None)  # a change the learner wrote as something else than JSON
    ]
    assert [(p.kind, p.floor_after) for p in r.proposals] == [
        ("extract", "mid"),
        ("classify", None),
    ]
    extract = next(k for k in _report(week[0], top=5).top_kinds if k.kind == "extract")
    assert extract.tasks == 5 and extract.spend_usd == Decimal("0.020")  # its probe included
    assert [p.floor_after for p in extract.proposals] == ["mid"]


def test_estimates_price_the_routed_tasks_own_tokens_on_each_tier(
    week: tuple[Ledger, dict[str, str]],
) -> None:
    r = _report(week[0])
    # 7 routed tasks x (120 input, 40 cache-read, 30 output) on each tier's prices
    assert r.work_tasks == 7
    assert (r.work.input_tokens, r.work.cache_read_tokens, r.work.output_tokens) == (840, 280, 210)
    assert [(e.tier, e.cost_usd) for e in r.estimates] == [
        ("cheap", Decimal("0.001918")),
        ("mid", Decimal("0.005754")),
        ("strong", Decimal("0.02877")),
    ]
    data = r.as_dict()["estimates"]
    assert data["estimate"] is True and all(t["estimate"] for t in data["tiers"])


def test_kept_summary_and_rows_give_the_same_report(week: tuple[Ledger, dict[str, str]]) -> None:
    kept = _report(week[0]).as_dict()
    rows = _report(week[0], from_rows=True).as_dict()
    again = _report(week[0]).as_dict()
    assert kept["source"]["summarised_now"] > 0 and again["source"]["summarised_now"] == 0
    for data in (kept, rows, again):
        data.pop("source")
    assert kept == rows == again


def test_json_text_and_html_show_the_same_figures(
    week: tuple[Ledger, dict[str, str]], ledger_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    page = tmp_path / "week.html"
    args = ["report", "--since", "2026-05-04", "--until", "2026-05-11", "--ledger", ledger_url,
            "--policy", str(policy)]  # fmt: skip
    runner = CliRunner()
    as_json = runner.invoke(build_app(), [*args, "--json"])
    assert as_json.exit_code == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert Decimal(data["spend"]["total_usd"]) == TOTAL
    assert data["routing_efficiency"]["ratio"]["rate"] == 0.5
    text = runner.invoke(build_app(), [*args, "--html", str(page)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.stderr
    for shown in ("$0.127200", "$0.092500", "$0.030000", "$0.004000", "$0.000700", "$0.019000",
                  "$0.018640", "$0.028000", "33.3%", "50.0%", "ESTIMATES"):  # fmt: skip
        assert shown in text.stdout, shown
    html = page.read_text(encoding="utf-8")
    for shown in ("$0.127200", "$0.019000", "$0.018640", "50.0%", "red line 9%", "<svg"):
        assert shown in html, shown
    assert "&lt;b&gt;bot&lt;/b&gt;" in html and "<b>bot</b>" not in html
    assert "<script" not in html and "src=" not in html and "http" not in html
    assert html.count("<svg") == 3


def test_bad_windows_and_a_missing_ledger_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(build_app(), ["report", "--ledger", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "Traceback" not in missing.stderr
    book = tmp_path / "l.db"
    open_ledger(book).close()
    bad = runner.invoke(build_app(), ["report", "--ledger", str(book), "--since", "last week"])
    assert bad.exit_code == 2 and "--since" in bad.stderr
    empty = runner.invoke(
        build_app(),
        ["report", "--ledger", str(book), "--since", "2026-05-04", "--until", "2026-05-04"],
    )
    assert empty.exit_code == 2 and "empty" in empty.stderr
    quiet = runner.invoke(build_app(), ["report", "--ledger", str(book)])
    assert quiet.exit_code == 0 and "no tasks in this window" in quiet.stdout


def test_probe_and_shadow_calls_inside_other_tasks_go_on_their_own_lines(
    ledger_url: str, clock: list[datetime]
) -> None:
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        at(clock, T0 + timedelta(hours=1))
        # a live task whose probe call ran on cheap before the routed mid tier answered
        record_trail(book, [Step.of(0, "rejected", "0.003", role="probe"),
                            Step.of(1, "accepted", "0.02")], start_tier=1)  # fmt: skip
        # a probe task shadowed on strong
        shadowed = [Step.of(0, "accepted", "0.001", role="probe"),
                    Step.of(2, "accepted", "0.05", role="shadow")]  # fmt: skip
        record_trail(book, shadowed, role="probe")
        # a concrete-model call with a shadow call beside it
        record_trail(book, [Step.of(-1, "accepted", "0.04"), Step.of(0, "accepted", "0.002",
                            role="shadow")], start_tier=-1)  # fmt: skip
        r = weekly_report(
            book, week_policy(), since=WEEK[0], until=WEEK[1], now=T0 + timedelta(days=8)
        )
    lines = {k: Decimal(v) for k, v in r.lines.as_dict().items()}
    assert lines["routed_usd"] == Decimal("0.02")
    assert lines["passthrough_usd"] == Decimal("0.04")
    assert lines["probe_usd"] == Decimal("0.004")
    assert lines["shadow_usd"] == Decimal("0.052")
    assert lines["total_usd"] == Decimal("0.116")
    mix = {t.tier: (t.calls, t.cost_usd) for t in r.tier_mix}  # probe and shadow calls left out
    assert mix == {"passthrough": (1, Decimal("0.04")), "mid": (1, Decimal("0.02"))}
    assert r.fleet.escalated == 0 and r.fleet.first_try == 1  # the failed probe is no climb
