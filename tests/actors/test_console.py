"""The live web console in a real headless browser (Debian's chromium through selenium), on a
real actor system replaying the bundled recording into the paper venue.

The test drives the steps itself, so the run is alive (and paused between steps) while the
browser looks: the page updates live, its figures are the coordinator's summary, and its
kill-switch button stops order flow, checked on the paper venue's own record.
"""

from __future__ import annotations

import pickle
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.system import SystemHandles, shutdown_system, start_console, start_system
from sapphire.adapters.kill_switch import FirmKillSwitch, RunKillSwitch
from tests.actors.harness import make_config

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (./dev installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    # the driver's own path: selenium must not try to download one (no internet)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def _drive(handles: SystemHandles, start: int, count: int, pause_s: float = 0.0) -> int:
    """Run steps ``start``.. (at most ``count``, ``pause_s`` apart); returns the next step."""
    step = start
    for step in range(start, start + count):
        if ray.get(handles.coordinator.run_step.remote(step), timeout=120).done:
            break
        time.sleep(pause_s)
    return step + 1


def _venue_orders(handles: SystemHandles) -> set[str]:
    venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
    return {o.client_order_id for o in venue.orders()}


def _open_at_venue(handles: SystemHandles) -> list[Any]:
    venue = pickle.loads(ray.get(handles.execution.exchange_record.remote()))
    return list(venue.open_orders())


# the tables are redrawn at every poll: read one whole table in one call, never row by row
_TABLE_JS = """
const out = {};
for (const tr of document.querySelectorAll(arguments[0] + " tbody tr")) {
  const row = {};
  for (const td of tr.querySelectorAll("td[data-field]")) row[td.dataset.field] = td.textContent;
  out[tr.dataset[arguments[1]]] = row;
}
return out;
"""


def _table(driver: Any, table: str, key: str) -> dict[str, dict[str, str]]:
    return dict(driver.execute_script(_TABLE_JS, table, key))


def _status(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers or {})) as r:
            if r.headers.get_content_type() == "text/html":  # the page cannot be framed
                assert r.headers["X-Frame-Options"] == "DENY"
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_console_shows_the_coordinators_state_and_its_button_halts_order_flow(
    ray_live: None, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    config = make_config(
        tmp_path,
        data={"source": "sample", "batch_events": 1000, "max_events": 8_000},
        console={"enabled": True, "host": "127.0.0.1", "port": 0, "poll_ms": 150},
    )
    handles = start_system(config, "console")
    try:
        urls: list[str] = []
        start_console(config, handles, urls.append)
        assert len(urls) == 1, "the URL is announced once"
        url = urls[0]
        base, token = url.split("?token=")
        assert base.startswith("http://127.0.0.1:")
        # the actors are up (on a busy machine their start outlasts the console's timeout)
        assert ray.get(handles.coordinator.next_step.remote(), timeout=120) == 0

        # the token is required: none is 401, a wrong one 403 (page, state and button alike)
        assert _status(base) == 401
        assert _status(base + "api/state") == 401
        assert _status(base + "?token=wrong") == 403
        assert _status(base + "api/state", {"Authorization": "Bearer wrong"}) == 403
        assert _status(base + "api/state", {"Authorization": f"Bearer {token}"}) == 200
        assert _status(base + f"?token={token}") == 200
        trip = b'{"action": "trip"}'
        assert _status(base + "api/kill-switch", body=trip) == 401
        assert _status(base + "api/kill-switch", {"Authorization": "Bearer wrong"}, trip) == 403
        assert not FirmKillSwitch(tmp_path).state().tripped
        browser.get(base)
        assert "401" in browser.find_element(By.TAG_NAME, "body").text

        wait = WebDriverWait(browser, 15, poll_frequency=0.05)
        text = browser.find_element
        browser.get(url)
        wait.until(lambda d: text(By.ID, "run-id").text == "console")
        assert text(By.ID, "mode").text == "replay"
        assert text(By.ID, "kill-state").text == "OFF"

        # live: the page follows the steps while they run
        driver_thread = threading.Thread(target=_drive, args=(handles, 0, 60, 0.01))
        driver_thread.start()
        wait.until(lambda d: int(text(By.ID, "step").text) > 10)
        seen_mid_run = int(text(By.ID, "step").text)
        driver_thread.join()
        assert seen_mid_run < 59, "the page showed the run while it ran"
        wait.until(lambda d: text(By.ID, "status").get_attribute("data-step") == "59")
        points = int(text(By.ID, "equity-line").get_attribute("data-count") or 0)
        assert points > 30, "the equity curve drew the steps"

        # paused between steps: every figure is the coordinator's own summary
        summary = ray.get(handles.coordinator.summary.remote())
        assert summary["counters"]["orders"] > 0, "the run must have traded before the trip"
        assert text(By.ID, "fills").text == str(summary["fills"])
        assert text(By.ID, "firm-pnl").text == summary["firm_pnl_quote"]
        assert text(By.ID, "orders").text == str(sum(summary["orders_by_status"].values()))
        agents = _table(browser, "#agents", "key")
        assert set(agents) == set(summary["agents"])
        for key, fig in summary["agents"].items():
            shown = agents[key]
            assert shown["position_lots"] == str(fig["position_lots"])
            assert shown["traded_lots"] == str(fig["traded_lots"])
            assert shown["realized"] == fig["realized_quote"]
            assert shown["unrealized"] == fig["unrealized_quote"]
            assert shown["fees"] == fig["fees_quote"]
            assert shown["pnl"] == fig["pnl_quote"]
        statuses = {s: int(r["count"]) for s, r in _table(browser, "#statuses", "status").items()}
        assert statuses == summary["orders_by_status"]
        still_open = sum(
            n for s, n in statuses.items() if s in ("pending", "accepted", "partially_filled")
        )
        assert sum(int(a["open_orders"]) for a in agents.values()) == still_open
        assert text(By.ID, "open-orders").text == str(still_open)
        assert text(By.CSS_SELECTOR, "#dashboard-link").text == "Ray dashboard"

        # the button: trip, then the run's next steps send the venue nothing new
        text(By.ID, "kill-reason").send_keys("browser test")
        text(By.ID, "kill-trip").click()
        wait.until(lambda d: text(By.ID, "kill-state").text == "TRIPPED")
        firm = FirmKillSwitch(tmp_path).state()
        assert firm.tripped and firm.reason == "browser test"
        assert firm.by.startswith("console@")
        # the commands decided in step 59 (before the click) still reach the venue in step
        # 60; from then on, nothing: the venue's own record holds no later order
        step = _drive(handles, 60, 1)
        at_trip = _venue_orders(handles)
        step = _drive(handles, step, 40)
        assert _venue_orders(handles) == at_trip, "an order reached the venue after the trip"
        assert _open_at_venue(handles) == [], "resting orders were cancelled"
        summary = ray.get(handles.coordinator.summary.remote())
        assert summary["kill_switch"] is True
        blocked = summary["risk_rejections"].get("risk_kill_switch", 0)
        assert blocked > 0, "agents kept asking; the switch refused them"
        wait.until(
            lambda d: (
                _table(d, "#denials", "reason").get("risk_kill_switch") == {"count": str(blocked)}
            )
        )

        # reset from the page (it needs a reason): order flow resumes
        text(By.ID, "kill-reason").clear()
        text(By.ID, "kill-reset").click()
        wait.until(lambda d: "needs a reason" in text(By.ID, "kill-result").text)
        assert text(By.ID, "kill-state").text == "TRIPPED"
        text(By.ID, "kill-reason").send_keys("test over")
        text(By.ID, "kill-reset").click()
        wait.until(lambda d: text(By.ID, "kill-state").text == "OFF")
        assert not FirmKillSwitch(tmp_path).state().tripped
        _drive(handles, step, 1000)
        assert _venue_orders(handles) > at_trip, "order flow resumed after the reset"

        # `sapphire stop` of this run: a console reset does not lift it (its own command
        # does), and the page says so instead of showing OFF until the next step halts it
        RunKillSwitch(tmp_path / "console").trip("stop drill", "operator")
        wait.until(lambda d: "sapphire stop: stop drill" in text(By.ID, "kill-detail").text)
        assert text(By.ID, "kill-state").text == "TRIPPED"
        text(By.ID, "kill-reason").send_keys("console reset")
        text(By.ID, "kill-reset").click()
        time.sleep(0.5)
        assert text(By.ID, "kill-state").text == "TRIPPED"
        assert "sapphire stop: stop drill" in text(By.ID, "kill-detail").text

        # the link to the stored runs: this one is there (its rows are in the store)
        text(By.ID, "runs-link").click()
        wait.until(lambda d: "Stored runs" in d.title)
        assert "console" in [a.text for a in browser.find_elements(By.CSS_SELECTOR, "li a")]
    finally:
        shutdown_system(handles)
    with pytest.raises(urllib.error.URLError):  # the console ends with its run
        _status(base + "api/state", {"Authorization": f"Bearer {token}"})
