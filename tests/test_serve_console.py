"""The operator console in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright, no
browser download), served by real Serve beside the operator API, against a real SQLite alert store:

- a wrong key shows a login error and no data;
- a fire recorded in the store (as the router records it) appears on the board, with where it is and its
  evidence; the time from recording to the board is measured and printed;
- acknowledging it in the page writes the store and shows on every other open page;
- a silence made in the page is in the store, and the next fire in that zone is recorded and shown but
  queues no delivery (a fire elsewhere does);
- a refused form names the field; the incident detail draws the sensor's readings from the Parquet lake
  with the raise mark, and shows the timeline;
- at phone width nothing is wider than the screen and the actions can be used;
- odd paths (traversal, NUL, very long) and methods on the console's routes never get a 5xx.

With ``SMOKE_CONSOLE_SCREENSHOTS=docs`` the tests write the screenshots shown in docs/console.md.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ingest.settings import REPO_ROOT
from serve.console.deployment import deploy_console
from serve.operator.deployment import deploy_operator
from tests.operator_support import API_KEY, FIRE, SENSORS, SILENT, raise_alert, settings_for, sqlite_dsn, write_readings
from tests.serve_support import free_port, start_serve

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
BOARD_TIMEOUT_MS = 10_000
WALL = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def screenshot_dir() -> Path | None:
    where = os.environ.get("SMOKE_CONSOLE_SCREENSHOTS")
    return (REPO_ROOT / where) if where else None


class EveryAlertToWebhook:
    """The routing rule of this test's store: every notification to one channel, so deliveries are queued."""

    def channels_for(self, notification) -> list[str]:
        return ["webhook"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from alerting.store import AlertStore

    dsn = sqlite_dsn(tmp_path_factory.mktemp("console"))
    opened = AlertStore.open(dsn, routing=EveryAlertToWebhook())
    for sensor in SENSORS:
        opened.upsert_sensor(sensor)
    try:
        yield opened, dsn
    finally:
        opened.close()


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("console-lake")


@pytest.fixture(scope="module")
def console_url(ray_cluster, store, lake_dir):
    from ray import serve

    _, dsn = store
    port = free_port()
    start_serve(port)
    settings = settings_for(dsn, port, [API_KEY], lake_dir=lake_dir)
    deploy_operator(settings, overrides={"num_replicas": 1})
    url = deploy_console(settings, overrides={"num_replicas": 1})
    try:
        yield url + "/"
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


def logged_in(browser, url: str, viewport: dict = WALL, name: str = "ana"):
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(url)
    page.fill("#api-key", API_KEY)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#main:not([hidden])")
    page.fill("#operator-name", name)
    return page


def card(page, alert_id: str):
    return page.locator(f'li.incident[data-alert-id="{alert_id}"]')


def test_wrong_key_shows_a_login_error_and_no_data(browser, console_url, store):
    raise_alert(store[0], "op-lobby", FIRE)
    page = browser.new_context(viewport=WALL).new_page()
    page.goto(console_url)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#api-key", "not-the-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    assert "not accepted" in page.inner_text("#login-error")
    assert page.locator("#main").is_hidden()
    assert page.locator("li.incident").count() == 0
    assert "op-lobby" not in page.content()
    page.context.close()


def test_fire_reaches_the_board_and_acknowledging_updates_store_and_other_pages(browser, console_url, store,
                                                                                 lake_dir, reliability_record):
    alert_store, _ = store
    write_readings(lake_dir, "op-kitchen", time.time() - 600, 600, fire_from=time.time() - 90)
    page = logged_in(browser, console_url)
    other = logged_in(browser, console_url, name="bo")
    recorded_at = time.monotonic()
    fire = raise_alert(alert_store, "op-kitchen", FIRE)
    card(page, fire.alert_id).wait_for(timeout=BOARD_TIMEOUT_MS)
    on_board_s = time.monotonic() - recorded_at
    print(f"\nalert recorded in the store -> on the console board: {on_board_s:.3f} s "
          f"(poll every {settings_for('x', 1).alerting.console_poll_s} s)")
    reliability_record("console", alert_to_board_s=round(on_board_s, 3))
    item = card(page, fire.alert_id)
    assert "HQ, B, floor 2, kitchen, by the hob" in item.inner_text()
    assert "not acknowledged" in item.inner_text()
    page.wait_for_function(f"""document.querySelector('li[data-alert-id="{fire.alert_id}"] .evidence')
                               .textContent.includes('pm2_5_ugm3 182')""")
    assert "channels: heat, particles" in item.locator(".evidence").inner_text()
    assert page.locator("#alarm").is_visible()  # the visual cue of an unacknowledged fire
    # Fire above trouble: a silent sensor raised later is listed after it.
    silent = raise_alert(alert_store, "op-store", SILENT, evidence={"silent_s": 240.0})
    card(page, silent.alert_id).wait_for(timeout=BOARD_TIMEOUT_MS)
    order = page.eval_on_selector_all("li.incident", "els => els.map(e => e.dataset.alertId)")
    assert order.index(fire.alert_id) < order.index(silent.alert_id)
    assert "silent: Depot, W, floor 1, store room" in page.inner_text("#untrusted")
    # Sensors by zone: the kitchen reported (readings in the lake), the store room is silent.
    # (the fleet view refreshes every 2 s, and the API keeps an answer 3 s: wait for the silent incident)
    page.wait_for_function("""(document.querySelector('#fleet li[data-sensor-id="op-store"].untrusted') || {})
                              .textContent?.includes('silent')""", timeout=BOARD_TIMEOUT_MS)
    assert "last reading" in page.text_content('#fleet li[data-sensor-id="op-kitchen"]')
    shots = screenshot_dir()
    if shots:
        page.screenshot(path=str(shots / "console-board.png"), full_page=True)

    # No outcome chosen: the page says which field, and nothing is written.
    item.locator("button.ack").click()
    assert "outcome" in item.locator(".error").inner_text()
    assert alert_store.incident(fire.alert_id).incident.acknowledged_at is None

    item.locator("select[name=outcome]").select_option("nuisance")
    item.locator("input[name=note]").fill("burnt toast")
    item.locator("button.ack").click()
    page.wait_for_function(f"""document.querySelector('li[data-alert-id="{fire.alert_id}"] .who')
                               .textContent.includes('acknowledged by ana')""")
    incident = alert_store.incident(fire.alert_id).incident
    assert (incident.acknowledged_by, incident.outcome, incident.ack_note) == ("ana", "nuisance", "burnt toast")
    # Every other open page shows it at its next poll.
    other.wait_for_function(f"""document.querySelector('li[data-alert-id="{fire.alert_id}"] .who')
                                .textContent.includes('acknowledged by ana (nuisance)')""", timeout=BOARD_TIMEOUT_MS)

    # The detail shows the timeline: raised, then acknowledged.
    item.locator("button.details").click()
    page.wait_for_selector("#detail:not([hidden]) .timeline li")
    # ... and draws the sensor's readings from the lake, with the raise mark.
    page.wait_for_selector('#detail svg.plot[data-channel="pm2_5_ugm3"] path.series')
    assert page.locator("#detail svg.plot line.mark.raise").count() == 5
    assert len(page.get_attribute('#detail svg.plot[data-channel="pm2_5_ugm3"] path.series', "d")) > 1000
    if shots:
        page.locator("#detail").screenshot(path=str(shots / "console-detail.png"))
    timeline = page.inner_text("#detail .timeline")
    assert timeline.index("raised") < timeline.index("acknowledged by ana: nuisance")
    assert "raised → webhook: pending" in timeline

    # Resolving takes it off the board of every page.
    item.locator("button.resolve").click()
    other.locator(f'li.incident[data-alert-id="{fire.alert_id}"]').wait_for(state="detached",
                                                                            timeout=BOARD_TIMEOUT_MS)
    assert alert_store.incident(fire.alert_id).incident.state == "resolved"
    page.context.close()
    other.context.close()


def test_silence_from_the_page_and_refused_input_names_the_field(browser, console_url, store):
    alert_store, _ = store
    page = logged_in(browser, console_url)
    before = len(alert_store.silences())
    page.select_option("#silence-what", "zone")
    page.fill("#silence-value", "store room")
    page.select_option("#silence-for", "3600")
    page.fill("#silence-comment", "sprinkler maintenance")
    page.click("#silence-form button[type=submit]")
    page.wait_for_function("document.querySelector('#silences').textContent.includes('sprinkler maintenance')",
                           timeout=BOARD_TIMEOUT_MS)
    silences = alert_store.silences(active_at=time.time())
    assert len(silences) == before + 1
    made = next(s for s in silences if s.comment == "sprinkler maintenance")
    assert made.zone == "store room" and made.created_by == "ana"
    assert made.ends_at - made.starts_at == pytest.approx(3600, abs=5)
    fire = raise_alert(alert_store, "op-store", FIRE)
    silenced = alert_store.incident(fire.alert_id)
    assert silenced.incident.silenced is True and silenced.deliveries == []  # recorded, shown, not delivered
    elsewhere = raise_alert(alert_store, "op-lobby", FIRE)
    assert [d.channel for d in alert_store.incident(elsewhere.alert_id).deliveries] == ["webhook"]
    card(page, fire.alert_id).wait_for(timeout=BOARD_TIMEOUT_MS)
    assert card(page, fire.alert_id).locator(".silenced").is_visible()

    # A value the API refuses (only spaces) comes back with the field named, and nothing is written.
    page.fill("#silence-value", "   ")
    page.fill("#silence-comment", "x")
    page.click("#silence-form button[type=submit]")
    page.wait_for_function("document.querySelector('#silence-error').textContent.length > 0")
    assert "zone" in page.inner_text("#silence-error")
    assert len(alert_store.silences()) == before + 1

    # Without a name on duty nothing is sent, and the page says why.
    page.fill("#operator-name", "")
    page.fill("#silence-value", "lobby")
    page.click("#silence-form button[type=submit]")
    assert "by:" in page.inner_text("#silence-error")
    assert len(alert_store.silences()) == before + 1
    page.context.close()


def test_phone_width_layout(browser, console_url, store):
    alert_store, _ = store
    fire = raise_alert(alert_store, "op-lobby", FIRE)
    page = logged_in(browser, console_url, viewport=PHONE)
    card(page, fire.alert_id).wait_for(timeout=BOARD_TIMEOUT_MS)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"page is {width} px wide on a {PHONE['width']} px screen"
    box = card(page, fire.alert_id).bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    ack = card(page, fire.alert_id).locator("button.ack")
    ack_box = ack.bounding_box()
    assert ack_box["height"] >= 40 and ack_box["width"] >= PHONE["width"] * 0.6  # a thumb-sized target
    shots = screenshot_dir()
    if shots:
        page.screenshot(path=str(shots / "console-phone.png"), full_page=False)
    card(page, fire.alert_id).locator("select[name=outcome]").select_option("test")
    ack.click()
    page.wait_for_function(f"""document.querySelector('li[data-alert-id="{fire.alert_id}"] .who')
                               .textContent.includes('acknowledged by ana (test)')""")
    assert alert_store.incident(fire.alert_id).incident.outcome == "test"
    page.context.close()


def test_console_routes_never_5xx_and_serve_no_data(console_url):
    import httpx

    base = console_url.rstrip("/")
    assert httpx.get(f"{base}/config.json", timeout=30).json()["api_prefix"] == "/ops"
    assert httpx.get(f"{base}/static/console.js", timeout=30).status_code == 200
    for path in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/", "/nope",
                 "/static/console.js%00", "/index.html", "/config.json?x=1", "/" + "a" * 3000, "/static/.."):
        r = httpx.get(base + path, timeout=30, follow_redirects=False)
        assert r.status_code < 500, (path, r.status_code)
        assert "root:" not in r.text, path
    r = httpx.post(f"{base}/", content=b"\xff" * 100, timeout=30)
    assert 400 <= r.status_code < 500
