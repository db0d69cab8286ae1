"""pytest fixtures around the fake upstream. Enable with, in a ``conftest.py``::

    pytest_plugins = ["tierwise.testing.pytest_plugin"]

Fixtures:

* ``fake_upstream_server`` (session): one running :class:`FakeUpstream` for the whole run.
* ``fake_upstream``: that server, reset for this test (no scripts, no faults, no recorded
  requests; unknown models echo). Script it with ``set_script`` / ``add_faults``.
* ``upstream_env``: ``{"TIERWISE_TEST_KEY": "test"}``, the env the policies below read keys from.
* ``upstream_policy``: a cheap/mid/strong Anthropic policy served by ``fake_upstream``
  (``claude-haiku-4-5`` / ``claude-sonnet-4-6`` / ``claude-opus-4-6``), retries without waits.
* ``fake_clock``: a :class:`FakeClock` at 0.
* ``upstream_tls`` (session): a throwaway CA and a certificate for ``127.0.0.1``
  (:class:`TLSFiles`; needs ``trustme``).
* ``fake_upstream_tls_server`` (session) / ``fake_upstream_tls``: a second fake upstream serving
  HTTPS with that certificate (the latter reset for this test); clients must trust
  ``upstream_tls.ca_file``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tierwise.testing.clock import FakeClock
from tierwise.testing.policies import TEST_KEY_ENV
from tierwise.testing.policies import upstream_policy as _upstream_policy
from tierwise.testing.server import FakeUpstream, TLSFiles, make_tls

if TYPE_CHECKING:
    from tierwise.policy import Policy


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    """One fake upstream for the whole session."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, reset for this test."""
    fake_upstream_server.reset()
    return fake_upstream_server


@pytest.fixture
def upstream_env() -> dict[str, str]:
    """The environment that holds the key the upstream policies name."""
    return {TEST_KEY_ENV: "test"}


@pytest.fixture
def upstream_policy(fake_upstream: FakeUpstream) -> Policy:
    """A three-tier Anthropic policy served by ``fake_upstream``."""
    return _upstream_policy(fake_upstream)


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fake monotonic clock at 0."""
    return FakeClock()


@pytest.fixture(scope="session")
def upstream_tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a certificate it signed for ``127.0.0.1`` / ``localhost``."""
    return make_tls(tmp_path_factory.mktemp("upstream-tls"))


@pytest.fixture(scope="session")
def fake_upstream_tls_server(upstream_tls: TLSFiles) -> Iterator[FakeUpstream]:
    """One HTTPS fake upstream for the whole session (certificate from ``upstream_tls``)."""
    with FakeUpstream(ssl_certfile=upstream_tls.certfile) as up:
        yield up


@pytest.fixture
def fake_upstream_tls(fake_upstream_tls_server: FakeUpstream) -> FakeUpstream:
    """The session's HTTPS fake upstream, reset for this test."""
    fake_upstream_tls_server.reset()
    return fake_upstream_tls_server
