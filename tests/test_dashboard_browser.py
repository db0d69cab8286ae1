"""The dashboard in a real browser: Debian's headless Chromium driven through its chromedriver by
Selenium (no tool downloads a browser), on a ledger from the offline demo served by the gateway.

Each figure's ``data-testid`` names its path in ``tierwise report --json`` for the same window
and must carry the same value; the page fits 1366×768 without horizontal scrolling; it asks
nothing of any origin but the gateway's; a screenshot is kept as a CI artefact (``artifacts/``,
or ``$TIERWISE_ARTIFACTS_DIR``). Without the browser these tests skip, and under ``CI=true``
they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.demo import demo_tasks, run_demo
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import default_policy, default_policy_text
from tierwise.task import Task

CHROMIUM = os.environ.get("TIERWISE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TIERWISE_CHROMEDRIVER", "/usr/bin/chromedriver")
#: As root Chromium needs --no-sandbox; the rest keep it from calling anywhere on its own.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,768",
)
#: Figures the page must show (a page that lost a section fails here, not silently).
REQUIRED = (
    "spend.total_usd",
    "spend.probe_usd",
    "spend.shadow_usd",
    "days.0.spend_usd",
    "tier_mix.0.calls",
    "tier_mix.0.cost_share",
    "escalation.rate",
    "red_line",
    "kinds.0.escalation.rate",
    "wasted_usd",
    "latency.direct.p50_s",
    "latency.escalated.p95_s",
    "top_keys.0.spend_usd",
    "top_sessions.0.spend_usd",
    "top_kinds.0.spend_usd",
    "routing_efficiency.ratio.rate",
    "per_session_usd",
    "per_accepted_task_usd",
    "estimates.tiers.0.cost_usd",
    "proposals.0.id",
    "proposals.0.floor_after",
)


def _artifacts() -> Path:
    where = Path(
        os.environ.get("TIERWISE_ARTIFACTS_DIR", Path(__file__).parent.parent / "artifacts")
    )
    where.mkdir(parents=True, exist_ok=True)
    return where


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"headless Chromium is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"headless Chromium not available: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium at 1366×768 with a fresh profile and its network log on."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            _unavailable(f"{path} is missing (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    profile = tempfile.mkdtemp(prefix="tierwise-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # Given the driver's path, Selenium Manager never runs (it would try to download one).
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayServer, Path, Path, str]]:
    """The gateway on a ledger from the offline demo; (server, ledger, policy file, admin key)."""
    where = tmp_path_factory.mktemp("dashboard")
    ledger, policy = where / "ledger.db", where / "tierwise.toml"
    policy.write_text(default_policy_text())
    run_demo(default_policy(), [*demo_tasks(80), *_disputes(50)], ledger)
    code, out, err = _cli("learn", "propose", "--ledger", str(ledger), "--policy", str(policy))
    assert code == 0 and "promote new #1" in out, (out, err)
    with open_ledger(ledger) as book:
        admin = book.create_api_key("ops", role="admin")
    config = GatewayConfig(
        policy_path=str(policy),
        ledger_url=str(ledger),
        allow_missing_keys=True,
        spool_dir=str(where / "spool"),
    )
    with GatewayServer(config) as server:
        yield server, ledger, policy, admin


def _disputes(n: int) -> list[Task]:
    """Customer replies about chargebacks: the demo's cheap model refuses them, mid answers —
    enough of them for the learner to propose raising draft_reply's floor (change #1)."""
    return [
        Task.create(
            "draft_reply",
            f"REPLY to this customer: I am writing about a chargeback on order {i}.",
            id=f"dispute-{i:03d}",
            session="agent-disputes",
        )
        for i in range(n)
    ]


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def _history(ledger: Path, policy: Path) -> dict[int, dict[str, Any]]:
    """`tierwise learn history --json`, by change id."""
    code, out, err = _cli(
        "learn", "history", "--json", "--ledger", str(ledger), "--policy", str(policy)
    )
    assert code == 0, err
    return {c["id"]: c for c in json.loads(out)["changes"]}


