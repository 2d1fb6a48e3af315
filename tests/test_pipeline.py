"""The whole fleet end to end on real parts.

A real redis-server, real Celery worker processes for every queue, the real capture
process on vtest.avi, the real web process (gunicorn) and the project's LLM simulator.
Results must land in Redis and reach a Socket.IO client (the LLM's verdicts on conflicts:
tests/test_verification_fleet.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import socketio
from fleet import (
    ARTIFACTS,
    DEAD,
    GOOD,
    TOKEN,
    Fleet,
    dashboard,
    ink_on,
    newest_result,
    running_fleet,
    wait_for_frame,
    wait_until,
)

from conftest import RtspServer
from trafficrisk.messages import CameraState, FrameResult

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(redis_server, tmp_path_factory.mktemp("fleet-logs")) as running:
        yield running


def test_results_land_in_redis_and_reach_socketio(fleet: Fleet) -> None:
    received: list[dict[str, Any]] = []
    got_one = threading.Event()
    client = socketio.Client()

    @client.on("frame_result")
    def _on_result(data: dict[str, Any]) -> None:
        received.append(data)
        got_one.set()

    client.connect(fleet.web_url, headers={"Authorization": f"Bearer {TOKEN}"}, wait_timeout=10)
    try:
        latest = wait_until(lambda: newest_result(fleet, 0), 90, "a FrameResult in Redis", fleet)
        assert got_one.wait(30), "no frame_result reached the Socket.IO client"
    finally:
        client.disconnect()
    assert latest.detector == "ssd-mobilenet-v2-coco"
    pushed = FrameResult.from_wire(received[0])
    assert pushed.camera_id == GOOD
    with_people = wait_until(lambda: [r for r in fleet.store.history(GOOD, 50)
                                      if any(d.label == "person" for d in r.detections)],
                             60, "a result with pedestrians", fleet)
    assert with_people[0].width == 768 and with_people[0].height == 576
    response = fleet.api(f"/api/cameras/{GOOD}/latest")
    assert response.status_code == 200
    assert FrameResult.from_wire(response.json()).camera_id == GOOD


def test_dead_camera_is_offline_while_the_other_works(fleet: Fleet) -> None:
    statuses = wait_until(lambda: (s := fleet.store.statuses()).get(DEAD) and s[DEAD].state == "offline"
                          and s, 60, "the dead camera to go offline", fleet)
    assert statuses[DEAD].reason.startswith("cannot open rtsp://127.0.0.1")
    assert statuses[GOOD].state is CameraState.ONLINE
    since = time.time()
    wait_until(lambda: newest_result(fleet, since), 60, "results from the good camera", fleet)
    assert fleet.store.latest(DEAD) is None


@pytest.mark.parametrize(
    ("headers", "auth", "refused"),
    [
        ({}, None, True),
        ({"Authorization": "Bearer wrong"}, None, True),
        ({}, {"token": TOKEN}, True),  # the auth payload comes after the handshake: too late
        ({"Authorization": f"Bearer {TOKEN}"}, None, False),
    ],
)
def test_socketio_needs_auth(fleet: Fleet, headers: dict[str, str], auth: dict[str, str] | None,
                             refused: bool) -> None:
    client = socketio.Client(reconnection=False)
    try:
        client.connect(fleet.web_url, headers=headers, auth=auth, wait_timeout=10)
    except socketio.exceptions.ConnectionError as error:
        assert refused, f"refused a valid token: {error}"
        return
    finally:
        if client.connected:
            client.disconnect()
    assert not refused, "an unauthenticated Socket.IO connection was accepted"


def test_dashboard_shows_live_boxes_in_chromium(fleet: Fleet) -> None:
    """Log in with real headless Chromium; the tile's frame and overlay update without reload."""
    with dashboard(fleet) as page:
        tile = page.locator(f"article.tile[data-camera={GOOD}]")
        tile.locator(".status.online").wait_for(timeout=30_000)
        first_src = wait_for_frame(tile)
        page.wait_for_function(
            "([sel, src]) => document.querySelector(sel).src !== src",
            arg=[f"article.tile[data-camera={GOOD}] .frame img", first_src], timeout=30_000)
        drawn = ink_on(page, f"article.tile[data-camera={GOOD}] .frame canvas")
        assert drawn > 500, "no boxes drawn over the frame"
        assert page.locator(".badge.llm-on").count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"))


def test_rtsp_camera_added_through_the_api_survives_a_server_restart(fleet: Fleet,
                                                                     rtsp_server: RtspServer) -> None:
    """A real RTSP stream end to end: added at run time, killed, restarted."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    camera = {"id": "rtsp", "url": rtsp_server.url, "sample_fps": 2}
    response = requests.post(fleet.web_url + "/api/cameras", json=camera, headers=headers, timeout=10)
    assert response.status_code == 201

    def state() -> str | None:
        status = fleet.store.statuses().get("rtsp")
        return status.state if status else None

    def result_after(moment: float) -> FrameResult | None:
        latest = fleet.store.latest("rtsp")
        return latest if latest is not None and latest.captured_at > moment else None

    try:
        wait_until(lambda: result_after(0), 30, "a FrameResult from the RTSP camera", fleet)
        rtsp_server.stop(signal.SIGKILL)
        wait_until(lambda: state() == "offline", 15, "the RTSP camera to go offline", fleet)
        assert fleet.store.statuses()["rtsp"].reason
        restarted = time.time()
        rtsp_server.start()
        wait_until(lambda: state() == "online", 10, "the RTSP camera back online within 10 s", fleet)
        wait_until(lambda: result_after(restarted), 15, "new results after the restart", fleet)
    finally:
        requests.delete(fleet.web_url + "/api/cameras/rtsp", headers=headers, timeout=10)
