"""Where the shared fake-upstream fixtures live, for readers looking under ``tests/``.

They ship in the package, :mod:`tierwise.testing.pytest_plugin`, and ``conftest.py`` enables
them for every test (``--import-mode=importlib`` cannot import a plain module from ``tests/``):

* ``fake_upstream`` — the session's running :class:`~tierwise.testing.FakeUpstream`, reset for
  each test; script it with ``set_script(model, ModelScript(...))`` / ``add_faults(model, ...)``.
* ``fake_upstream_server`` — the same server without the reset (session scope).
* ``upstream_policy`` — cheap/mid/strong Anthropic tiers (``claude-haiku-4-5``,
  ``claude-sonnet-4-6``, ``claude-opus-4-6``) served by ``fake_upstream``; retries don't wait.
* ``upstream_env`` — ``{"TIERWISE_TEST_KEY": "test"}``: pass it as ``env=`` to ``Cascade`` or
  ``ProviderPool``.
* ``fake_clock`` — a :class:`~tierwise.testing.FakeClock`.

For other ladders, build the policy with :func:`tierwise.testing.upstream_policy`
(``provider="openai"``, ``tiers=[...]``, ``extra="...TOML..."``).
"""

from __future__ import annotations

from tierwise.testing.pytest_plugin import (
    fake_clock,
    fake_upstream,
    fake_upstream_server,
    upstream_env,
    upstream_policy,
)

__all__ = ["fake_clock", "fake_upstream", "fake_upstream_server", "upstream_env", "upstream_policy"]
