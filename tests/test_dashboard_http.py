"""The dashboard over HTTP: a read-only page without a session; sign-in checks the admin key once
and sets an HttpOnly, SameSite=Strict cookie holding a session secret (never the key); sign-out
and apply need that session and its CSRF token; cross-site posts are refused; sessions live in
the ledger, so a second gateway on it accepts them; nothing secret is logged."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.demo import demo_tasks, run_demo
from tierwise.gateway import GatewayConfig
from tierwise.gateway.dashboard import SESSION_COOKIE, create_dashboard_app, csrf_token
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import default_policy, default_policy_text
from tierwise.task import Task

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def disputes(n: int) -> list[Task]:
    """Customer replies about chargebacks: the demo's cheap model refuses them, mid answers."""
    return [
        Task.create(
            "draft_reply",
            f"REPLY to this customer: I am writing about a chargeback on order {i}.",
            id=f"dispute-{i:03d}",
            session="agent-disputes",
        )
        for i in range(n)
    ]


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger from the offline demo (60 tasks and 50 chargeback replies) on which the learner
    (`tierwise learn propose`, default policy) proposed raising draft_reply's floor: change #1."""
    where = tmp_path_factory.mktemp("demo")
    path = where / "ledger.db"
    run_demo(default_policy(), [*demo_tasks(60), *disputes(50)], path)
    code, out, err = cli("learn", "propose", "--ledger", str(path), "--json")
    assert code == 0, err
    [proposal] = json.loads(out)["proposals"]
    assert (proposal["id"], proposal["kind"], proposal["floor_after"]) == (1, "draft_reply", "mid")
    return path


