"""The operators' dashboard in a real headless Chromium, against the whole real fleet.

One fleet for the module (real Redis, Celery workers, capture on vtest.avi, gunicorn web,
the LLM simulator) and one browser; each test logs in in a fresh browser context.
Screenshots at laptop and phone widths land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fleet import (
    ARTIFACTS,
    GOOD,
    LAPTOP,
    PHONE,
    ROLES,
    Fleet,
    chromium,
    ink_on,
    log_in,
    require_browser,
    running_fleet,
    wait_for_frame,
    wait_until,
)
from scripted import conflict_event

from conftest import SAMPLE_VIDEO
from trafficrisk.messages import (
    Alert,
    AlertState,
    ConflictSeverity,
    RiskLevel,
    Verdict,
    VerdictSource,
    Verification,
)
from trafficrisk.workers.verification import verified

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

SCREENSHOTS = ARTIFACTS / "screenshots"


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    """Skip before the fleet starts when there is no browser to drive."""
    require_browser()


@pytest.fixture(scope="module")
def fleet(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(redis_server, tmp_path_factory.mktemp("dashboard-fleet")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, fleet: Fleet) -> Iterator[Any]:
    """A logged-in dashboard in a fresh context; a script error on it, or anything its
    Content-Security-Policy refused, fails the test."""
    context = browser.new_context(viewport=LAPTOP)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: errors.append(message.text)
              if "Content Security Policy" in message.text else None)
    log_in(opened, fleet)
    opened.wait_for_selector("body[data-ready=true]", timeout=30_000)
    yield opened
    context.close()
    assert not errors, f"script errors on the dashboard: {errors}"


def tile(page: Any, camera_id: str) -> Any:
    return page.locator(f"article.tile[data-camera={camera_id}]")


def test_login_through_the_form(browser: Any, fleet: Fleet) -> None:
    context = browser.new_context(viewport=LAPTOP)
    try:
        page = context.new_page()
        page.goto(fleet.web_url + "/")
        assert "/login" in page.url  # the dashboard needs a login
        log_in(page, fleet, password="not-the-password")
        assert page.locator(".login .error").inner_text() == "Wrong password."
        log_in(page, fleet)
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        assert page.url == fleet.web_url + "/"
        assert len(page.get_attribute('meta[name="csrf-token"]', "content") or "") > 20
        assert "test-api-token" not in page.content() and "test-password" not in page.content()
    finally:
        context.close()


def test_live_frames_arrive_without_reload(page: Any) -> None:
    """The tile's frame (its seq) moves on by Socket.IO alone; boxes and trails drawn over it."""
    camera = tile(page, GOOD)
    camera.locator(".status.online").wait_for(timeout=60_000)
    wait_for_frame(camera)
    page.evaluate("() => { window.sameDocument = true; }")
    first_seq = camera.get_attribute("data-seq")
    page.wait_for_function(
        "([sel, seq]) => document.querySelector(sel).dataset.seq !== seq",
        arg=[f"article.tile[data-camera={GOOD}]", first_seq], timeout=30_000)
    assert int(camera.get_attribute("data-seq") or 0) > int(first_seq or 0)
    assert page.evaluate("() => window.sameDocument") is True
    assert ink_on(page, f"article.tile[data-camera={GOOD}] .frame canvas") > 500
    assert page.locator("#connection").inner_text() == "live"


def test_socketio_refuses_a_page_that_is_not_logged_in(browser: Any, fleet: Fleet) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(fleet.web_url + "/login")
        page.add_script_tag(url="/static/vendor/socket.io.min.js")
        outcome = page.evaluate("""() => new Promise((resolve) => {
            const socket = io({ transports: ["websocket"], reconnection: false });
            socket.on("connect", () => resolve("connected"));
            socket.on("connect_error", (error) => resolve(`refused: ${error.message}`));
            setTimeout(() => resolve("no answer"), 20000);
        })""")
        # refused at the Engine.IO handshake (401), before the socket holds anything
        assert outcome.startswith("refused:"), outcome
    finally:
        context.close()


def test_a_change_from_the_page_without_the_csrf_header_is_refused(page: Any, fleet: Fleet) -> None:
    status, error = page.evaluate("""async () => {
        const response = await fetch("/api/cameras", { method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ id: "csrf-probe", url: "x", enabled: false }) });
        return [response.status, (await response.json()).error];
    }""")
    assert status == 400 and "CSRF" in error
    assert fleet.api("/api/cameras/csrf-probe").status_code == 404


