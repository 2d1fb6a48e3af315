"""The web process's REST API, login and pages, against a real Redis."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from trafficrisk.messages import Alert, Camera, FrameResult, RiskLevel
from trafficrisk.settings import Settings
from trafficrisk.web.app import create_app
from trafficrisk.workers.store import Store

TOKEN = "web-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(redis_url: str) -> Iterator[Flask]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, dashboard_password="pw",  # type: ignore[arg-type]
                        secret_key="k")
    flask_app, _ = create_app(settings)
    flask_app.config["TESTING"] = True
    yield flask_app
    flask_app.extensions["trafficrisk.store"].client.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def store(app: Flask) -> Store:
    return app.extensions["trafficrisk.store"]  # type: ignore[no-any-return]


def result(seq: int) -> FrameResult:
    return FrameResult(camera_id="cam", frame_id=f"cam:{seq}", seq=seq, captured_at=100.0 + seq,
                       processed_at=101.0 + seq, width=4, height=3, detector="t", llm_enabled=False,
                       detections=(), groups=(), risk_level=RiskLevel.NONE)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/health", {}, 401),
        ("/api/health", {"Authorization": "Bearer wrong"}, 401),
        ("/api/health", {"Authorization": TOKEN}, 401),  # no "Bearer "
        ("/api/health", AUTH, 200),
        ("/api/cameras", {}, 401),
        ("/api/alerts", {}, 401),
        ("/metrics", {}, 401),
        ("/metrics", AUTH, 200),
    ],
)
def test_api_needs_the_token(client: FlaskClient, path: str, headers: dict[str, str], status: int) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == status
    assert TOKEN not in response.get_data(as_text=True)


SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"id": "a", "url": "rtsp://h/s"}, 201, None),
        ({"id": "a", "url": "rtsp://h/s", "sample_fps": 20}, 400, "sample_fps: Input should be less"),
        ({"id": "a b", "url": "x"}, 400, "id: String should match pattern"),
        ({"id": "a", "url": "x", "colour": "red"}, 400, "colour: Extra inputs are not permitted"),
        ({"url": "x"}, 400, "id: Field required"),
        ([1, 2], 400, "body must be a JSON object"),
        ({"id": "a", "url": "x", "rtsp_transport": "udp"}, 201, None),
        ({"id": "a", "url": "x", "rtsp_transport": "sctp"}, 400, "rtsp_transport: Input should be 'tcp'"),
        ({"id": "a", "url": "x", "calibration": {"image_points": SQUARE, "ground_points": SQUARE}},
         201, None),
        ({"id": "a", "url": "x", "calibration": {"image_points": SQUARE[:3], "ground_points": SQUARE}},
         400,
         "calibration.image_points: Tuple should have at least 4 items"),
        ({"id": "a", "url": "x", "calibration": {"image_points": [[0, 0], [1, 1], [2, 2], [0, 5]],
                                                 "ground_points": SQUARE}}, 400,
         "calibration: Value error, image points: three of the four points lie on one line"),
    ],
)
def test_create_camera(client: FlaskClient, body: Any, status: int, error: str | None) -> None:
    response = client.post("/api/cameras", json=body, headers=AUTH)
    assert response.status_code == status
    if error:
        assert response.json is not None and response.json["error"].startswith(error)


def test_camera_lifecycle(client: FlaskClient) -> None:
    assert client.post("/api/cameras", json={"id": "a", "url": "x"}, headers=AUTH).status_code == 201
    assert client.post("/api/cameras", json={"id": "a", "url": "y"}, headers=AUTH).status_code == 409
    assert client.put("/api/cameras/a", json={"url": "z", "sample_fps": 3}, headers=AUTH).status_code == 200
    assert client.put("/api/cameras/a", json={"id": "b", "url": "z"}, headers=AUTH).status_code == 400
    assert client.put("/api/cameras/nope", json={"url": "z"}, headers=AUTH).status_code == 404
    camera = client.get("/api/cameras/a", headers=AUTH).json
    assert camera is not None and camera["url"] == "z" and camera["sample_fps"] == 3
    listed = client.get("/api/cameras", headers=AUTH).json
    assert [c["id"] for c in listed or []] == ["a"]
    assert client.delete("/api/cameras/a", headers=AUTH).status_code == 204
    assert client.delete("/api/cameras/a", headers=AUTH).status_code == 404
    assert client.get("/api/cameras/a", headers=AUTH).status_code == 404


def test_latest_and_frame(client: FlaskClient, store: Store) -> None:
    store.put_camera(Camera(id="cam", url="x"))
    assert client.get("/api/cameras/cam/latest", headers=AUTH).status_code == 404
    assert client.get("/api/cameras/cam/frame.jpg", headers=AUTH).status_code == 404
    store.put_frame("cam", 2, b"\xff\xd8two")
    store.put_frame("cam", 1, b"\xff\xd8one")
    store.save_result(result(2))
    assert FrameResult.from_wire(client.get("/api/cameras/cam/latest", headers=AUTH).json or {}).seq == 2
    latest_frame = client.get("/api/cameras/cam/frame.jpg", headers=AUTH)
    assert latest_frame.mimetype == "image/jpeg" and latest_frame.data == b"\xff\xd8two"
    assert latest_frame.headers["Cache-Control"] == "no-store"
    assert client.get("/api/cameras/cam/frame.jpg?seq=1", headers=AUTH).data == b"\xff\xd8one"
    assert client.get("/api/cameras/cam/frame.jpg?seq=9", headers=AUTH).status_code == 404
    assert client.get("/api/cameras/other/latest", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("query", "status", "ids"),
    [
        ("", 200, ["b:2:g0", "a:1:g0"]),
        ("?camera=a", 200, ["a:1:g0"]),
        ("?level=high", 200, ["b:2:g0"]),
        ("?since=101.5", 200, ["b:2:g0"]),
        ("?limit=1", 200, ["b:2:g0"]),
        ("?level=extreme", 400, None),
        ("?since=yesterday", 400, None),
        ("?limit=0", 400, None),
    ],
)
def test_alerts_query(client: FlaskClient, store: Store, query: str, status: int,
                      ids: list[str] | None) -> None:
    for n, (camera, level) in enumerate([("a", RiskLevel.MEDIUM), ("b", RiskLevel.HIGH)], start=1):
        store.add_alert(Alert(alert_id=f"{camera}:{n}:g0", camera_id=camera, frame_id=f"{camera}:{n}",
                              created_at=100.0 + n, risk_level=level, risk_type="t", reason="r",
                              source="llm", group_id="g0"))
    response = client.get("/api/alerts" + query, headers=AUTH)
    assert response.status_code == status
    if ids is not None:
        assert [a["alert_id"] for a in response.json or []] == ids
    else:
        assert "error" in (response.json or {})


def login_form(client: FlaskClient) -> str:
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize(
    ("password", "with_csrf", "status"),
    [("pw", True, 302), ("wrong", True, 401), ("pw", False, 400)],
)
def test_login(client: FlaskClient, password: str, with_csrf: bool, status: int) -> None:
    assert client.get("/").status_code == 302  # pages need a login
    csrf = login_form(client)
    form = {"password": password, **({"csrf_token": csrf} if with_csrf else {})}
    response = client.post("/login", data=form)
    assert response.status_code == status
    dashboard = client.get("/")
    assert dashboard.status_code == (200 if status == 302 else 302)
    if status == 302:
        page = dashboard.get_data(as_text=True)
        assert "LLM off" in page and "socket.io.min.js" in page
        assert "pw" not in re.findall(r"\w+", page) and TOKEN not in page
        assert client.get("/api/health").status_code == 200  # the session opens the API too


def test_login_redirect_stays_on_site(client: FlaskClient) -> None:
    csrf = login_form(client)
    response = client.post("/login?next=//evil.example/x", data={"password": "pw", "csrf_token": csrf})
    assert response.headers["Location"] == "/"


def test_metrics_report_queue_depth(client: FlaskClient, store: Store) -> None:
    store.client.rpush("detect", b"m1", b"m2")
    store.client.rpush("detect\x06\x163", b"m3")
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'queue_depth{queue="detect"} 3.0' in text
    assert 'queue_depth{queue="llm.high"} 0.0' in text


def test_metrics_report_dropped_frames(client: FlaskClient, store: Store) -> None:
    store.count_dropped("backpressure", 3)
    store.count_dropped("expired")
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'frames_dropped_total{reason="backpressure"} 3.0' in text
    assert 'frames_dropped_total{reason="expired"} 1.0' in text


def test_metrics_report_llm_outcomes_tokens_and_latency(client: FlaskClient, store: Store) -> None:
    for outcome, tokens in [("llm", 400), ("llm", 350), ("cache", 0), ("shed", 0)]:
        store.count_llm_outcome(outcome, tokens)
    for turnaround in (1.0, 2.0, 3.0, 9.0):
        store.record_llm_timing(True, 0.1, turnaround)
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    for line in ('llm_requests_total{outcome="llm"} 2.0', 'llm_requests_total{outcome="fallback"} 0.0',
                 'llm_requests_total{outcome="shed"} 1.0', "llm_cache_hits_total 1.0",
                 "llm_tokens_total 750.0",
                 'llm_latency_seconds{priority="high",quantile="0.5"} 3.0',
                 'llm_latency_seconds{priority="high",quantile="0.95"} 9.0'):
        assert line in text
    assert 'priority="low"' not in text  # no low-priority assessments yet: no figure, rather than a 0