@pytest.fixture
def keys_and_ledger(demo_file: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A fresh copy of the demo ledger with an admin key and a client key: (path, admin, client)."""
    path = tmp_path / "ledger.db"
    shutil.copy(demo_file, path)
    with open_ledger(path) as book:
        admin = book.create_api_key("ops", role="admin")
        client = book.create_api_key("agent")
    return path, admin, client


def _config(ledger: Path, tmp_path: Path) -> GatewayConfig:
    return GatewayConfig(
        policy=default_policy(),
        ledger_url=str(ledger),
        allow_missing_keys=True,
        spool_dir=str(tmp_path / "spool"),
        key_cache_s=0,
    )


@pytest.fixture
def served(
    keys_and_ledger: tuple[Path, str, str], tmp_path: Path
) -> Iterator[tuple[GatewayServer, str, str, Path]]:
    path, admin, client = keys_and_ledger
    with GatewayServer(_config(path, tmp_path)) as server:
        yield server, admin, client, path


def _client(server: GatewayServer) -> httpx2.Client:
    return httpx2.Client(base_url=server.base_url, follow_redirects=False)


def _sign_in(http: httpx2.Client, key: str) -> httpx2.Response:
    return http.post("/dashboard/sign-in", data={"key": key})


def test_without_a_session_the_page_is_read_only_and_locked_down(
    served: tuple[GatewayServer, str, str, Path],
) -> None:
    server, *_ = served
    with _client(server) as http:
        page = http.get("/dashboard")
    assert page.status_code == 200, page.text
    assert 'data-testid="spend.total_usd"' in page.text
    assert 'name="csrf"' not in page.text and 'data-testid="sign-in"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text.lower()


def test_sign_in_sets_a_strict_httponly_session_cookie_never_the_key(
    served: tuple[GatewayServer, str, str, Path], raw_sql: object
) -> None:
    server, admin, _, path = served
    with _client(server) as http:
        answer = _sign_in(http, admin)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard"
        cookie = answer.headers["set-cookie"]
        secret = http.cookies[SESSION_COOKIE]
        page = http.get("/dashboard")
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/dashboard" in flags
    assert admin not in cookie and secret != admin and len(secret) >= 40
    assert admin not in page.text
    assert 'data-testid="admin">signed in: ops<' in page.text
    assert CSRF.findall(page.text) and set(CSRF.findall(page.text)) == {csrf_token(secret)}
    with open_ledger(path) as book, book.reading() as conn:
        stored = [
            tuple(r) for r in conn.exec_driver_sql("SELECT id_sha256 FROM dashboard_sessions")
        ]
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(),)]


def _server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the gateway logged (the test's own HTTP client's debug lines left out)."""
    return "\n".join(
        f"{r.name} {r.getMessage()}"
        for r in caplog.records
        if not r.name.startswith(("httpx2", "httpcore2"))
    )


@pytest.mark.parametrize(
    ("which", "status", "says"),
    [
        ("client", 403, "needs an admin key"),
        ("unknown", 401, "invalid gateway key"),
        ("empty", 401, "enter an admin key"),
    ],
)
def test_only_an_admin_key_signs_in_and_the_refusal_never_echoes_the_key(
    served: tuple[GatewayServer, str, str, Path],
    which: str,
    status: int,
    says: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, admin, client, _ = served
    key = {"client": client, "unknown": admin[:-4] + "abcd", "empty": ""}[which]
    with caplog.at_level(logging.DEBUG), _client(server) as http:
        answer = _sign_in(http, key)
    assert answer.status_code == status
    assert says in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    if key:
        assert key not in answer.text and key not in _server_log(caplog)


def test_signing_in_and_out_logs_the_key_name_only(
    served: tuple[GatewayServer, str, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, admin, _, _ = served
    with caplog.at_level(logging.DEBUG), _client(server) as http:
        _sign_in(http, admin)
        secret = http.cookies[SESSION_COOKIE]
        out = http.post("/dashboard/sign-out", data={"csrf": csrf_token(secret)})
    assert out.status_code == 303
    logged = _server_log(caplog)
    assert "'ops' signed in" in logged and "'ops' signed out" in logged
    assert admin not in logged and secret not in logged


def test_apply_is_refused_without_a_session_without_csrf_or_with_another_sessions_token(
    served: tuple[GatewayServer, str, str, Path],
) -> None:
    """Refused before any proposal is looked at: 403 in each case, and the ledger unchanged."""
    server, admin, _, path = served
    with _client(server) as anonymous:
        refused = anonymous.post("/dashboard/proposals/1/apply", data={})
        assert refused.status_code == 403 and "sign in" in refused.text
    with _client(server) as one, _client(server) as two:
        _sign_in(one, admin)
        _sign_in(two, admin)
        mine, theirs = one.cookies[SESSION_COOKIE], two.cookies[SESSION_COOKIE]
        assert mine != theirs
        for form in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": csrf_token(theirs)}):
            answer = one.post("/dashboard/proposals/1/apply", data=form)
            assert answer.status_code == 403, form
            assert "CSRF token is missing or wrong" in answer.text
    with open_ledger(path) as book, book.reading() as conn:
        statuses = conn.exec_driver_sql("SELECT status FROM policy_changes").all()
    assert all(s != "applied" for (s,) in statuses)


def test_apply_with_the_session_and_its_token_applies_the_learners_proposal(
    served: tuple[GatewayServer, str, str, Path], tmp_path: Path
) -> None:
    """The change is the learner's audited record, by the signed-in key; the gateway serves it
    at once; a second apply, or an unknown id, is refused with the learner's reason."""
    server, admin, _, path = served
    with _client(server) as http:
        _sign_in(http, admin)
        page = http.get("/dashboard")
        assert 'data-testid="apply-1"' in page.text
        [token] = set(CSRF.findall(page.text))
        done = http.post("/dashboard/proposals/1/apply?since=7d", data={"csrf": token})
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/dashboard?since=7d&applied=1"
        after = http.get(done.headers["location"])
        assert "Change #1 applied by key:ops: draft_reply floor none → mid" in after.text
        assert 'data-testid="apply-1"' not in after.text  # no longer an open proposal
        again = http.post("/dashboard/proposals/1/apply", data={"csrf": token})
        assert again.status_code == 409 and "only a proposed change can be applied" in again.text
        unknown = http.post("/dashboard/proposals/99/apply", data={"csrf": token})
        assert unknown.status_code == 404 and "no policy change #99" in unknown.text
        status = http.get(
            "/v1/tierwise/admin/status", headers={"authorization": f"Bearer {admin}"}
        ).json()
    assert 1 in status["changes_in_force"]
    code, out, err = cli("learn", "history", "--ledger", str(path), "--json")
    assert code == 0, err
    [change] = [c for c in json.loads(out)["changes"] if c["id"] == 1]
    assert (change["status"], change["actor"]) == ("applied", "key:ops")
    assert change["revision_before"] != change["revision_after"]


def test_a_post_from_another_site_is_refused_even_with_the_session(
    served: tuple[GatewayServer, str, str, Path],
) -> None:
    server, admin, _, _ = served
    with _client(server) as http:
        _sign_in(http, admin)
        token = csrf_token(http.cookies[SESSION_COOKIE])
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
            answer = http.post("/dashboard/sign-out", data={"csrf": token}, headers=headers)
            assert answer.status_code == 403, headers
            assert "not sent from this dashboard" in answer.text
            signin = http.post("/dashboard/sign-in", data={"key": admin}, headers=headers)
            assert signin.status_code == 403
        same = {"origin": server.base_url, "sec-fetch-site": "same-origin"}
        assert (
            http.post("/dashboard/sign-out", data={"csrf": token}, headers=same).status_code == 303
        )


def test_sign_out_ends_the_session_everywhere(
    served: tuple[GatewayServer, str, str, Path],
) -> None:
    server, admin, _, _ = served
    with _client(server) as http:
        _sign_in(http, admin)
        secret = http.cookies[SESSION_COOKIE]
        out = http.post("/dashboard/sign-out", data={"csrf": csrf_token(secret)})
        assert out.status_code == 303
        assert "max-age=0" in out.headers["set-cookie"].lower()
    with _client(server) as stolen:  # the old cookie, replayed, is nobody's session
        stolen.cookies.set(SESSION_COOKIE, secret)
        assert 'data-testid="admin"' not in stolen.get("/dashboard").text
        again = stolen.post("/dashboard/sign-out", data={"csrf": csrf_token(secret)})
        assert again.status_code == 403


def test_a_second_gateway_on_the_same_ledger_accepts_the_session(
    served: tuple[GatewayServer, str, str, Path], tmp_path: Path
) -> None:
    """Sessions are ledger rows: every worker and replica sharing the ledger accepts them."""
    server, admin, _, path = served
    with _client(server) as http:
        _sign_in(http, admin)
        secret = http.cookies[SESSION_COOKIE]
    with GatewayServer(_config(path, tmp_path / "second")) as other, _client(other) as http:
        http.cookies.set(SESSION_COOKIE, secret)
        assert 'data-testid="admin">signed in: ops<' in http.get("/dashboard").text


def test_a_window_that_cannot_be_read_is_said_and_an_empty_one_refused(
    served: tuple[GatewayServer, str, str, Path],
) -> None:
    server, *_ = served
    with _client(server) as http:
        page = http.get("/dashboard", params={"since": "last tuesday"})
        assert page.status_code == 200
        assert "since: expected a date" in page.text and "the report&#x27;s default" in page.text
        empty = http.get("/dashboard", params={"since": "2026-01-02", "until": "2026-01-01"})
    assert empty.status_code == 400 and "the window is empty" in empty.text


def test_off_loopback_nothing_is_shown_until_an_admin_signs_in(
    keys_and_ledger: tuple[Path, str, str], tmp_path: Path
) -> None:
    import uvicorn

    from tierwise.gateway.server import bind_socket, uvicorn_config

    path, admin, _ = keys_and_ledger
    app = create_dashboard_app(str(path), default_policy(), host="192.0.2.1")
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, log_level="warning"))
    import threading

    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            thread.join(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with httpx2.Client(base_url=base) as http:
            locked = http.get("/dashboard")
            assert locked.status_code == 401
            assert 'data-testid="spend.total_usd"' not in locked.text
            assert 'data-testid="sign-in"' in locked.text
            assert http.post("/dashboard/sign-in", data={"key": admin}).status_code == 303
            opened = http.get("/dashboard")
        assert opened.status_code == 200 and 'data-testid="spend.total_usd"' in opened.text
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_tierwise_dashboard_serves_the_page_alone(
    keys_and_ledger: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, _, _ = keys_and_ledger
    policy = tmp_path / "tierwise.toml"
    policy.write_text(default_policy_text())
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tierwise", "dashboard", "--ledger", str(path)),
            *("--policy", str(policy), "--port", "0"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(1)]
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/dashboard", lines[-1])):
            assert lines[-1], lines  # the command ended without saying where it serves
            lines.append(proc.stderr.readline())
        base = f"http://127.0.0.1:{found.group(1)}"
        with httpx2.Client(base_url=base) as http:
            page = http.get("/dashboard")  # the socket listens before the line is printed
            assert page.status_code == 200 and 'data-testid="spend.total_usd"' in page.text
            assert http.get("/").headers["location"] == "/dashboard"
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_tierwise_dashboard_refuses_a_missing_ledger_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tierwise.cli import build_app

    result = CliRunner().invoke(build_app(), ["dashboard", "--ledger", str(tmp_path / "no.db")])
    assert result.exit_code == 2
    assert "no.db" in result.stderr and len(result.stderr.strip().splitlines()) == 1
