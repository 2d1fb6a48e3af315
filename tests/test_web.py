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
from trafficrisk.web.bodies import SystemReport
from trafficrisk.workers.store import Store

TOKEN = "web-test-token"
PASSWORD = "web-test-password"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(redis_url: str) -> Iterator[Flask]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, dashboard_password=PASSWORD,  # type: ignore[arg-type]
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
        ({"id": "a", "url": "rtsp://127.0.0.1:6379/"}, 400, "url: rtsp://127.0.0.1:6379/: 127.0.0.1 is this"),
        ({"id": "a", "url": "http://169.254.169.254/x"}, 400, "url: http://169.254.169.254/x: 169.254"),
        ({"id": "a", "url": "file:///etc/passwd"}, 400, "url: file:///etc/passwd: the scheme must be one of"),
        ({"id": "a", "url": "/etc/passwd"}, 400, "url: /etc/passwd: a video file must be under the media"),
        ({"id": "a", "url": "rtsp://u:hunter2@h:99999/x"}, 400, "url: rtsp://u:***@h:99999/x: invalid port"),
        # Found by fuzzing the API: each was a 500.
        ({"id": "a", "url": "~no-such-user/x.avi"}, 400, "url: ~no-such-user/x.avi: no such home directory"),
        ({"id": "a", "url": "x\x00.avi"}, 400, "url: 'x\\x00.avi': contains a NUL character"),
        ({"id": "a", "url": "rtsp://u:hunter2@[h/s"}, 400, "url: rtsp://u:***@[h/s: not a valid URL"),
        ({"id": "a", "url": "x", "snapshot": 0}, 400, "snapshot: Input should be a valid boolean"),
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


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("rtsp://admin:***@10.0.0.5/s", "rtsp://admin:hunter2@10.0.0.5/s"),  # as shown: the password kept
        ("rtsp://admin:n3w@10.0.0.5/s", "rtsp://admin:n3w@10.0.0.5/s"),  # a new one replaces it
        ("rtsp://10.0.0.6/s", "rtsp://10.0.0.6/s"),  # another camera URL, no password
        ("rtsp://admin:***@10.0.0.9/s", "rtsp://admin:***@10.0.0.9/s"),  # masked, another host: as sent
    ],
)
def test_a_camera_urls_password_is_write_only(
    client: FlaskClient, store: Store, sent: str, kept: str
) -> None:
    secret = {"id": "s", "url": "rtsp://admin:hunter2@10.0.0.5/s?token=t0ps3cret"}
    assert client.post("/api/cameras", json=secret, headers=AUTH).status_code == 201
    listed = client.get("/api/cameras", headers=AUTH)
    shown = client.get("/api/cameras/s", headers=AUTH)
    for answer in (listed, shown):
        assert "hunter2" not in answer.text and "t0ps3cret" not in answer.text
    assert shown.json is not None and shown.json["url"] == "rtsp://admin:***@10.0.0.5/s?token=***"
    store.put_camera(Camera(id="s", url="rtsp://admin:hunter2@10.0.0.5/s"))
    assert client.put("/api/cameras/s", json={"url": sent}, headers=AUTH).status_code == 200
    camera = store.get_camera("s")
    assert camera is not None and camera.url == kept


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
                              source="llm", group_id="g0"), now=200.0)
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
    [(PASSWORD, True, 302), ("wrong", True, 401), (PASSWORD, False, 400)],
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
        assert PASSWORD not in page and TOKEN not in page
        assert client.get("/api/health").status_code == 200  # the session opens the API too


def test_login_redirect_stays_on_site(client: FlaskClient) -> None:
    csrf = login_form(client)
    response = client.post("/login?next=//evil.example/x", data={"password": PASSWORD, "csrf_token": csrf})
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


def logged_in(client: FlaskClient) -> str:
    """Log the test client in through the form; the page's CSRF token for API calls."""
    client.post("/login", data={"password": PASSWORD, "csrf_token": login_form(client)})
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match is not None, "the dashboard has no csrf-token meta tag"
    return match.group(1)