def _window() -> tuple[str, str]:
    """A fixed window around the demo's tasks (so the page and the CLI read the same one)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return (now - timedelta(days=2)).isoformat(), (now + timedelta(hours=1)).isoformat()


def _report_json(ledger: Path, policy: Path, since: str, until: str) -> dict[str, Any]:
    code, out, err = _cli(
        *("report", "--json", "--ledger", str(ledger), "--policy", str(policy)),
        *("--since", since, "--until", until),
    )
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def _at(data: Any, path: str) -> Any:
    """The value at a dotted JSON path (list items by index; ``@place`` suffixes ignored)."""
    for part in path.split("@")[0].split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _shown(text: str, value: Any) -> bool:
    """Whether the text a person sees is *value*, to the places it is shown with."""
    text = text.strip()
    if value is None:
        return text in ("-", "(none)", "none", "(fleet)", "")
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT.*", value):
        return text == f"{datetime.fromisoformat(value):%Y-%m-%d %H:%M}"
    if isinstance(value, str) and not re.fullmatch(r"-?\d+(\.\d+)?", value):
        return text == value.strip()  # a name (kind, tier, model, key, session, day) or text
    if isinstance(value, list):
        return text == ", ".join(str(v) for v in value)
    text = text.replace(",", "")
    if isinstance(value, bool | int):
        return text == str(value)
    if m := re.fullmatch(r"(-?)\$(\d+(?:\.(\d+))?)", text):
        places = len(m.group(3) or "")
        shown = Decimal(m.group(2)) * (-1 if m.group(1) else 1)
        return abs(shown - Decimal(str(value))) <= Decimal(5) / 10 ** (places + 1)
    if m := re.fullmatch(r"(-?\d+(?:\.(\d+))?)%", text):
        places = len(m.group(2) or "")
        return abs(Decimal(m.group(1)) - Decimal(str(value)) * 100) <= Decimal(5) / 10 ** (
            places + 1
        )
    if isinstance(value, float) and re.fullmatch(r"-?[\d.]+(e[-+]\d+)?", text):
        return abs(float(text) - value) <= abs(value) * 5e-4  # four significant digits
    if m := re.fullmatch(r"(\d+) ms", text):
        return abs(int(m.group(1)) - float(value) * 1000) <= 0.5
    if m := re.fullmatch(r"(\d+\.\d\d) s", text):
        return abs(float(m.group(1)) - float(value)) <= 0.005
    return text == str(value)


def _figures(driver: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid][data-value]')].map(e => ({"
        "id: e.dataset.testid, value: e.dataset.value, text: e.textContent}))"
    )
    return found


def test_every_figure_on_the_page_is_the_one_report_json_gives(
    browser: Any, demo: tuple[GatewayServer, Path, Path, str]
) -> None:
    server, ledger, policy, _ = demo
    since, until = _window()
    browser.get(f"{server.base_url}/dashboard?{urlencode({'since': since, 'until': until})}")
    data = _report_json(ledger, policy, since, until)
    history = _history(ledger, policy)
    figures = _figures(browser)
    ids = {f["id"] for f in figures}
    assert set(REQUIRED) <= ids, set(REQUIRED) - ids
    assert "proposals.0.change.money.net_usd" in ids  # the learner's record, from learn history
    wrong = []
    for figure in figures:
        where = figure["id"].split(".")
        if where[0] == "proposals" and where[2] == "change":  # the learner's own record
            change = history[data["proposals"][int(where[1])]["id"]]["change"]
            expected = _at(change, ".".join(where[3:]))
        else:
            expected = _at(data, figure["id"])
        if json.loads(figure["value"]) != expected or not _shown(figure["text"], expected):
            wrong.append((figure["id"], figure["value"], figure["text"], expected))
    assert not wrong
    assert len(figures) > 100  # every day, tier, kind, key, session and estimate


def test_the_page_fits_1366_by_768_and_a_screenshot_is_kept(
    browser: Any, demo: tuple[GatewayServer, Path, Path, str]
) -> None:
    server, *_ = demo
    browser.set_window_size(1366, 768)
    browser.get(f"{server.base_url}/dashboard")
    inner = browser.execute_script("return window.innerWidth")
    scroll, client = browser.execute_script(
        "const d = document.documentElement; return [d.scrollWidth, d.clientWidth]"
    )
    assert inner >= 1300  # the window really is about 1366 wide (less any scrollbar)
    assert scroll <= client, f"horizontal scroll: content {scroll}px in a {client}px viewport"
    overflowing = browser.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => "
        "e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
        ".map(e => e.tagName + '.' + e.className).slice(0, 5)"
    )
    assert overflowing == []
    first = _artifacts() / "dashboard-1366x768.png"
    assert browser.save_screenshot(str(first))
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1366, min(height + 140, 6000))
    assert browser.save_screenshot(str(_artifacts() / "dashboard-full.png"))
    browser.set_window_size(1366, 768)
    assert first.stat().st_size > 20_000  # a rendered page, not a blank one


def test_the_page_asks_nothing_of_any_origin_but_the_gateway(
    browser: Any, demo: tuple[GatewayServer, Path, Path, str]
) -> None:
    server, *_ = demo
    browser.get_log("performance")  # drop what earlier tests loaded
    browser.get(f"{server.base_url}/dashboard")
    urls = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    assert f"{server.base_url}/dashboard" in urls
    elsewhere = {u for u in urls if not u.startswith(server.base_url + "/") and u != "data:,"}
    assert not elsewhere
    entries = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(e.startswith(server.base_url + "/") or e.startswith("data:") for e in entries)


def _click(driver: Any, testid: str) -> None:
    """Click a button that submits a form, and wait until the page it leads to has loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').click()

    def left(_: Any) -> bool:
        # The old page's root is gone. Mid-navigation Chromium reports that either as a stale
        # element or as "node does not belong to the document": both mean the page was left.
        try:
            page.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, 30).until(left)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _text_of(driver: Any, testid: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text
    return text


def test_apply_is_refused_read_only_and_without_csrf_and_accepted_when_signed_in(
    browser: Any, demo: tuple[GatewayServer, Path, Path, str]
) -> None:
    from selenium.webdriver.common.by import By

    server, ledger, policy, admin = demo
    page = f"{server.base_url}/dashboard"
    browser.delete_all_cookies()
    browser.get(page)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="admin"]')
    _click(browser, "apply-1")  # read-only: the button posts without a session
    assert "sign in with an admin key first" in _text_of(browser, "message")
    assert history_status(ledger, policy) == "proposed"

    browser.get(page)
    browser.find_element(By.CSS_SELECTOR, '[data-testid="admin-key"]').send_keys(admin)
    _click(browser, "sign-in")
    assert _text_of(browser, "admin") == "signed in: ops"
    cookie = browser.get_cookie("tierwise_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert admin not in cookie["value"]
    assert browser.execute_script("return document.cookie") == ""  # no script can read it

    browser.execute_script(  # the same form, its CSRF token taken out
        "document.querySelector('[data-testid=\"proposal-1\"] input[name=csrf]').remove()"
    )
    _click(browser, "apply-1")
    assert "CSRF token is missing or wrong" in _text_of(browser, "message")
    assert history_status(ledger, policy) == "proposed"

    browser.get(page)
    _click(browser, "apply-1")
    assert "Change #1 applied by key:ops: draft_reply floor none → mid" in _text_of(
        browser, "notice"
    )
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="apply-1"]')
    change = _history(ledger, policy)[1]
    assert (change["status"], change["actor"], change["floor_after"]) == (
        "applied",
        "key:ops",
        "mid",
    )
    browser.save_screenshot(str(_artifacts() / "dashboard-applied.png"))

    _click(browser, "sign-out")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="admin"]')
    assert browser.get_cookie("tierwise_dashboard") is None


def history_status(ledger: Path, policy: Path) -> str:
    status: str = _history(ledger, policy)[1]["status"]
    return status
