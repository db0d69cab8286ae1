#!/usr/bin/env bash
# Install tierwise with its test extras into ./.venv and run ruff, mypy and the whole pytest suite.
#
# The ledger tests also run against a real PostgreSQL server, which the tests start themselves
# (a throwaway cluster in a temporary folder, on a free loopback port). They need the server
# binaries: under CI=true as root, Debian's `postgresql` package is installed when they are
# missing; elsewhere the PostgreSQL cases skip with the reason (or set
# TIERWISE_TEST_POSTGRES_URL to a server of your own).
#
# The dashboard's browser tests drive Debian's headless Chromium through its chromedriver
# (never a browser a test tool downloads): under CI=true as root, `chromium` and
# `chromium-driver` are installed when missing; elsewhere those tests skip with the reason (or
# set TIERWISE_CHROMIUM / TIERWISE_CHROMEDRIVER to your own binaries). Their screenshots are
# kept in ./artifacts/ (or $TIERWISE_ARTIFACTS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() {
    [ -n "${TIERWISE_TEST_POSTGRES_URL:-}" ] && return 0
    [ -n "${TIERWISE_PG_BINDIR:-}" ] && [ -x "${TIERWISE_PG_BINDIR}/initdb" ] && return 0
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_chromium() {
    [ -x "${TIERWISE_CHROMIUM:-/usr/bin/chromium}" ] &&
        [ -x "${TIERWISE_CHROMEDRIVER:-/usr/bin/chromedriver}" ]
}
missing=()
if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ]; then
    have_postgres || missing+=(postgresql)
    have_chromium || missing+=(chromium chromium-driver fonts-liberation)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian's packages) for the ledger and dashboard tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
