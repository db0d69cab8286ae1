"""Agreement between tiers, from the library: scripted answers whose rates were worked out by
hand, on SQLite and PostgreSQL; the comparison by answer format; sampling by task id; flags."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierwise.cascade import Cascade
from tierwise.cascade.compare import compare_answers, token_overlap
from tierwise.cascade.shadow import sampled
from tierwise.cli import build_app
from tierwise.evaluation.export import ledger_rows
from tierwise.ledger import open_ledger
from tierwise.policy import loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript, request_texts
from tierwise.testing.policies import upstream_policy_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
#: What each tier answers to ticket #0..#9 (label format; the regex check accepts the three
#: labels, so "banana" is rejected and ticket 8 climbs to mid).
CHEAP_SAYS = ["billing"] * 6 + ["Billing.", " BILLING "] + ["banana", "shipping"]
MID_SAYS = ["billing"] * 10
STRONG_SAYS = ["billing"] * 9 + ["refund"]

KIND = """
[kinds.classify]
doubt = "cheap"
answer = "label"
shadow = 1.0
validators = [{ type = "regex", pattern = "(?i)^\\\\s*(billing|shipping|refund)\\\\b" }]
"""


def _says(answers: list[str]) -> ModelScript:
    def reply(request: dict[str, Any]) -> str:
        # the ticket's number, from the task's own turn (a climb adds a handoff note after it)
        found = re.search(r"ticket #(\d+)", " ".join(request_texts(request)))
        assert found is not None
        return answers[int(found.group(1))]

    return ModelScript(reply=reply)


def _run_tickets(up: FakeUpstream, url: str, env: dict[str, str]) -> list[str]:
    up.set_script(CHEAP, _says(CHEAP_SAYS))
    up.set_script(MID, _says(MID_SAYS))
    up.set_script(STRONG, _says(STRONG_SAYS))
    policy = loads_policy(upstream_policy_text(up, extra=KIND))
    ids = []
    with open_ledger(url) as ledger, Cascade(policy, ledger=ledger, env=env) as cascade:
        for i in range(10):
            result = cascade.run(Task.create("classify", f"Which team handles ticket #{i}"))
            shadow = cascade.shadow(result)
            assert shadow.status == "done", shadow.reason
            untried = 1 if i == 8 else 2
            assert len(shadow.answers) == untried
            assert len(shadow.agreements) == 3  # every pair of cheap, mid and strong
            ids.append(result.task_id)
    return ids


def _wilson(entry: dict[str, Any]) -> tuple[int, int, float, float]:
    return entry["count"], entry["of"], round(entry["low"], 3), round(entry["high"], 3)


def test_agreement_rates_match_the_scripted_answers(
    fake_upstream: FakeUpstream, ledger_url: str, upstream_env: dict[str, str]
) -> None:
    ids = _run_tickets(fake_upstream, ledger_url, upstream_env)
    result = CliRunner().invoke(build_app(), ["ledger", "agreement", "-l", ledger_url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    pairs = {(p["low_tier"], p["high_tier"]): p for p in data["pairs"]}
    # Worked out by hand from the three lists above; Wilson 95% intervals from a table:
    # 8/10 → [0.490, 0.943], 9/10 → [0.596, 0.982], 10/10 → [0.722, 1.000].
    cm = pairs[("cheap", "mid")]
    assert cm["methods"] == {"label": 10}
    assert _wilson(cm["agree"]) == (8, 10, 0.490, 0.943)  # banana, shipping differ
    assert _wilson(cm["both_passed"]) == (9, 10, 0.596, 0.982)  # banana failed the check
    assert _wilson(cm["low_as_good"]) == (8, 10, 0.490, 0.943)
    assert cm["decided"] == 1 and cm["high_right"]["count"] == 1  # only the check decided
    cs = pairs[("cheap", "strong")]
    assert _wilson(cs["agree"]) == (8, 10, 0.490, 0.943)
    assert cs["decided"] == 1 and cs["high_right"]["count"] == 1
    ms = pairs[("mid", "strong")]
    assert _wilson(ms["agree"]) == (9, 10, 0.596, 0.982)  # billing vs refund on #9
    assert _wilson(ms["both_passed"]) == (10, 10, 0.722, 1.0)
    assert ms["decided"] == 0  # both passed where they differ: nobody can tell
    assert data["shadow"]["attempts"] == 19  # 9 tasks × mid and strong, ticket 8 × strong
    from tierwise.reports.explain import explain_task, render_explanation

    with open_ledger(ledger_url) as book:
        task = book.task(ids[8])
        explained = explain_task(book, ids[8])
        assert book.integrity_check() == []  # shadow rows are not the task's cost or count
    assert task is not None and explained["attempts_cost_usd"] == task["cost_usd"]
    assert explained["shadow_cost_usd"] > 0  # the strong shadow call, on its own line
    text = render_explanation(explained)
    assert "cheap vs mid: differ (label; fail/pass)" in text
    assert "mid vs strong: agree (label; pass/pass)" in text


def test_a_wrong_flag_decides_which_tier_was_right_and_scores_the_export(
    fake_upstream: FakeUpstream, ledger_url: str, upstream_env: dict[str, str]
) -> None:
    ids = _run_tickets(fake_upstream, ledger_url, upstream_env)
    with open_ledger(ledger_url) as book:
        assert book.wrong_flags() == set()
        # someone flags ticket 9's answer wrong (and another task as needing the frontier)
        assert book.record_feedback(ids[9], "wrong", author="ops") is not None
        assert book.record_feedback(ids[3], "needed_frontier", author="ops") is not None
        assert book.wrong_flags() == {ids[9]}
    with open_ledger(ledger_url) as book:
        pairs = {(p["low_tier"], p["high_tier"]): p for p in book.agreement()}
        rows = {r.prompt_id: r for r in ledger_rows(book)}
    cm = pairs[("cheap", "mid")]
    assert cm["decided"] == 2 and cm["high_right"]["count"] == 2 and cm["flagged"] == 1
    assert pairs[("mid", "strong")]["decided"] == 0  # the flag is on cheap's answer only
    flagged = rows[ids[9]]
    assert flagged.results[CHEAP].score == 0.0  # delivered, then flagged wrong
    assert flagged.results[MID].score == flagged.results[STRONG].score == 1.0
    assert flagged.served is not None and flagged.served.score == 0.0
    assert rows[ids[0]].served is not None and rows[ids[0]].served.score == 1.0


def test_without_stored_content_agreement_still_counts_and_eval_says_what_it_lacks(
    fake_upstream: FakeUpstream, tmp_path: Path, upstream_env: dict[str, str]
) -> None:
    """store_content = false: no text in the ledger, verdicts all the same; eval compares the
    strategies that need no text and says which it skipped."""
    db = str(tmp_path / "ledger.db")
    _run_tickets(fake_upstream, db, upstream_env)
    with open_ledger(db) as book:
        assert all(a["output"] is None for a in book.iter_attempts())
        assert sum(p["pairs"] for p in book.agreement()) == 30
    out = tmp_path / "logs" / "fleet.jsonl"
    runner = CliRunner()
    exported = runner.invoke(build_app(), ["ledger", "export", "-l", db, "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    assert "no prompt text" in exported.output
    evaluated = runner.invoke(build_app(), ["eval", str(out.parent), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output[evaluated.output.index("{") :])
    names = {s["name"] for s in report["strategies"]}
    assert "current policy (as served)" in names and "oracle (bound)" in names
    assert "no prompt text: no learned router" in report["notes"]
    assert any("no response text" in n for n in report["notes"])


def test_eval_keeps_the_rows_with_every_tier_and_says_how_many(tmp_path: Path) -> None:
    """Rows without a result for some tier are left out with a note (no shadow mode: the ledger
    only has the tiers each task tried); none at all is an error that says why."""
    head = {"tierwise_eval": 1, "ladder": {"cheap": "a", "strong": "b"}}
    rows = [head]
    for i in range(40):
        results = {"a": {"score": 1, "cost_usd": "0.001"}}
        if i % 4 == 0:
            results["b"] = {"score": 1, "cost_usd": "0.01"}
        served = {
            "tier": "cheap",
            "model": "a",
            "score": 1,
            "cost_usd": "0.001",
            "tiers": ["cheap"],
        }
        rows.append({"prompt_id": f"t{i}", "kind": "k", "results": results, "served": served})
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "fleet.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = CliRunner().invoke(build_app(), ["eval", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["strategies"][0]["n"] == 10
    note = next(n for n in report["notes"] if n.startswith("kept 10 of 40 rows"))
    assert "lack strong (b) on 30" in note and "shadow = 0.05" in note
    for i, row in enumerate(rows[1:]):  # now no row has both: each task tried one tier
        row["results"].pop("b" if i % 2 else "a", None)  # type: ignore[attr-defined]
    (folder / "fleet.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    failed = CliRunner().invoke(build_app(), ["eval", str(folder)])
    assert failed.exit_code == 2
    assert "no rows to compare strategies on: kept 0 of 40 rows" in failed.output
    assert "lack cheap (a) on 20, strong (b) on 30" in failed.output


@pytest.mark.parametrize(
    ("a", "b", "fmt", "agree"),
    [
        ("Billing.", "billing", "label", True),
        ("billing", "billing team", "label", False),
        ("The answer is (C).", "C", "choice", True),
        ("The answer is (C).", "B", "choice", False),
        ('{"a": 1, "b": [1, 2]}', '```json\n{"b": [1, 2], "a": 1}\n```', "json", True),
        ('{"a": 1}', '{"a": 1.5}', "json", False),
        ("so the total is 3.50", "#### 3.5", "number", True),
        ("3", "4", "number", False),
        ("not json", "{}", "json", False),
    ],
)
def test_answers_compare_by_the_kinds_format(a: str, b: str, fmt: str, agree: bool) -> None:
    assert compare_answers(a, b, fmt).agree is agree
    assert compare_answers(b, a, fmt).agree is agree


def test_free_text_agrees_at_the_stated_token_overlap() -> None:
    a = "Refunds are processed within five business days."
    b = "Refunds are processed within 5 business days."
    # tokens: {refunds, are, processed, within, business, days} shared; five / 5 differ: 6/8
    assert token_overlap(a, b) == pytest.approx(6 / 8)
    found = compare_answers(a, b, "text", similarity=0.6)
    assert found.agree is True and found.method == "text≥0.6" and found.similarity == 0.75
    assert compare_answers(a, b, "text", similarity=0.8).agree is False
    assert compare_answers("nothing to compare", "", "text").agree is False
    assert compare_answers("no letter here", "none", "choice").agree is None


def test_sampling_is_decided_by_the_task_id_alone() -> None:
    ids = [f"task-{i}" for i in range(4000)]
    picked = [i for i in ids if sampled(i, 0.05)]
    assert 150 <= len(picked) <= 250  # about 5%
    assert picked == [i for i in ids if sampled(i, 0.05)]  # the same every time
    assert set(picked) <= {i for i in ids if sampled(i, 0.10)}  # nested shares
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)


def test_the_library_shadows_only_the_kinds_share_unless_forced(
    fake_upstream: FakeUpstream, upstream_env: dict[str, str]
) -> None:
    text = upstream_policy_text(
        fake_upstream,
        extra='\n[kinds.a]\ndoubt = "cheap"\nshadow = 0.5\n[kinds.b]\ndoubt = "cheap"\n'
        "[budgets]\nshadow_day_usd = 0.000001\n",
    )
    with Cascade(loads_policy(text), env=upstream_env) as cascade:
        out = {}
        for i in range(8):
            task = Task.create("a", f"question {i}")
            result = cascade.run(task)
            out[task.id] = cascade.shadow(result)
        off = cascade.shadow(cascade.run(Task.create("b", "question")))
        forced = cascade.shadow(cascade.run(Task.create("b", "question")), force=True)
    for task_id, run in out.items():
        assert (run.status != "not_sampled") == sampled(task_id, 0.5)
    assert off.status == "off"
    # forced, but the shadow budget (a millionth of a dollar) cannot cover one call: paused
    assert forced.status == "paused" and "shadow_day_usd" in forced.reason and forced.paused
    assert forced.cost_usd == Decimal(0) and not forced.attempts


def test_pruned_days_keep_shadow_spend_on_its_own_line(
    fake_upstream: FakeUpstream, ledger_url: str, upstream_env: dict[str, str]
) -> None:
    from datetime import timedelta

    _run_tickets(fake_upstream, ledger_url, upstream_env)
    with open_ledger(ledger_url) as book:
        before = {(r["tier"], r["role"]): r["cost_usd"] for r in book.daily(role="live")}
        shadow = book.shadow_spend()["spend_usd"]
    later = datetime.now(UTC) + timedelta(days=2)  # a ledger clock at which today is past
    with open_ledger(ledger_url, now=lambda: later) as book:
        pruned = book.prune(later.date() - timedelta(days=1))
        after = {(r["tier"], r["role"]): r["cost_usd"] for r in book.daily(role="live")}
        assert book.integrity_check() == []
    assert pruned.tasks == 10
    assert after == before  # exact, pruned or not
    assert {role for _, role in after} == {"live", "shadow"}
    assert sum((c for (_, role), c in after.items() if role == "shadow"), Decimal(0)) == shadow


def test_a_verdict_spooled_and_replayed_is_written_once(ledger_url: str) -> None:
    """The gateway's writes are rows it may spool while the database is down and replay later
    (perhaps twice, after a crash): a shadow verdict survives the JSON and is written once."""
    from tierwise.ledger.rows import Row
    from tierwise.records import AgreementRecord, TierAnswer

    verdict = AgreementRecord(
        task_id="t-1",
        kind="classify",
        low=TierAnswer("cheap", 0, CHEAP, 0, "live", True),
        high=TierAnswer("strong", 2, STRONG, 1, "shadow", False),
        agree=False,
        method="text≥0.6",
        similarity=0.25,
        created_at=datetime.now(UTC),
    )
    with open_ledger(ledger_url) as book:
        row = Row.from_json(json.loads(json.dumps(book.row_of_agreement(verdict).to_json())))
        book.write_rows([row], replay=True)
        book.write_rows([row], replay=True)
        [found] = book.agreements_of("t-1")
    assert found["agree"] is False and found["similarity"] == 0.25
    assert (found["low_tier"], found["high_tier"], found["high_role"]) == (
        "cheap",
        "strong",
        "shadow",
    )
