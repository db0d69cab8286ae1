"""Shared fixtures."""

from __future__ import annotations

# The fake upstream's fixtures (fake_upstream, upstream_policy, upstream_env, fake_clock), shipped
# in the package so library users can enable them the same way.
pytest_plugins = ["tierwise.testing.pytest_plugin"]
