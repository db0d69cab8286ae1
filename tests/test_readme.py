"""The README's library example runs as written (against the fake upstream)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tierwise.testing import FakeUpstream, ModelScript
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_example_runs(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "Cascade(" in b)
    extra = (
        '[[rules]]\nwhen = { kind = "extract" }\ntier = "cheap"\n'
        '[validators.json]\ntype = "json"\n[kinds.extract]\nvalidators = ["json"]\n'
    )
    (tmp_path / "tierwise.toml").write_text(upstream_policy_text(fake_upstream, extra=extra))
    fake_upstream.set_script("claude-haiku-4-5", ModelScript(reply="ACME owes 10 EUR"))
    fake_upstream.set_script("claude-sonnet-4-6", ModelScript(reply='{"vendor": "ACME"}'))
    monkeypatch.setenv(TEST_KEY_ENV, "test")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert '{"vendor": "ACME"} mid' in out
    assert "cheap rejected" in out and "mid accepted" in out
