"""Secrets stay out of the ledger: gateway keys are stored hashed, credentials never reach rows.

On SQLite (every byte of the file is searched) and PostgreSQL (every row of every table)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tierwise.cascade import Cascade
from tierwise.cascade.result import Verdict
from tierwise.errors import EscalationExhaustedError, LedgerError
from tierwise.ledger import Ledger, open_ledger
from tierwise.ledger.fixtures import POLICY_REVISION, make_attempt, make_decision
from tierwise.ledger.redact import Redactor, secret_values
from tierwise.policy import loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream, ModelScript


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url) as book:
        yield book


def _ledger_bytes(url: str) -> bytes:
    """SQLite: every byte written (the database, its WAL and shared memory, free pages
    included). PostgreSQL: every row of every table, as text."""
    if url.startswith("sqlite:///"):
        directory = Path(url.removeprefix("sqlite:///")).parent
        return b"".join(p.read_bytes() for p in sorted(directory.glob("*.db*")))
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            rows = [
                str(r[0])
                for name in names
                for r in conn.exec_driver_sql(f'SELECT CAST(t AS TEXT) FROM "{name}" AS t')
            ]
    finally:
        engine.dispose()
    assert rows, "nothing to search"
    return "\n".join(rows).encode()


# -- gateway keys ------------------------------------------------------------------------------


def test_a_created_key_verifies_and_nothing_else_does(ledger: Ledger) -> None:
    assert not ledger.has_api_keys()
    secret = ledger.create_api_key("ci-bot", budget_usd_day=Decimal("2.50"))
    assert secret.startswith("tw_") and len(secret) >= 40
    key = ledger.verify_api_key(secret)
    assert key is not None
    assert (key.name, key.role, key.budget_usd_day) == ("ci-bot", "client", Decimal("2.5"))
    assert secret.startswith(key.prefix)
    assert ledger.has_api_keys()
    for wrong in (secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret + "x", "", "tw_"):
        assert ledger.verify_api_key(wrong) is None
    other = ledger.create_api_key("admin", role="admin")
    assert ledger.verify_api_key(other).name == "admin"  # type: ignore[union-attr]
    assert [k.name for k in ledger.list_api_keys()] == ["ci-bot", "admin"]


def test_a_revoked_key_no_longer_verifies(ledger: Ledger) -> None:
    secret = ledger.create_api_key("temp")
    assert ledger.revoke_api_key("temp")
    assert not ledger.revoke_api_key("temp")
    assert ledger.verify_api_key(secret) is None
    assert not ledger.has_api_keys()
    assert [k.name for k in ledger.list_api_keys(include_revoked=True)] == ["temp"]


def test_key_names_are_unique_and_inputs_checked(ledger: Ledger) -> None:
    ledger.create_api_key("a")
    with pytest.raises(LedgerError, match="already exists"):
        ledger.create_api_key("a")
    with pytest.raises(ValueError):
        ledger.create_api_key(" ")
    with pytest.raises(ValueError):
        ledger.create_api_key("b", role="Root User")
    with pytest.raises(ValueError):
        ledger.create_api_key("c", budget_usd_day=Decimal(0))


def test_only_a_hash_and_a_prefix_of_a_key_are_stored(ledger_url: str) -> None:
    with open_ledger(ledger_url) as book:
        secrets_made = [book.create_api_key(f"k{i}") for i in range(3)]
        prefixes = [k.prefix for k in book.list_api_keys()]
    raw = _ledger_bytes(ledger_url)
    assert all(prefix.encode() in raw for prefix in prefixes)  # the search sees the rows
    for secret, prefix in zip(secrets_made, prefixes, strict=True):
        assert secret.encode() not in raw
        assert secret[len(prefix) :].encode() not in raw
        assert secret[len(prefix) : len(prefix) + 12].encode() not in raw


# -- credentials never land in rows ------------------------------------------------------------


def test_redactor_masks_key_shapes_and_known_values() -> None:
    value = "hunter2-" + secrets.token_hex(8)
    redact = Redactor(secret_values({"MY_SERVICE_TOKEN": value, "HOME": "/root/somewhere"}))
    text = (
        f"failed with {value}; key sk-ant-api03-{secrets.token_hex(12)}; "
        f"Authorization: Bearer abc.def-{secrets.token_hex(6)}; api_key={secrets.token_hex(6)}; "
        f"tw_{secrets.token_urlsafe(32)}"
    )
    masked = redact(text)
    assert masked is not None
    assert value not in masked and "sk-ant" not in masked and "tw_" not in masked
    assert "Bearer abc" not in masked and "api_key=[redacted]" in masked
    assert redact("/root/somewhere is a path") == "/root/somewhere is a path"
    assert redact(None) is None


def test_secret_env_values_never_land_in_rows_even_when_errors_quote_them(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "svc-" + secrets.token_hex(16)
    monkeypatch.setenv("TIERWISE_TEST_UPSTREAM_API_KEY", value)
    with open_ledger(ledger_url) as book:
        task = Task.create("extract", f"prompt that quotes {value}")
        book.record_policy_revision(POLICY_REVISION, "{}", None)
        book.begin_task(
            task,
            make_decision("extract"),
            policy_revision=POLICY_REVISION,
            role="live",
            store_content=True,
        )
        attempt = replace(
            make_attempt(task, 0, outcome="error", output=f"echo {value}"),
            failure=f"upstream said: invalid key {value}",
            verdicts=(Verdict("judge", False, f"judge saw {value}"),),
        )
        book.record_attempt(attempt, store_content=True)
        book.finish_task(
            task.id,
            outcome="exhausted",
            final_tier=None,
            cost_usd=attempt.cost_usd,
            latency_s=0.1,
            attempts=1,
            output=f"final {value}",
            store_content=True,
        )
        stored = book.attempts_of(task.id)[0]
    assert "[redacted]" in (stored["failure"] or "")
    assert value.encode() not in _ledger_bytes(ledger_url)


def test_a_cascade_run_with_provider_keys_leaves_no_key_in_the_ledger(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the real SDK sends the key upstream; the ledger never sees it."""
    key = "sk-ant-" + secrets.token_hex(20)
    monkeypatch.setenv("TW_SECRET_TEST_KEY", key)
    models = {
        "claude-haiku-4-5": ModelScript(reply="not json at all"),
        "claude-sonnet-4-6": ModelScript(faults=("500:always",)),
    }
    with FakeUpstream(models, default=None, require_key=key) as up:
        tiers = "".join(
            f"""
[[tiers]]
name = "{name}"
provider = "anthropic"
model = "{model}"
base_url = "{up.base_url}"
api_key_env = "TW_SECRET_TEST_KEY"
"""
            for name, model in (("cheap", "claude-haiku-4-5"), ("mid", "claude-sonnet-4-6"))
        )
        policy = loads_policy(
            "version = 1\nstore_content = true\n"
            + tiers
            + """
[retry]
attempts = 1
backoff_s = 0.0
max_backoff_s = 0.0
[[rules]]
when = { kind = "extract" }
tier = "cheap"
[budgets]
task_usd = 5
[validators.j]
type = "json"
[kinds.extract]
validators = ["j"]
"""
        )
        with (
            open_ledger(ledger_url) as book,
            Cascade(policy, ledger=book, env=dict(os.environ)) as cascade,
        ):
            with pytest.raises(EscalationExhaustedError):
                cascade.run(Task.create("extract", "Invoice 1: total 3 EUR"))
            trail = book.tail(10)
        assert up.requests_for("claude-haiku-4-5"), "the upstream was really called"
    assert [a["outcome"] for a in trail] == ["rejected", "error"]
    assert key.encode() not in _ledger_bytes(ledger_url)
