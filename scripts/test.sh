#!/usr/bin/env bash
# Install tierwise with its test extras into ./.venv and run ruff, mypy and the whole pytest suite.
#
# The ledger tests also run against a real PostgreSQL server, which the tests start themselves
# (a throwaway cluster in a temporary folder, on a free loopback port). They need the server
# binaries: under CI=true as root, Debian's `postgresql` package is installed when they are
# missing; elsewhere the PostgreSQL cases skip with the reason (or set
# TIERWISE_TEST_POSTGRES_URL to a server of your own).
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() {
    [ -n "${TIERWISE_TEST_POSTGRES_URL:-}" ] && return 0
    [ -n "${TIERWISE_PG_BINDIR:-}" ] && [ -x "${TIERWISE_PG_BINDIR}/initdb" ] && return 0
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] && ! have_postgres; then
    echo "installing PostgreSQL (Debian's postgresql package) for the ledger tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
