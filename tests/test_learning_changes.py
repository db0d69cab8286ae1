"""Applied changes, reverts and overrides, on SQLite and PostgreSQL: the effective policy is the
file plus the changes in force, its revision is recorded on every task, a library process
follows a change without a restart, ``suggest`` never changes routing, ``revert`` gives back
the previous revision exactly, and a person's override beats the learner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cascade import Cascade
from tierwise.cli import build_app
from tierwise.errors import PolicyChangeError
from tierwise.learning import (
    apply_change,
    effective_policy,
    propose,
    revert_change,
    set_floor,
)
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import record_task
from tierwise.policy import Policy, loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import upstream_policy_text

FLEET = """
[validators.json]
type = "json"

[defaults]
doubt = "cheap"
validators = ["json"]

[fleet]
min_sample = 20
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def book(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    with open_ledger(ledger_url, now=clock) as ledger:
        yield ledger


def served(fake_upstream: FakeUpstream, fleet: str = "", extra: str = "") -> Policy:
    """A policy served by the fake upstream, whose every model answers JSON."""
    fake_upstream.reset({m: "json" for m in ("claude-haiku-4-5", "claude-sonnet-4-6")})
    text = upstream_policy_text(fake_upstream, extra=FLEET + fleet + "\n" + extra)
    return loads_policy(text)


def failing(book: Ledger, kind: str = "extract", n: int = 30) -> None:
    """*n* tasks of *kind* that all failed on cheap and passed on mid."""
    for _ in range(n):
        record_task(book, kind=kind, outcomes=["rejected", "accepted"], costs=["0.001", "0.003"])


def test_apply_then_revert_gives_back_the_revision_exactly(
    book: Ledger, fake_upstream: FakeUpstream
) -> None:
    pol = served(fake_upstream)
    failing(book)
    (item,) = propose(book, pol).proposed
    assert item.change is not None
    before, _ = effective_policy(pol, book)
    assert before.revision == pol.revision  # nothing applied yet: the file's own revision

    applied = apply_change(book, pol, item.change.id, actor="alice")
    after, changes = effective_policy(pol, book)
    assert (applied.status, applied.actor) == ("applied", "alice")
    assert applied.revision_before == pol.revision
    assert applied.revision_after == after.revision != pol.revision
    assert changes.ids == (item.change.id,) and after.kind("extract").floor == "mid"
    assert after.kind("extract").floor_source == "learned"
    recorded = book.policy_revision(after.revision)  # explain can look it up
    assert recorded is not None and recorded["source"].endswith(f"+ changes #{item.change.id}")
    assert json.loads(recorded["policy_json"])["kinds"]["extract"]["floor"] == "mid"

    override = set_floor(book, pol, "chat", "strong", reason="launch week", actor="bob")
    assert override.revision_before == after.revision

    lifted = revert_change(book, pol, override.id, actor="bob", reason="launch over")
    now, _ = effective_policy(pol, book)
    assert lifted.revision_after == now.revision == after.revision  # exactly the one before
    undone = revert_change(book, pol, item.change.id, actor="alice")
    now, changes = effective_policy(pol, book)
    assert undone.revision_after == now.revision == pol.revision and changes.ids == ()
    assert now.model == pol.model  # the effective policy is the file again, to the byte
    statuses = {c.id: (c.action, c.status) for c in book.policy_changes()}
    assert statuses[item.change.id] == ("promote", "reverted")
    assert statuses[undone.id] == ("revert", "applied")
    assert book.policy_change(undone.id).reverts == item.change.id  # type: ignore[union-attr]

    with pytest.raises(PolicyChangeError, match="only an applied change can be reverted"):
        revert_change(book, pol, item.change.id, actor="alice")
    with pytest.raises(PolicyChangeError) as unknown:
        revert_change(book, pol, 9999, actor="alice")
    assert unknown.value.unknown


def test_changes_are_reverted_in_order(book: Ledger, fake_upstream: FakeUpstream) -> None:
    pol = served(fake_upstream)
    first = set_floor(book, pol, "extract", "mid", reason="r1", actor="a")
    second = set_floor(book, pol, "extract", "strong", reason="r2", actor="a")
    with pytest.raises(PolicyChangeError, match=f"revert #{second.id} first"):
        revert_change(book, pol, first.id, actor="a")
    back = revert_change(book, pol, second.id, actor="a")
    assert back.revision_after == first.revision_after
    assert effective_policy(pol, book)[0].kind("extract").floor == "mid"


def test_a_stale_proposal_is_refused(book: Ledger, fake_upstream: FakeUpstream) -> None:
    pol = served(fake_upstream)
    failing(book)
    (item,) = propose(book, pol).proposed
    assert item.change is not None
    # the team edits the file: extract already starts on mid
    edited = served(fake_upstream, extra='[kinds.extract]\nfloor = "mid"\n')
    with pytest.raises(PolicyChangeError, match="is stale: it moves extract from no floor"):
        apply_change(book, edited, item.change.id, actor="alice")
    assert book.policy_change(item.change.id).status == "proposed"  # type: ignore[union-attr]


def test_suggest_mode_never_changes_routing(
    book: Ledger, fake_upstream: FakeUpstream, upstream_env: dict[str, str]
) -> None:
    pol = served(fake_upstream)
    assert pol.model.fleet.mode == "suggest"
    failing(book)
    with Cascade(pol, ledger=book, env=upstream_env, changes_poll_s=0) as cascade:
        run = propose(book, pol)
        assert [p.proposal.floor_after for p in run.proposed] == ["mid"]
        assert run.applied == ()
        assert cascade.decide(Task.create("extract", "x")).tier == "cheap"
        result = cascade.run(Task.create("extract", "Invoice 1"))
        assert result.decision.tier == "cheap"
        assert cascade.policy.revision == pol.revision
        task = book.task(result.task_id)
        assert task is not None and task["policy_revision"] == pol.revision
    assert effective_policy(pol, book)[0].revision == pol.revision


def test_auto_mode_applies_and_a_library_process_follows_without_restart(
    book: Ledger, fake_upstream: FakeUpstream, upstream_env: dict[str, str]
) -> None:
    pol = served(fake_upstream, 'mode = "auto"\n')
    failing(book)
    with Cascade(pol, ledger=book, env=upstream_env, changes_poll_s=0) as cascade:
        assert cascade.decide(Task.create("extract", "x")).tier == "cheap"
        run = propose(book, pol)
        (applied,) = run.applied
        assert applied.actor == "learner (auto)" and applied.status == "applied"
        result = cascade.run(Task.create("extract", "Invoice 2"))  # the next run follows
        assert result.decision.tier == "mid" and result.decision.floor_source == "learned"
        assert cascade.policy.revision == applied.revision_after
        task = book.task(result.task_id)
        assert task is not None and task["policy_revision"] == applied.revision_after


def test_a_cascade_polls_at_most_as_often_as_told(
    book: Ledger, fake_upstream: FakeUpstream, upstream_env: dict[str, str]
) -> None:
    pol = served(fake_upstream)
    with Cascade(pol, ledger=book, env=upstream_env, changes_poll_s=3600) as cascade:
        set_floor(book, pol, "extract", "mid", reason="r", actor="a")
        assert cascade.decide(Task.create("extract", "x")).tier == "cheap"
        cascade.run(Task.create("extract", "Invoice 3"))  # within the hour: not read again
        assert cascade.policy.revision == pol.revision
        assert cascade.follow(book.applied_changes())  # what the poll does when it is due
        assert cascade.decide(Task.create("extract", "x")).floor_source == "override"
    with Cascade(pol, ledger=book, env=upstream_env, follow_changes=False) as fixed:
        assert fixed.decide(Task.create("extract", "x")).tier == "cheap"


def test_an_override_beats_an_auto_proposal(
    book: Ledger, clock: Clock, fake_upstream: FakeUpstream
) -> None:
    pol = served(fake_upstream, 'mode = "auto"\n')

    def learn() -> tuple[tuple[str, str], ...]:
        run = propose(book, pol, until=clock.now + timedelta(seconds=1))
        return tuple((c.action, c.floor_after or "-") for c in run.applied)

    failing(book)
    held = set_floor(
        book, pol, "extract", "cheap", reason="cost freeze", actor="cfo", now=clock.now
    )
    assert learn() == ()
    run = propose(book, pol, until=clock.now + timedelta(seconds=1))
    assert [(h.kind, h.reason) for h in run.holds] == [("extract", "override")]
    assert effective_policy(pol, book)[0].kind("extract").floor == "cheap"

    revert_change(book, pol, held.id, actor="cfo")  # lifted: the learner may move it again
    clock.now += timedelta(days=8)  # past the cool-down that the lift started
    failing(book)
    assert learn() == (("promote", "mid"),)
    assert effective_policy(pol, book)[0].kind("extract").floor == "mid"
    applied = book.policy_changes(status="applied")[0]

    # an override on top of an applied learner change hides it while it lasts
    until = clock.now + timedelta(days=2)
    set_floor(
        book, pol, "extract", "strong", reason="audit", actor="cfo", until=until, now=clock.now
    )
    assert effective_policy(pol, book)[0].kind("extract").floor == "strong"
    clock.now += timedelta(days=1)
    failing(book)
    assert learn() == ()
    clock.now = until + timedelta(seconds=1)  # expired: the learner's floor is back
    effective, changes = effective_policy(pol, book)
    assert effective.kind("extract").floor == "mid" and changes.ids == (applied.id,)
    assert effective.revision == applied.revision_after


def test_apply_is_refused_while_an_override_holds_the_kind(
    book: Ledger, fake_upstream: FakeUpstream
) -> None:
    pol = served(fake_upstream)
    failing(book)
    (item,) = propose(book, pol).proposed
    assert item.change is not None
    held = set_floor(book, pol, "extract", "cheap", reason="freeze", actor="cfo")
    with pytest.raises(
        PolicyChangeError, match=f"lift it first with `tierwise learn revert {held.id}`"
    ):
        apply_change(book, pol, item.change.id, actor="alice")


def test_bad_overrides_are_refused(book: Ledger, fake_upstream: FakeUpstream) -> None:
    pol = served(fake_upstream)
    for kind, floor, reason, until, message in (
        ("extract", "huge", "r", None, "unknown tier 'huge'; the ladder is cheap, mid, strong"),
        ("bad kind!", "mid", "r", None, "kind 'bad kind!'"),
        ("extract", "mid", "  ", None, "needs a reason"),
        ("extract", "mid", "r", datetime(2000, 1, 1, tzinfo=UTC), "is not in the future"),
    ):
        with pytest.raises(PolicyChangeError, match=message):
            set_floor(book, pol, kind, floor, reason=reason, actor="a", until=until)
    assert book.policy_changes() == []


def test_pending_proposals_follow_the_evidence(
    book: Ledger, clock: Clock, fake_upstream: FakeUpstream
) -> None:
    pol = served(fake_upstream)
    failing(book)
    first = propose(book, pol).proposed[0].change
    again = propose(book, pol).proposed[0]
    assert again.change is not None and first is not None
    assert (again.change.id, again.new) == (first.id, False)  # refreshed, not duplicated
    assert len(book.policy_changes(status="proposed")) == 1
    clock.now += timedelta(days=20)  # the window moved on: no evidence left
    run = propose(book, pol, until=clock.now)
    assert run.proposed == ()
    (gone,) = run.withdrawn
    assert gone.status == "rejected" and "the evidence no longer holds" in (gone.reason or "")


# -- the CLI ------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        build_app(), list(args), env={"COLUMNS": "120", "TIERWISE_ACTOR": "carol"}
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_learn_commands_from_the_command_line(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    policy_file = tmp_path / "tierwise.toml"
    policy_file.write_text(upstream_policy_text(fake_upstream, extra=FLEET))
    db = tmp_path / "ledger.db"
    with open_ledger(db) as book:
        failing(book)
    common = ("-p", str(policy_file), "-l", str(db))

    code, out, err = _cli("learn", "propose", *common)
    assert code == 0, err
    assert "promote new #1" in out and "tierwise learn apply 1" in out
    assert '[kinds.extract]\n    floor = "mid"  # was: no floor' in out
    code, out, _ = _cli("learn", "propose", "--dry-run", "--json", *common)
    data = json.loads(out)
    assert data["dry_run"] and data["proposals"][0]["id"] is None

    code, out, err = _cli("learn", "apply", "1", "--json", *common)
    assert code == 0, err
    applied = json.loads(out)
    assert (applied["status"], applied["actor"], applied["floor_after"]) == (
        "applied",
        "carol",
        "mid",
    )
    code, _, err = _cli("learn", "apply", "1", *common)
    assert code == 1 and "only a proposed change can be applied" in err
    code, _, err = _cli("learn", "apply", "42", *common)
    assert code == 2 and "no policy change #42" in err
    code, _, err = _cli("learn", "apply", "one", *common)
    assert code == 2 and "expected a change id" in err

    code, out, err = _cli(
        "learn", "set", "chat", "--floor", "strong", "--reason", "VIP week", "--until", "7d",
        "--actor", "dave", *common,
    )  # fmt: skip
    assert code == 0, err
    assert "override #2: chat: no floor → strong until" in out and "(kind 'chat' is not" in out
    code, _, err = _cli("learn", "set", "chat", "--floor", "top", "--reason", "x", *common)
    assert code == 2 and "unknown tier 'top'" in err

    code, out, err = _cli("learn", "revert", "2", "--reason", "done early", *common)
    assert code == 0, err
    assert "reverted #2 (audited as #3)" in out

    code, out, err = _cli("learn", "history", "--json", *common)
    assert code == 0, err
    history = json.loads(out)
    assert history["in_force"] == [1] and history["floors"] == {"extract": "mid"}
    assert [(c["id"], c["action"], c["status"]) for c in history["changes"]] == [
        (3, "revert", "applied"),
        (2, "set", "reverted"),
        (1, "promote", "applied"),
    ]
    assert history["changes"][1]["actor"] == "dave" and history["changes"][0]["actor"] == "carol"
    code, out, _ = _cli("learn", "history", "--kind", "extract", *common)
    assert code == 0 and "promote" in out and "revert" not in out
