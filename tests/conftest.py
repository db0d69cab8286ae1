"""Shared fixtures: the fake upstream (from the package) and ledgers on SQLite and PostgreSQL.

Ledger tests take ``ledger_url`` and run once per backend. The PostgreSQL one is a real server:
``$TIERWISE_TEST_POSTGRES_URL`` (a superuser URL to create databases on) when set, else a
throwaway cluster this session starts itself (:class:`tierwise.testing.postgres.
PostgresCluster`: Debian's binaries, a temporary folder, a free loopback port), one fresh
ledger per test (a role and its schema). Without a server or psycopg the Postgres cases skip
with the reason — and fail under ``CI=true``, where a missing dependency is an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

# The fake upstream's fixtures (fake_upstream, upstream_policy, upstream_env, fake_clock), shipped
# in the package so library users can enable them the same way.
pytest_plugins = ["tierwise.testing.pytest_plugin"]

if TYPE_CHECKING:
    from tierwise.testing.postgres import PostgresCluster

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: runs against a real PostgreSQL server (skips without one)"
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[tuple[str, PostgresCluster | None]]:
    """A superuser URL on a running PostgreSQL server, and the cluster when this session owns it."""
    given = os.environ.get("TIERWISE_TEST_POSTGRES_URL")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'tierwise[postgres]')")
    if given:
        yield given, None
        return
    from tierwise.testing.postgres import PostgresCluster, PostgresUnavailableError

    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailableError as exc:
        cluster.close()
        _unavailable(str(exc))
    try:
        yield cluster.url(), cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres_admin_url(_postgres_server: tuple[str, PostgresCluster | None]) -> str:
    """A superuser URL on the session's PostgreSQL server."""
    return _postgres_server[0]


@pytest.fixture
def postgres_cluster(_postgres_server: tuple[str, PostgresCluster | None]) -> PostgresCluster:
    """The session's own cluster, for tests that stop and start the server (they must leave it
    running). Skipped when the tests use ``$TIERWISE_TEST_POSTGRES_URL``'s server."""
    cluster = _postgres_server[1]
    if cluster is None:
        pytest.skip("the tests use an external server ($TIERWISE_TEST_POSTGRES_URL)")
    return cluster


@pytest.fixture(scope="session")
def postgres_databases(
    _postgres_server: tuple[str, PostgresCluster | None],
) -> Iterator[Callable[[], str]]:
    """Make a fresh, empty ledger database and return its URL.

    Each is a role of its own with a schema of the same name in one test database: the default
    ``search_path`` (``"$user", public``) puts every table there, the URL is a plain one, and
    tierwise runs as an ordinary role, not a superuser. (A database per test would copy the
    template, several megabytes, each time.)
    """
    admin_url, cluster = _postgres_server
    name = f"tierwise_tests_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = sa.make_url(admin_url).set(database=name)
    owner = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    roles: list[str] = []

    def make() -> str:
        role, password = f"tw_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        with owner.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
            conn.exec_driver_sql(f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"')
        roles.append(role)
        return base.set(username=role, password=password).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        owner.dispose()
        if cluster is None:  # an external server: leave nothing behind (ours is deleted whole)
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                for role in roles:
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """The URL of a fresh, empty PostgreSQL ledger database for this test (its own role)."""
    return postgres_databases()


@pytest.fixture
def new_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``new_ledger_url(backend)``: the URL of a fresh ledger on ``sqlite`` or ``postgres``."""

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'ledger-{uuid.uuid4().hex[:8]}.db'}"
        make_db: Callable[[], str] = request.getfixturevalue("postgres_databases")
        return make_db()

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: each test that uses it runs once per ledger backend."""
    return str(request.param)


@pytest.fixture
def ledger_url(backend: str, new_ledger_url: Callable[[str], str]) -> str:
    """A fresh ledger's URL, on each backend in turn (nothing created yet)."""
    return new_ledger_url(backend)


@pytest.fixture
def raw_sql() -> Callable[..., list[tuple[Any, ...]]]:
    """``raw_sql(url, sql, **params)``: run SQL beside the ledger, on its own connection."""

    def run(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(sql), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    return run


@pytest.fixture
def downgrade() -> Callable[[str, str], None]:
    """``downgrade(url, revision)``: take a ledger back to an older schema, as Alembic would."""

    def run(url: str, revision: str) -> None:
        from alembic import command
        from alembic.config import Config

        import tierwise.ledger.engine as engine_module

        engine = sa.create_engine(url, poolclass=sa.NullPool)
        try:
            with engine.begin() as conn:
                config = Config()
                config.set_main_option(
                    "script_location", str(Path(engine_module.__file__).parent / "migrations")
                )
                config.attributes["connection"] = conn
                command.downgrade(config, revision)
        finally:
            engine.dispose()

    return run


#: The one setting that says where the recorded benchmark data lives (never copied into the repo).
DATA_DIR_ENV = "TIERWISE_DATA_DIR"
_REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$TIERWISE_DATA_DIR``, else ``../shared/data``; relative paths are taken from the
    repository root (the parent of ``tests/``), so the answer does not depend on the cwd."""
    configured = os.environ.get(DATA_DIR_ENV) or "../shared/data"
    path = Path(configured).expanduser()
    return path if path.is_absolute() else (_REPO / path).resolve()


@pytest.fixture(scope="session")
def data_path() -> Callable[[str], Path]:
    """``data_path("routerbench_subset")``: a folder of the recorded benchmark data.

    Missing data skips the test with a message naming ``TIERWISE_DATA_DIR``; under
    ``CI=true`` it fails instead, so CI cannot pass without having run these tests.
    """

    def resolve(name: str) -> Path:
        path = shared_data_dir() / name
        if not path.exists():
            message = (
                f"recorded benchmark data not found: {path} does not exist; set "
                f"{DATA_DIR_ENV} to the folder holding routerbench_subset/, routellm/, ... "
                "(default: ../shared/data from the repository root)"
            )
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        return path

    return resolve
