"""The API's error contract against a real Redis: every error under /api/ is JSON with an
`error` and the right status, whatever raised it; pages keep their HTML."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import free_port, wait_for_port
from trafficrisk.messages import Alert, AlertState, Camera, RiskLevel
from trafficrisk.settings import Settings
from trafficrisk.web.app import create_app
from trafficrisk.workers.store import CAMERAS_KEY, Store, alert_key

TOKEN = "errors-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = "application/json"
HUGE = 1.7976931348623157e308


def app_for(redis_url: str) -> Flask:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="k")
    app, _ = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def web(redis_url: str) -> Iterator[tuple[FlaskClient, Store]]:
    app = app_for(redis_url)
    store: Store = app.extensions["trafficrisk.store"]
    store.put_camera(Camera(id="cam", url="rtsp://10.0.0.5/s"))
    yield app.test_client(), store
    store.client.close()


def error_of(response: Any) -> str:
    assert response.mimetype == JSON, response.get_data(as_text=True)[:200]
    body = response.json
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    return str(body["error"])


@pytest.mark.parametrize(
    ("method", "path", "send", "status", "error"),
    [
        ("get", "/api/nope", {}, 404, "The requested URL was not found"),
        ("get", "/api", {}, 404, "The requested URL was not found"),
        ("get", "/api/cameras/cam/nope", {}, 404, "The requested URL was not found"),
        ("get", "/api/alerts/a/video.mp4", {}, 404, "The requested URL was not found"),
        ("delete", "/api/cameras", {}, 405, "The method is not allowed"),
        ("patch", "/api/cameras/cam", {"json": {}}, 405, "The method is not allowed"),
        ("post", "/metrics", {}, 405, "The method is not allowed"),
        ("get", "/api/cameras", {"headers": {}}, 401, "authentication required"),
        (
            "post",
            "/api/cameras",
            {"data": "id=a", "content_type": "application/x-www-form-urlencoded"},
            415,
            "body must be JSON",
        ),
        (
            "post",
            "/api/cameras",
            {"data": '{"id": "a", "url": "x"}', "content_type": "text/plain"},
            415,
            "body must be JSON",
        ),
        ("post", "/api/cameras", {}, 415, "body must be JSON"),
        ("put", "/api/cameras/cam", {"data": "url=x"}, 415, "body must be JSON"),
        ("post", "/api/cameras", {"data": "{", "content_type": JSON}, 400, "body must be a JSON object"),
        ("post", "/api/cameras", {"data": "null", "content_type": JSON}, 400, "body must be a JSON object"),
        ("post", "/api/cameras", {"data": '"cam"', "content_type": JSON}, 400, "body must be a JSON object"),
        # json.loads gives up on deep nesting with a RecursionError: it was a 500.
        (
            "post",
            "/api/cameras",
            {"data": "[" * 100_000, "content_type": JSON},
            400,
            "body must be a JSON object",
        ),
        (
            "post",
            "/api/cameras",
            {"data": '{"a":' * 50_000, "content_type": JSON},
            400,
            "body must be a JSON object",
        ),
        (
            "post",
            "/api/cameras",
            {"data": " " * (1024 * 1024 + 1), "content_type": JSON},
            413,
            "The data value transmitted exceeds the capacity limit",
        ),
        # Strict: the JSON types the document gives, nothing guessed.
        (
            "post",
            "/api/cameras",
            {"json": {"id": "a", "url": "x", "snapshot": 0}},
            400,
            "snapshot: Input should be a valid boolean",
        ),
        (
            "post",
            "/api/cameras",
            {"json": {"id": "a", "url": "x", "sample_fps": "5"}},
            400,
            "sample_fps: Input should be a valid number",
        ),
        (
            "post",
            "/api/cameras",
            {"json": {"id": "a", "url": "x", "enabled": "true"}},
            400,
            "enabled: Input should be a valid boolean",
        ),
        (
            "post",
            "/api/cameras",
            {
                "json": {
                    "id": "a",
                    "url": "x",
                    "calibration": {
                        "image_points": [[0, 0], [HUGE, 0], [HUGE, HUGE], [0, HUGE]],
                        "ground_points": [[0, 0], [10, 0], [10, 10], [0, 10]],
                    },
                }
            },
            400,
            "calibration: Value error, image points: coordinates must be within ±1e+07",
        ),
        ("get", "/api/alerts?limit=1.5", {}, 400, "limit: must be an integer, got '1.5'"),
        ("get", "/api/alerts?limit=1e4", {}, 400, "limit: must be between 1 and 1000"),  # 10000: an integer
        ("get", "/api/alerts?limit=" + "9" * 5000, {}, 400, "limit: must be an integer"),
        ("get", "/api/alerts?level=High", {}, 400, "level: must be one of none, low, medium, high"),
        ("get", "/api/alerts?since=nan", {}, 400, "since: must be between 0 and inf"),
        ("get", "/api/alerts?since=-1", {}, 400, "since: must be between 0 and inf"),
        ("get", "/api/conflicts?severity=grave", {}, 400, "severity: must be one of potential, serious"),
        ("get", "/api/stats?window=0", {}, 400, "window: must be between 1 and 1440"),
        ("get", "/api/stats?camera=nope", {}, 404, "no camera 'nope'"),
        ("get", "/api/cameras/cam/frame.jpg?seq=latest", {}, 400, "seq: must be an integer, got 'latest'"),
        ("get", "/api/cameras/cam/frame.jpg?seq=-1", {}, 400, "seq: must be between 0 and inf"),
        ("get", "/api/cameras/nope", {}, 404, "no camera 'nope'"),
        ("post", "/api/alerts/nope/acknowledge", {}, 404, "no alert 'nope'"),
    ],
)
def test_every_api_error_is_json(
    web: tuple[FlaskClient, Store], method: str, path: str, send: dict[str, Any], status: int, error: str
) -> None:
    client, _ = web
    response = getattr(client, method)(path, **{"headers": AUTH, **send})
    assert response.status_code == status
    assert error_of(response).startswith(error)
    if status == 405:
        assert set(response.headers["Allow"].split(", ")) >= {"GET", "HEAD", "OPTIONS"}


@pytest.mark.parametrize(("path", "status"), [("/nope", 404), ("/login?next=x", 200)])
def test_pages_keep_their_html(web: tuple[FlaskClient, Store], path: str, status: int) -> None:
    client, _ = web
    response = client.get(path)
    assert response.status_code == status and response.mimetype == "text/html"


@pytest.mark.parametrize(
    ("corrupt", "method", "path"),
    [
        ("camera", "get", "/api/cameras/cam"),
        ("camera", "get", "/api/cameras"),
        ("camera", "get", "/api/health"),
        # A stored alert that fails to parse is the fleet's fault, not a 409 for the client.
        ("alert", "post", "/api/alerts/cam:risky-group:1/acknowledge"),
        ("alert", "get", "/api/alerts/cam:risky-group:1"),
    ],
)
def test_a_record_that_fails_to_parse_is_a_500_without_details(
    web: tuple[FlaskClient, Store], caplog: pytest.LogCaptureFixture, corrupt: str, method: str, path: str
) -> None:
    client, store = web
    if corrupt == "camera":
        store.client.hset(CAMERAS_KEY, "cam", '{"id": "cam", "url": "rtsp://u:hunter2@h/s", "fps": 1}')
    else:
        store.client.set(alert_key("cam:risky-group:1"), '{"alert_id": "cam:risky-group:1"}')
    with caplog.at_level(logging.ERROR, logger="trafficrisk.web.errors"):
        response = getattr(client, method)(path, headers=AUTH)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert error_of(response) == "internal error: the web process's log has the details"
    assert "Traceback" not in text and "hunter2" not in text and "ValidationError" not in text
    assert f"{method.upper()} {path} failed" in caplog.text and "ValidationError" in caplog.text


def test_a_change_the_lifecycle_refuses_is_still_a_409(web: tuple[FlaskClient, Store]) -> None:
    client, store = web
    store.add_alert(
        Alert(
            alert_id="cam:risky-group:1",
            camera_id="cam",
            frame_id="cam:1",
            created_at=1.0,
            risk_level=RiskLevel.HIGH,
            risk_type="t",
            reason="r",
            source="rules",
        ),
        now=1.0,
    )
    store.change_alert_state("cam:risky-group:1", AlertState.RESOLVED, now=2.0)
    response = client.post("/api/alerts/cam:risky-group:1/acknowledge", headers=AUTH)
    assert response.status_code == 409
    assert error_of(response) == "alert cam:risky-group:1 is resolved: it cannot become acknowledged"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/api/cameras", "Redis unreachable (ConnectionError): try again shortly"),
        ("/api/alerts?level=high", "Redis unreachable (ConnectionError): try again shortly"),
        ("/api/cameras/cam/frame.jpg", "Redis unreachable (ConnectionError): try again shortly"),
        ("/metrics", "Redis unreachable (ConnectionError): try again shortly"),
        # the failed-login limits read Redis before the view: the same 503 as everywhere
        ("/api/health", "Redis unreachable (ConnectionError): try again shortly"),
    ],
)
def test_redis_unreachable_is_a_503(path: str, error: str) -> None:
    app = app_for(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    response = app.test_client().get(path, headers=AUTH)
    assert response.status_code == 503
    assert error_of(response) == error


@pytest.mark.slow  # waits out the client's 10 s socket timeout
def test_a_redis_that_stops_answering_is_a_503(tmp_path: Any) -> None:
    port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        client = app_for(f"redis://127.0.0.1:{port}/0").test_client()
        assert client.get("/api/cameras", headers=AUTH).status_code == 200
        os.kill(redis.pid, signal.SIGSTOP)  # frozen: connected, never answering
        started = time.monotonic()
        response = client.get("/api/cameras", headers=AUTH)
        assert response.status_code == 503, time.monotonic() - started
        assert error_of(response) == "Redis unreachable (TimeoutError): try again shortly"
    finally:
        os.kill(redis.pid, signal.SIGCONT)
        redis.terminate()
        redis.wait(10)