CAMERA = {"id": "a", "url": "rtsp://h/s"}


@pytest.mark.parametrize(
    ("method", "path", "auth", "csrf", "status"),
    [
        ("post", "/api/cameras", "session", "page", 201),
        ("post", "/api/cameras", "session", None, 400),
        ("post", "/api/cameras", "session", "wrong", 400),
        ("post", "/api/cameras", "session", "", 400),
        ("post", "/api/cameras", "bearer", None, 201),  # scripts need no CSRF header
        ("post", "/api/cameras", "bearer+session", None, 201),
        ("post", "/api/cameras", "none", "page", 401),
        ("post", "/api/cameras", "wrong-bearer+session", None, 400),
        ("put", "/api/cameras/a", "session", None, 400),
        ("put", "/api/cameras/a", "session", "page", 200),
        ("delete", "/api/cameras/a", "session", None, 400),
        ("delete", "/api/cameras/a", "session", "wrong", 400),
        ("delete", "/api/cameras/a", "session", "page", 204),
        ("get", "/api/cameras/a", "session", None, 200),  # reading changes nothing: no token
    ],
)
def test_api_changes_from_a_session_need_the_csrf_header(
        client: FlaskClient, store: Store, method: str, path: str, auth: str, csrf: str | None,
        status: int) -> None:
    if path != "/api/cameras":
        store.put_camera(Camera.model_validate(CAMERA))
    token = logged_in(client) if "session" in auth else ""
    headers = {}
    if auth.startswith("bearer"):
        headers["Authorization"] = f"Bearer {TOKEN}"
    if auth.startswith("wrong-bearer"):
        headers["Authorization"] = "Bearer wrong"
    if csrf is not None:
        headers["X-CSRF-Token"] = token if csrf == "page" else csrf
    response = getattr(client, method)(path, json=CAMERA, headers=headers)
    assert response.status_code == status
    if status == 400:
        assert "CSRF" in (response.json or {})["error"]
    done = status < 300
    refused_create, deleted = method == "post" and not done, method == "delete" and done
    assert (store.get_camera("a") is None) == (refused_create or deleted)  # refused: nothing changed


def test_the_dashboard_carries_its_csrf_token_and_no_secret(client: FlaskClient) -> None:
    token = logged_in(client)
    page = client.get("/").get_data(as_text=True)
    assert f'name="csrf_token" value="{token}"' in page  # the same token as the logout form
    assert TOKEN not in page and PASSWORD not in page
    assert "X-CSRF-Token" not in client.get("/api/health", headers=AUTH).get_data(as_text=True)


