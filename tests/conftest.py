"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# The fake upstream's fixtures (fake_upstream, upstream_policy, upstream_env, fake_clock), shipped
# in the package so library users can enable them the same way.
pytest_plugins = ["tierwise.testing.pytest_plugin"]

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