def fill_camera_form(page: Any, fields: dict[str, str]) -> Any:
    form = page.locator("#camera-form")
    for name, value in fields.items():
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button.save").click()
    return form


def test_a_camera_added_through_the_form_goes_online(page: Any, fleet: Fleet) -> None:
    """A second camera on the same clip: its tile appears, and turns online by itself."""
    page.click("#add-camera")
    try:
        form = fill_camera_form(page, {"id": "second", "url": str(SAMPLE_VIDEO), "name": "Second view",
                                       "sample_fps": "1"})
        form.wait_for(state="hidden")
        added = tile(page, "second")
        added.wait_for(timeout=10_000)
        assert added.locator(".name").inner_text() == "Second view"
        added.locator(".status.online").wait_for(timeout=60_000)
        camera = fleet.api("/api/cameras/second").json()
        assert camera["sample_fps"] == 1 and camera["enabled"] is True
    finally:
        fleet.request("DELETE", "/api/cameras/second")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "bad id", "url": "x"}, "id: String should match pattern"),
        ({"id": GOOD, "url": str(SAMPLE_VIDEO)}, f"id: camera '{GOOD}' already exists"),
        ({"id": "fast", "url": "x", "sample_fps": "20"},
         "sample_fps: Input should be less than or equal to 15"),
        ({"id": "nourl", "url": ""}, "url: String should have at least 1 character"),
        ({"id": "metadata", "url": "rtsp://169.254.169.254/"}, "url: rtsp://169.254.169.254/: 169.254"),
        ({"id": "outside", "url": "/etc/passwd"}, "url: /etc/passwd: a video file must be under the media"),
    ],
    ids=["bad-id", "taken-id", "too-fast", "no-url", "metadata-host", "outside-file"],
)
def test_the_form_shows_the_api_validation_message(page: Any, fleet: Fleet, fields: dict[str, str],
                                                   message: str) -> None:
    page.click("#add-camera")
    form = fill_camera_form(page, fields)
    error = form.locator(".form-error")
    error.wait_for(timeout=10_000)
    assert error.inner_text().startswith(message)
    assert form.is_visible()  # still open, to correct the entry
    if fields["id"] != GOOD:
        assert fleet.api(f"/api/cameras/{fields['id'].replace(' ', '%20')}").status_code == 404


def test_a_camera_edited_then_deleted_through_the_form(page: Any, fleet: Fleet) -> None:
    camera = {"id": "spare", "url": "rtsp://127.0.0.1:9/none", "enabled": False,
              "zones": [{"name": "kerb", "kind": "line", "points": [[0, 10], [20, 10]]}]}
    created = fleet.request("POST", "/api/cameras", json=camera)
    assert created.status_code == 201
    try:
        spare = tile(page, "spare")
        spare.wait_for(timeout=20_000)  # the page picks up cameras added elsewhere
        spare.locator("button.edit-camera").click()
        form = fill_camera_form(page, {"name": "Spare, renamed", "sample_fps": "2.5"})
        form.wait_for(state="hidden")
        spare.locator(".name", has_text="Spare, renamed").wait_for(timeout=10_000)
        edited = fleet.api("/api/cameras/spare").json()
        assert edited["name"] == "Spare, renamed" and edited["sample_fps"] == 2.5
        assert edited["zones"] == created.json()["zones"] and edited["enabled"] is False  # the rest stays

        spare.locator("button.edit-camera").click()
        form.locator("button.delete").click()
        form.locator("button.confirm-delete").click()
        spare.wait_for(state="detached", timeout=10_000)
        assert fleet.api("/api/cameras/spare").status_code == 404
    finally:
        fleet.request("DELETE", "/api/cameras/spare")


def click_frame(page: Any, points: list[tuple[float, float]]) -> None:
    """Click the editor's frame at fractions of its width and height."""
    canvas = page.locator("#geometry-dialog .geometry-frame canvas")
    box = canvas.bounding_box()
    for fx, fy in points:
        canvas.click(position={"x": fx * box["width"], "y": fy * box["height"]})


