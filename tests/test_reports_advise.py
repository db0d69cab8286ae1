"""`tierwise advise`: each verdict against numbers worked out by hand — monthly spend and the $500
line, volume, variety, a cheap quality signal per kind, pins for same-answer and quality-first
kinds, break-even per cascade on its 95% interval — from a described workload and from a
hand-built ledger (both backends), whose figures are the weekly report's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import Step, record_trail
from tierwise.policy import loads_policy
from tierwise.reports.advisor import Advice, advise
from tierwise.reports.weekly import weekly_report

ARTICLES = ["--input-tokens", "2000", "--output-tokens", "500", "--price", "cheap=0.80:4",
            "--price", "mid=3:15", "--price", "strong=15:75"]  # fmt: skip

KINDS = """\
[kinds.extract]
share = 0.8
validator = "json_schema"
failure_rate = 0.05
[kinds.review]
share = 0.2
validator = "none"
quality_first = true
"""


def run(*args: str) -> tuple[int, str, str]:
    out = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})
    return out.exit_code, out.stdout, out.stderr


def verdicts(data: dict[str, object]) -> dict[tuple[str, str | None], dict[str, object]]:
    return {(v["topic"], v["kind"]): v for v in data["verdicts"]}  # type: ignore[attr-defined, index]


def test_the_articles_workload_by_hand(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds.toml"
    kinds.write_text(KINDS)
    code, out, err = run("advise", "--tasks-per-day", "500", *ARTICLES, "--workload", str(kinds),
                         "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    # per task: cheap $0.0036, mid $0.0135, strong $0.0675; the month on strong: 15,000 tasks
    assert Decimal(data["monthly_usd"]) == Decimal("1012.5")
    assert data["tasks_per_month"] == 15_000
    v = verdicts(data)
    assert (v[("spend", None)]["verdict"], v[("spend", None)]["pays"]) == ("route", True)
    assert v[("volume", None)]["pays"] is None  # between 10k and 100k a month
    assert v[("variety", None)]["pays"] is True
    assert v[("signal", "extract")]["verdict"] == "cheap signal"
    extract = v[("break_even", "extract")]
    assert extract["verdict"] == "starting on cheap pays"
    assert "= 73.3%" in str(extract["evidence"])  # 1 − 0.0036 ÷ 0.0135
    assert v[("signal", "review")]["verdict"] == "one tier you trust"
    assert 'floor = "mid"' in str(v[("signal", "review")]["suggestion"])
    quality = v[("quality", "review")]
    assert quality["verdict"] == "pin to the top"
    assert quality["suggestion"].startswith('[frontier]\nkinds = ["review"]')  # type: ignore[union-attr]
    assert v[("break_even", "review")]["verdict"] == "measure it"
    assert data["pays"] is None and data["overall"].startswith("routing can pay")
    step = data["kinds"][0]["cascades"][0]
    assert (step["cost_start_usd"], step["cost_next_usd"]) == ("0.0036", "0.0135")


def test_below_500_a_month_routing_does_not_pay_yet(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds.toml"
    kinds.write_text(KINDS)
    code, out, _ = run("advise", "--tasks-per-day", "100", *ARTICLES, "--workload", str(kinds))
    assert code == 0
    assert "ROUTING DOES NOT PAY HERE YET" in out
    assert "$202.50 a month" in out  # 3,000 tasks × $0.0675
    assert 'floor = "mid"  # one tier you trust' in out


def test_model_checks_same_answer_and_a_failing_cascade(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds.toml"
    kinds.write_text(
        '[kinds.summarize]\nshare = 0.5\nvalidator = "agreement"\n'
        '[kinds.contract]\nshare = 0.5\nvalidator = "regex"\nsame_answer = true\n'
        'failure_rate = 0.9\nstart_tier = "mid"\n'
    )
    code, out, _ = run("advise", "--tasks-per-day", "5000", *ARTICLES, "--workload", str(kinds),
                       "--json")  # fmt: skip
    assert code == 0
    v = verdicts(json.loads(out))
    assert v[("signal", "summarize")]["verdict"] == "checking costs a model call"
    assert v[("consistency", "contract")]["verdict"] == "pin"
    contract = v[("break_even", "contract")]
    # from mid: 1 − 0.0135 ÷ 0.0675 = 80%, and 90% of its tasks fail there
    assert contract["verdict"] == "start on strong" and "= 80.0%" in str(contract["evidence"])
    assert 'floor = "strong"' in str(contract["suggestion"])
    assert v[("volume", None)]["pays"] is True  # 150,000 a month


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[kinds.a]\nshare = 0.5\n", "add up to 0.5, not 1"),
        ("[kinds.a]\nshare = 1\nvalidatr = 'json'\n", "kinds.a.validatr"),
        ("[kinds.a]\nshare = 1\nvalidator = 'jsn'\n", "kinds.a.validator: unknown 'jsn'"),
        ("[kinds.a]\nshare = 1\nstart_tier = 'top'\n", "kinds.a.start_tier: unknown tier"),
        ("[kinds.a]\nshare = 'half'\n", "kinds.a.share"),
        ("kinds = [", "not valid TOML"),
    ],
)
def test_a_bad_workload_file_is_an_error_with_its_key_path(
    tmp_path: Path, text: str, message: str
) -> None:
    kinds = tmp_path / "kinds.toml"
    kinds.write_text(text)
    code, _, err = run("advise", "--tasks-per-day", "10", *ARTICLES, "--workload", str(kinds))
    assert code == 2 and message in err and "Traceback" not in err


def test_a_workload_needs_its_kinds_file() -> None:
    code, _, err = run("advise", "--tasks-per-day", "10")
    assert code == 2 and "--workload" in err


# -- from a ledger ----------------------------------------------------------------------------

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
[prices."cheap-model"]
input = 1
output = 5
cache_read = 0.1
[prices."mid-model"]
input = 3
output = 15
cache_read = 0.3
[kinds.extract]
validators = [{ type = "json" }]
[kinds.classify]
validators = [{ type = "regex", pattern = "^(yes|no)$" }]
"""
T0 = datetime(2026, 5, 4, tzinfo=UTC)