def test_system_needs_auth(client: FlaskClient) -> None:
    assert client.get("/api/system").status_code == 401
    assert client.get("/api/system", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.slow  # waits out the 1 s Celery ping with no worker to answer
def test_system_reports_the_fleet(client: FlaskClient, store: Store) -> None:
    store.client.rpush("llm.high", b"m1")
    store.client.rpush("detect\x06\x163", b"m2", b"m3")
    for outcome in ("llm", "llm", "llm", "cache", "fallback"):
        store.count_llm_outcome(outcome, 100)
    for turnaround in (1.0, 2.0, 3.0, 4.0):
        store.record_llm_timing(False, 0.1, turnaround)
    store.count_dropped("backpressure", 4)
    store.count_webhook("delivered")
    store.count_webhook("failed")
    system = client.get("/api/system", headers=AUTH).json or {}
    SystemReport.model_validate(system)  # what the OpenAPI document says it answers
    assert system["queues"] == {"detect": 2, "llm.high": 1, "llm.low": 0, "aggregate": 0, "alerts": 0}
    assert system["llm"]["cache_hit_rate"] == 0.25  # cache / (cache + llm); fallbacks are no answer
    assert system["llm"]["latency_s"]["low"] == {"count": 4, "p50": 3.0, "p95": 4.0}
    assert system["llm"]["latency_s"]["high"] == {"count": 0, "p50": None, "p95": None}
    assert system["llm"]["outcomes"] == {"llm": 3, "cache": 1, "fallback": 1}
    assert system["dropped_frames"] == {"backpressure": 4}
    assert system["webhooks"] == {"delivered": 1, "retried": 0, "failed": 1}
    assert system["keys"] == [] and system["llm"]["enabled"] is False
    # No worker runs here: the ping answers nothing, and says so without an error.
    assert system["workers"]["count"] == 0 and system["workers"]["error"] is None


@pytest.mark.slow  # waits out the 1 s Celery ping with no worker to answer
def test_system_pings_workers_at_most_every_few_seconds(client: FlaskClient) -> None:
    first = (client.get("/api/system", headers=AUTH).json or {})["workers"]
    second = (client.get("/api/system", headers=AUTH).json or {})["workers"]
    assert second["checked_at"] == first["checked_at"]


@pytest.mark.slow  # waits out the 1 s Celery ping with no worker to answer
@pytest.mark.parametrize(
    ("redis_state", "expected"),
    [
        ({}, {"state": "ok", "detail": "", "requests_last_minute": 0, "in_flight": 0}),
        ({"cooldown": "in 30"}, {"state": "cooling"}),
        ({"disabled": "401 from the provider"}, {"state": "disabled", "detail": "401 from the provider"}),
        ({"requests": 3, "inflight": 2}, {"state": "ok", "requests_last_minute": 3, "in_flight": 2}),
    ],
    ids=["idle", "cooling", "disabled", "busy"],
)
def test_system_shows_key_states_masked(redis_url: str, redis_state: dict[str, Any],
                                        expected: dict[str, Any]) -> None:
    import time

    from trafficrisk.workers.key_pool import PREFIX, key_id

    secret = "sk-live-abcdefgh1234"
    settings = Settings(redis_url=redis_url, api_token=TOKEN, llm_base_url="http://llm/v1",  # type: ignore[arg-type]
                        llm_api_keys=secret)
    flask_app, _ = create_app(settings)
    fleet_store: Store = flask_app.extensions["trafficrisk.store"]
    base, now = PREFIX + key_id(secret), time.time()
    if "cooldown" in redis_state:
        fleet_store.client.set(base + ":cooldown", now + 30)
    if "disabled" in redis_state:
        fleet_store.client.set(base + ":disabled", redis_state["disabled"])
    for n in range(redis_state.get("requests", 0)):
        fleet_store.client.zadd(base + ":requests", {f"r{n}": now - 1})
    for n in range(redis_state.get("inflight", 0)):
        fleet_store.client.zadd(base + ":inflight", {f"r{n}": now + 60})
    try:
        response = flask_app.test_client().get("/api/system", headers=AUTH)
    finally:
        fleet_store.client.close()
    text = response.get_data(as_text=True)
    assert secret not in text and key_id(secret) not in text
    [key] = (response.json or {})["keys"]
    assert key["key"] == "...1234"
    assert {k: key[k] for k in expected} == expected
    assert fleet_store.client.keys(base + ":tokens*") == []  # reading booked nothing


ENGINES = ("ultralytics", "torch", "trafficrisk.workers.detection", "trafficrisk.workers.batching",
           "trafficrisk.workers.llm", "trafficrisk.workers.assessment", "trafficrisk.tasks.detect",
           "trafficrisk.tasks.assess")


def test_the_web_imports_no_engine() -> None:
    """The detector and the LLM client stay out of the web process (memory, start-up, CUDA)."""
    import subprocess
    import sys

    code = (f"import sys; from trafficrisk.web import app, system; "
            f"print(sorted(m for m in sys.modules if m.startswith({ENGINES!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("path", "auth"), [("/login", {}), ("/", None), ("/api/health", AUTH), ("/nope", AUTH)]
)
def test_every_answer_carries_the_security_headers(
    client: FlaskClient, path: str, auth: dict[str, str] | None
) -> None:
    if auth is None:  # the dashboard itself, logged in
        client.post("/login", data={"password": PASSWORD, "csrf_token": login_form(client)})
    response = client.get(path, headers=auth or {})
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