def test_zones_and_calibration_drawn_on_the_frame(page: Any, fleet: Fleet) -> None:
    original = fleet.api(f"/api/cameras/{GOOD}").json()
    original.pop("status")
    camera = tile(page, GOOD)
    wait_for_frame(camera)
    try:
        camera.locator("button.edit-geometry").click()
        dialog = page.locator("#geometry-dialog")
        page.wait_for_function("() => document.querySelector('#geometry-dialog img').naturalWidth > 0")
        # A line of one point: the API refuses it, and the editor says why.
        dialog.locator("input[value=line]").check()
        click_frame(page, [(0.1, 0.9)])
        dialog.locator("input[name=zone_name]").fill("kerb")
        dialog.locator("button.save").click()
        dialog.locator(".form-error", has_text="a line needs at least 2 points").wait_for(timeout=10_000)
        click_frame(page, [(0.9, 0.9)])
        dialog.locator("button.add-zone").click()
        dialog.locator("input[value=polygon]").check()
        click_frame(page, [(0.3, 0.5), (0.6, 0.5), (0.6, 0.8)])
        dialog.locator("input[name=zone_name]").fill("lawn")
        dialog.locator("input[name=zone_classes]").fill("person, bicycle")
        dialog.locator("button.add-zone").click()
        dialog.locator("input[value=calibration]").check()
        click_frame(page, [(0.2, 0.4), (0.8, 0.4), (0.9, 0.95), (0.1, 0.95)])
        for i, (x, y) in enumerate([(0, 20), (12, 20), (12, 0), (0, 0)]):
            dialog.locator(f"input[name=ground_x_{i}]").fill(str(x))
            dialog.locator(f"input[name=ground_y_{i}]").fill(str(y))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "zones-editor-laptop.png"))
        dialog.locator("button.save").click()
        dialog.wait_for(state="hidden", timeout=10_000)

        saved = fleet.api(f"/api/cameras/{GOOD}").json()
        assert [(z["name"], z["kind"], len(z["points"])) for z in saved["zones"]] == [
            ("kerb", "line", 2), ("lawn", "polygon", 3)]
        assert saved["zones"][1]["classes"] == ["person", "bicycle"]
        assert all(0 <= x <= 768 and 0 <= y <= 576 for z in saved["zones"] for x, y in z["points"])
        assert saved["calibration"]["ground_points"] == [[0, 20], [12, 20], [12, 0], [0, 0]]
        assert len(saved["calibration"]["image_points"]) == 4
    finally:
        fleet.request("PUT", f"/api/cameras/{GOOD}", json=original)


def test_the_system_panel_shows_the_fleet(page: Any) -> None:
    panel = page.locator("#system-panel")
    panel.locator(".workers-alive", has_text=f"{len(ROLES)} alive").wait_for(timeout=60_000)
    assert [panel.locator("li", has_text=f"{role}@").count() for role in ROLES] == [1] * len(ROLES)
    assert panel.locator("h3", has_text="Queues").count() == 1
    assert panel.locator("td", has_text="...0001").count() == 1  # the key, masked
    assert "sk-test-0001" not in page.content()


def test_charts_count_frames_per_minute_and_follow_stats_events(page: Any) -> None:
    chart = tile(page, GOOD).locator(".chart")
    selector = f"article.tile[data-camera={GOOD}] .chart"
    page.wait_for_function("(sel) => Number(document.querySelector(sel).dataset.frames || 0) > 0",
                           arg=selector, timeout=90_000)
    counted = int(chart.get_attribute("data-frames") or 0)
    # The page fetched the counts once: more frames can only come from `stats` events.
    page.wait_for_function("([sel, n]) => Number(document.querySelector(sel).dataset.frames) > n",
                           arg=[selector, counted], timeout=60_000)
    assert ink_on(page, f"{selector} canvas") > 100
    assert "person" in chart.locator(".chart-legend").inner_text()


