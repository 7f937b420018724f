"""A real headless Chromium against a real gateway process that has served real traffic: log in
through the form, load every page, compare the numbers shown with the database, and check that a
captured ``<script>`` prompt renders as text and never runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.dashboard.html import usd
from tests.dashboard import webdriver
from tests.dashboard.traffic import MASTER, XSS, Traffic, config_text, serve_traffic
from tests.support import gateway_process

pytestmark = pytest.mark.skipif(not webdriver.available(), reason=webdriver.HOWTO)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Traffic]]:
    work = tmp_path_factory.mktemp("dashboard")
    db = work / "db.sqlite"
    with gateway_process(work, config_text(db), env={"MODELYARD_MASTER_KEY": MASTER}) as (url, _log):
        yield url, db, serve_traffic(url, rounds=4)


@pytest.fixture(scope="module")
def browser(served: tuple[str, Path, Traffic]) -> Iterator[webdriver.Browser]:
    url, _db, _traffic = served
    with webdriver.Browser() as b:
        b.get(url + "/ui")
        assert b.url.endswith("/ui/login")  # not logged in: sent to the form
        b.type("#key", MASTER)
        b.click("#login")
        assert b.wait_for_url("/ui").rstrip("/").endswith("/ui")
        yield b


def _db(db: Path, sql: str, *params: Any) -> Any:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchone()


def test_login_sets_a_signed_httponly_strict_cookie_without_the_key(browser: webdriver.Browser) -> None:
    (cookie,) = [c for c in browser.cookies() if c["name"] == "modelyard_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert MASTER not in cookie["value"]
    assert browser.script("return document.cookie") == ""  # not readable by page scripts


def test_a_wrong_key_is_refused(served: tuple[str, Path, Traffic]) -> None:
    url, _db, traffic = served
    with httpx.Client(base_url=url) as client:
        for key in ("nope", traffic.keys["support"][0]):  # junk, and a key-holder (not a reader)
            r = client.post("/ui/login", data={"key": key})
            assert r.status_code == 401 and "set-cookie" not in r.headers
        r = client.post("/ui/login", data={"key": traffic.keys["viewer"][0]})
        assert r.status_code == 303 and "modelyard_session=" in r.headers["set-cookie"]
        assert client.get("/ui/spend", headers={"cookie": "modelyard_session=forged.sig"}).status_code == 303


def test_overview_matches_the_ledger(served: tuple[str, Path, Traffic], browser: webdriver.Browser) -> None:
    url, db, traffic = served
    browser.get(url + "/ui?range=1h")
    requests, cost = _db(db, "SELECT COUNT(DISTINCT request_id), SUM(cost_nano) FROM ledger")
    assert int(browser.metric("total-requests").replace(",", "")) == requests == traffic.requests
    assert browser.metric("total-cost") == usd(cost) and cost > 0
    (tokens_out,) = _db(db, "SELECT SUM(tokens_out) FROM ledger")
    assert int(browser.metric("tokens-out").replace(",", "")) == tokens_out
    (tokens_in,) = _db(db, "SELECT SUM(tokens_in) FROM requests")
    assert int(browser.metric("tokens-in").replace(",", "")) == tokens_in
    (errors,) = _db(db, "SELECT COUNT(*) FROM requests WHERE outcome IN ('error', 'upstream_cut', 'timeout')")
    assert int(browser.metric("total-errors")) == errors
    (echo,) = _db(db, "SELECT COUNT(DISTINCT request_id) FROM ledger WHERE deployment = 'fake/echo' "
                      "AND model_requested = 'gpt-4o-mini' AND status = 'ok'")  # fmt: skip
    assert int(browser.metric("requests:gpt-4o-mini:fake/echo")) == echo
    assert len(browser.find_all("svg polyline")) >= 5  # the charts are inline SVG


def test_every_page_loads_with_its_numbers(
    served: tuple[str, Path, Traffic], browser: webdriver.Browser
) -> None:
    url, db, traffic = served
    for path in ("/ui/models", "/ui/routing", "/ui/spend", "/ui/requests", "/ui/cache"):
        browser.get(f"{url}{path}?range=24h")
        assert browser.text("h1"), path
        assert browser.alert_text() is None
    browser.get(url + "/ui/models?range=1h")
    (served_by_echo,) = _db(db, "SELECT COUNT(*) FROM requests WHERE deployment = 'fake/echo'")
    assert int(browser.metric("deployment-requests:fake/echo")) == served_by_echo
    browser.get(url + "/ui/routing?range=1h")
    (local, cloud) = _db(db, "SELECT SUM(local), SUM(1 - local) FROM requests")
    assert int(browser.metric("local-requests")) == local > 0
    assert int(browser.metric("cloud-requests")) == cloud > 0
    browser.get(url + "/ui/spend?range=1h")
    for name in ("research", "support", "batch"):
        key_id = traffic.keys[name][1]
        (cost,) = _db(db, "SELECT SUM(cost_nano) FROM ledger WHERE key_id = ?", key_id)
        assert browser.metric(f"key_id-cost:{key_id}") == usd(cost)
    (team_cost,) = _db(db, "SELECT SUM(cost_nano) FROM ledger WHERE team_id = 'research'")
    assert browser.metric("team_id-cost:research") == usd(team_cost)
    (spend,) = _db(db, "SELECT spend_nano FROM budgets WHERE scope = 'team' AND scope_id = 'support'")
    assert browser.metric("budget-spend:team:support:monthly") == usd(spend)
    browser.get(url + "/ui/cache?range=1h")
    assert browser.metric("cache-hit-rate") == "0%"


def test_search_and_drill_down(served: tuple[str, Path, Traffic], browser: webdriver.Browser) -> None:
    url, db, traffic = served
    browser.get(url + "/ui/requests?range=1h")
    browser.type("input[name=q]", "render")
    browser.click("form.search button")
    assert "q=render" in browser.wait_for_url(containing="q=render")
    assert browser.metric("search-results") == "1"
    browser.click(f'a[href="/ui/requests/{traffic.xss_request_id}"]')
    (cost,) = _db(db, "SELECT SUM(cost_nano) FROM ledger WHERE request_id = ?", traffic.xss_request_id)
    assert browser.metric("detail:cost") == usd(cost)
    assert len(browser.find_all("#ledger tbody tr")) == 1


def test_a_script_in_a_prompt_renders_as_text(
    served: tuple[str, Path, Traffic], browser: webdriver.Browser
) -> None:
    url, _db_path, traffic = served
    browser.get(f"{url}/ui/requests/{traffic.xss_request_id}")
    assert XSS in browser.text("#prompt") and XSS in browser.text("#response")
    assert browser.alert_text() is None
    assert browser.script("return document.querySelectorAll('pre script').length") == 0
    scripts = browser.script("return Array.from(document.scripts).map(s => s.textContent)")
    assert all("alert(1)" not in s for s in scripts)
