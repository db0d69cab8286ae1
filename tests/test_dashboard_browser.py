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

import pytest
from typer.testing import CliRunner

from tierwise.cli import build_app
from tierwise.demo import demo_tasks, run_demo
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.ledger import open_ledger
from tierwise.policy import default_policy, default_policy_text

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
    run_demo(default_policy(), demo_tasks(80), ledger)
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


def _window() -> tuple[str, str]:
    """A fixed window around the demo's tasks (so the page and the CLI read the same one)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return (now - timedelta(days=2)).isoformat(), (now + timedelta(hours=1)).isoformat()


def _report_json(ledger: Path, policy: Path, since: str, until: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        build_app(),
        [
            *("report", "--json", "--ledger", str(ledger), "--policy", str(policy)),
            *("--since", since, "--until", until),
        ],
    )
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
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
        return text == value  # a name: kind, tier, model, key, session, day
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
    browser.get(f"{server.base_url}/dashboard?since={since}&until={until}")
    data = _report_json(ledger, policy, since, until)
    figures = _figures(browser)
    ids = {f["id"] for f in figures}
    assert set(REQUIRED) <= ids, set(REQUIRED) - ids
    wrong = []
    for figure in figures:
        if figure["id"].startswith("proposals.") and ".evidence." in figure["id"]:
            continue  # the learner's evidence, checked against `learn history` below
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