def test_an_alert_is_acknowledged_then_resolved_from_the_feed(page: Any, fleet: Fleet) -> None:
    shown_before = page.locator("#alerts li").evaluate_all("items => items.map(i => i.dataset.alertId)")
    # The fleet's risky-group pattern alerts on a pedestrian beside a parked car, once its
    # cooldown (5 s of capture time) after any earlier alert on the camera has passed.
    alert_id = page.wait_for_function(
        """(before) => [...document.querySelectorAll("#alerts li[data-state=open]")]
            .map((item) => item.dataset.alertId).find((id) => !before.includes(id))""",
        arg=shown_before, timeout=90_000).json_value()
    item = page.locator(f'#alerts li[data-alert-id="{alert_id}"]')
    assert item.locator(".reason").inner_text()
    assert item.locator("img.thumb, .thumb.none").count() == 1

    item.locator("button.acknowledge").click()
    item.locator(".state.acknowledged").wait_for(timeout=10_000)
    assert item.locator("button.acknowledge").is_disabled()
    assert api_state(fleet, alert_id) == "acknowledged"

    item.locator("button.resolve").click()
    item.locator(".state.resolved").wait_for(timeout=10_000)
    assert item.locator("button.acknowledge").is_disabled() and item.locator("button.resolve").is_disabled()
    assert api_state(fleet, alert_id) == "resolved"
    # Nothing follows resolved.
    assert fleet.request("POST", f"/api/alerts/{alert_id}/acknowledge").status_code == 409


def api_state(fleet: Fleet, alert_id: str | None) -> str:
    alerts = fleet.api("/api/alerts?limit=1000").json()
    return next(a["state"] for a in alerts if a["alert_id"] == alert_id)


def test_screenshots_with_alerts_at_laptop_and_phone_widths(page: Any, fleet: Fleet) -> None:
    """Saved for people to look at; the page must also fit a phone's width."""
    wait_until(lambda: fleet.api("/api/alerts?limit=1").json(), 90, "an alert", fleet)
    page.locator("#alerts li").first.wait_for(timeout=30_000)
    original = with_zones(fleet, GOOD)
    try:
        page.reload()  # with the zones just set
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        wait_for_frame(tile(page, GOOD))
        page.locator("#system-panel .card").first.wait_for(timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "dashboard-laptop.png"))
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(500)  # the tiles redraw for the new width
        page.screenshot(path=str(SCREENSHOTS / "dashboard-phone.png"), full_page=True)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"], \
            "the dashboard is wider than a phone"
        page.click("#add-camera")
        page.screenshot(path=str(SCREENSHOTS / "camera-form-phone.png"))
        assert page.locator("#camera-dialog").bounding_box()["width"] <= PHONE["width"]
        page.locator("#camera-form button.cancel").click()
        tile(page, GOOD).locator("button.edit-geometry").click()
        page.wait_for_function("() => document.querySelector('#geometry-dialog img').naturalWidth > 0")
        page.wait_for_timeout(300)  # the zones are drawn once the frame has loaded
        page.screenshot(path=str(SCREENSHOTS / "zones-editor-phone.png"))
        assert page.locator("#geometry-dialog").bounding_box()["width"] <= PHONE["width"]
    finally:
        fleet.request("PUT", f"/api/cameras/{GOOD}", json=original)


def with_zones(fleet: Fleet, camera_id: str) -> dict[str, Any]:
    """Give the camera a polygon and a counting line; the camera as it was."""
    original = fleet.api(f"/api/cameras/{camera_id}").json()
    original.pop("status")
    zones = [{"name": "lawn", "points": [[200, 330], [520, 300], [600, 560], [150, 560]]},
             {"name": "kerb", "kind": "line", "points": [[0, 260], [760, 200]]}]
    assert fleet.request("PUT", f"/api/cameras/{camera_id}", json={**original, "zones": zones}).ok
    return original


# Model output is hostile: shown as text, it stays inert.
HOSTILE = '<img src=x onerror="window.pwned = true">'


def model_verdict(verification: Verification | None, reason: str, failed: bool = False) -> Verdict:
    return Verdict(risk_level=RiskLevel.HIGH, risk_type="crossing", confidence=0.8, reason=reason,
                   source=VerdictSource.FALLBACK if failed else VerdictSource.LLM, verification=verification)


def verified_alert(fleet: Fleet, alert_id: str, created_at: float, verdict: Verdict) -> Alert:
    """A conflict's alert, stored with its verdict as the fleet applies one (a rejected
    one resolved)."""
    raised = Alert(alert_id=alert_id, camera_id="verify-cam", frame_id=f"verify-cam:{int(created_at)}",
                   created_at=created_at, risk_level=RiskLevel.HIGH, risk_type="crossing",
                   reason="TTC 1.2 s between a car and a person", source=VerdictSource.RULES,
                   pattern="conflict", conflict_id=alert_id, conflicts=(alert_id,),
                   verification=Verification.UNVERIFIED)
    alert = verified(raised, verdict, resolve_rejected=True, now=time.time())
    assert fleet.store.add_alert(alert, now=time.time())
    return alert