@pytest.fixture
def history(ledger_url: str) -> Iterator[tuple[str, Ledger]]:
    clock = [T0]
    with open_ledger(ledger_url, now=lambda: clock[0]) as book:
        for i in range(20):  # extract: 19 of 20 fail on cheap
            clock[0] = T0 + timedelta(hours=i)
            steps = [Step.of(1, "accepted", "0.03")] if i else [Step.of(0, "accepted", "0.01")]
            if i:
                steps.insert(0, Step.of(0, "rejected", "0.01"))
            task, _ = record_trail(book, steps)
            if i < 3:
                book.record_feedback(task.id, "needed_frontier", author="ana")
        for i in range(40):  # classify: 1 of 40 fails on cheap
            clock[0] = T0 + timedelta(days=1, hours=i % 20)
            steps = [Step.of(0, "accepted", "0.001")]
            if i == 0:
                steps = [Step.of(0, "rejected", "0.001"), Step.of(1, "accepted", "0.003")]
            record_trail(book, steps, kind="classify")
        clock[0] = T0 + timedelta(days=10)
        yield ledger_url, book


def test_advice_from_the_ledger_is_the_reports_figures(history: tuple[str, Ledger]) -> None:
    book = history[1]
    policy = loads_policy(POLICY)
    now, window = T0 + timedelta(days=10), (T0, T0 + timedelta(days=7))
    advice: Advice = advise(book, policy, since=window[0], until=window[1], now=now)
    report = weekly_report(book, policy, since=window[0], until=window[1], now=now)
    # extract 0.01 + 19 × (0.01 + 0.03); classify 39 × 0.001 + 0.001 + 0.003
    assert advice.spend_usd == report.total_usd == Decimal("0.813")
    assert advice.tasks == 60
    # history from the first task's hour (T0) to the window's end: 7 days; 30/7 of the spend
    assert advice.days == 7.0
    assert advice.monthly_usd == (Decimal("0.813") * 30 / 7).quantize(Decimal("1e-12"))
    kinds = {k.kind: k for k in advice.kinds}
    for name, k in kinds.items():
        assert k.spend_usd == report.kinds[name].cost_usd
        assert k.cascades[0].failure == report.kinds[name].escalation
    v = {(x.topic, x.kind): x for x in advice.verdicts}
    # the same tokens on both tiers: 1 − 274 ÷ 822 = 2/3; extract 19/20 (95% 76–99%) is above
    extract = v[("break_even", "extract")]
    assert extract.verdict == "start on mid" and "= 66.7%" in extract.evidence
    assert extract.suggestion is not None and 'floor = "mid"' in extract.suggestion
    assert v[("break_even", "classify")].verdict == "starting on cheap pays"  # 1/40
    quality = v[("quality", "extract")]  # 3 of 20 accepted answers needed frontier
    assert "needed_frontier on 3 of 20" in quality.evidence
    assert v[("signal", "classify")].verdict == "cheap signal"
    assert v[("spend", None)].pays is False  # $3.42 a month
    assert advice.pays is False


def test_advise_cli_reads_the_ledger_and_takes_hints(
    history: tuple[str, Ledger], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    hints = tmp_path / "hints.toml"
    hints.write_text("[kinds.classify]\nshare = 0\nsame_answer = true\n")
    window = ["--since", "2026-05-04", "--until", "2026-05-11"]
    code, out, err = run("advise", "--ledger", history[0], "--policy", str(policy), *window,
                         "--workload", str(hints))  # fmt: skip
    assert code == 0, err
    assert "consistency [classify]: pin" in out and "break_even [extract]: start on mid" in out
