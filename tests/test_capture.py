"""Camera readers on real sources: the sample video, a dead RTSP port, a missing file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from conftest import SAMPLE_VIDEO, free_port
from trafficrisk.messages import Camera, CameraState
from trafficrisk.workers.capture import CameraReader, mask_url


class StatusLog:
    def __init__(self) -> None:
        self.entries: list[tuple[CameraState, str]] = []
        self.changed = threading.Condition()

    def __call__(self, state: CameraState, reason: str) -> None:
        with self.changed:
            self.entries.append((state, reason))
            self.changed.notify_all()

    def wait_for(self, state: CameraState, timeout: float) -> str:
        with self.changed:
            found = self.changed.wait_for(lambda: any(s is state for s, _ in self.entries), timeout)
        assert found, f"no {state} within {timeout}s; saw {self.entries}"
        return next(reason for s, reason in self.entries if s is state)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream", "rtsp://admin:***@10.0.0.5:554/stream"),
        ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
        ("http://u:p@cam.local/mjpeg", "http://u:***@cam.local/mjpeg"),
        ("/data/video.avi", "/data/video.avi"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_video_file_plays_as_a_live_camera() -> None:
    statuses = StatusLog()
    reader = CameraReader(Camera(id="file", url=str(SAMPLE_VIDEO)), statuses)
    reader.start()
    try:
        statuses.wait_for(CameraState.ONLINE, timeout=10)
        first = reader.latest()
        time.sleep(1.0)
        later = reader.latest()
    finally:
        reader.stop()
    assert first is not None and later is not None
    assert later.image.shape == (576, 768, 3)
    # vtest.avi is 10 fps: about ten new frames a second, not as fast as it decodes.
    assert 5 <= later.number - first.number <= 15


class FakeCameraHandler(BaseHTTPRequestHandler):
    """Answers like the wrong kinds of camera URL do."""

    def do_GET(self) -> None:
        if self.path == "/protected":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="cam"')
            self.end_headers()
        elif self.path == "/page":
            body = b"<html><body>camera admin page</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_camera() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCameraHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"rtsp://127.0.0.1:{free_port()}/nothing",
         "cannot open rtsp://127.0.0.1:{port}/nothing: connection refused"),
        (f"http://user:secret@127.0.0.1:{free_port()}/mjpeg", "cannot open http://user:***@127.0.0.1"),
        ("http://user:secret@{camera}/protected",
         "cannot open http://user:***@{camera}/protected: wrong or missing credentials (HTTP 401)"),
        ("http://{camera}/page",
         "cannot open http://{camera}/page: not a video stream (content type text/html)"),
        ("http://{camera}/missing", "cannot open http://{camera}/missing: HTTP 404"),
        ("rtsp://no-such-host.invalid/stream",
         "cannot open rtsp://no-such-host.invalid/stream: host no-such-host.invalid not found"),
        ("ftp://127.0.0.1/clip", "cannot open ftp://127.0.0.1/clip: invalid URL"),
        ("/nonexistent/clip.avi", "file not found: /nonexistent/clip.avi"),
    ],
)
def test_bad_source_is_offline_with_reason(url: str, reason: str, fake_camera: str) -> None:
    url = url.replace("{camera}", fake_camera)
    reason = reason.replace("{camera}", fake_camera)
    if "{port}" in reason:
        reason = reason.replace("{port}", str(urlsplit(url).port))
    statuses = StatusLog()
    reader = CameraReader(Camera(id="dead", url=url), statuses, timeout_s=2)
    reader.start()
    try:
        found = statuses.wait_for(CameraState.OFFLINE, timeout=15)
    finally:
        reader.stop()
    assert found.startswith(reason)
    assert "secret" not in found
    assert reader.latest() is None