def test_conflict_alerts_show_their_verification_and_filter_by_it(page: Any, fleet: Fleet) -> None:
    now = time.time()
    tag = f"{now:.3f}".replace(".", "")
    reasons = {"confirmed": f"the car brakes hard for the pedestrian {HOSTILE}",
               "rejected": "two parked cars side by side: no real conflict",
               "unverified": "LLM unavailable (timeout); TTC 1.2 s"}
    confirmed = verified_alert(fleet, f"verify-cam:conflict:{tag}-1", now,
                               model_verdict(Verification.CONFIRMED, reasons["confirmed"]))
    rejected = verified_alert(fleet, f"verify-cam:conflict:{tag}-2", now + 0.1,
                              model_verdict(Verification.REJECTED, reasons["rejected"]))
    failed = verified_alert(fleet, f"verify-cam:conflict:{tag}-3", now + 0.2,
                            model_verdict(None, reasons["unverified"], failed=True))
    assert rejected.state is AlertState.RESOLVED and confirmed.state is AlertState.OPEN
    assert failed.verification is Verification.UNVERIFIED
    event = conflict_event(27, start=now - 25, camera_id=f"verify-{tag}")
    assert event is not None
    fleet.store.save_conflicts([event], now=now)
    fleet.store.save_verdict(event.conflict_id, model_verdict(Verification.UNCERTAIN, "too dark to tell"),
                             ConflictSeverity.SERIOUS)
    page.reload()  # stored behind the fleet's back: no event announced them
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)

    def item(alert: Alert) -> Any:
        return page.locator(f'#alerts li[data-alert-id="{alert.alert_id}"]')

    for alert, state in ((confirmed, "confirmed"), (rejected, "rejected"), (failed, "unverified")):
        shown = item(alert)
        shown.wait_for(timeout=10_000)
        assert shown.get_attribute("data-verification") == state
        assert shown.locator(".verification-badge").inner_text() == state
        assert shown.locator(f".verification-badge.{state}").count() == 1
        assert shown.locator(".verification-reason").inner_text() == reasons[state]
    assert item(confirmed).locator(".verification img").count() == 0
    assert page.evaluate("() => window.pwned") is None
    assert item(rejected).get_attribute("data-state") == "resolved"
    assert item(rejected).locator(".state.resolved").is_visible()
    colours = {state: page.locator(f'#alerts li[data-verification="{state}"] .verification-badge').first
               .evaluate("badge => getComputedStyle(badge).backgroundColor")
               for state in ("confirmed", "rejected", "unverified")}
    assert len(set(colours.values())) == 3, colours

    conflict = page.locator(f'#conflicts li[data-conflict-id="{event.conflict_id}"]')
    conflict.wait_for(timeout=10_000)
    assert conflict.locator(".verification-badge.uncertain").inner_text() == "uncertain"
    assert conflict.locator(".verification-reason").inner_text() == "too dark to tell"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#alerts-feed").screenshot(path=str(SCREENSHOTS / "verification-laptop.png"))

    def shown_states() -> set[str]:
        return set(page.locator("#alerts li").evaluate_all("items => items.map(i => i.dataset.verification)"))

    page.select_option("#verification-filter", "confirmed")
    item(rejected).wait_for(state="detached", timeout=10_000)
    assert item(confirmed).is_visible() and shown_states() == {"confirmed"}
    page.select_option("#verification-filter", "rejected")
    item(confirmed).wait_for(state="detached", timeout=10_000)
    assert item(rejected).is_visible() and shown_states() == {"rejected"}
    page.select_option("#alert-filters select[name=state]", "open")  # with the other filters
    item(rejected).wait_for(state="detached", timeout=10_000)
    page.select_option("#verification-filter", "unverified")
    item(failed).wait_for(timeout=10_000)
    assert item(confirmed).count() == 0 and item(rejected).count() == 0
    page.select_option("#alert-filters select[name=state]", "")
    page.select_option("#verification-filter", "")
    for alert in (confirmed, rejected, failed):
        item(alert).wait_for(timeout=10_000)
