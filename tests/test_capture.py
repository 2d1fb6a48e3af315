"""Camera readers on real sources: the sample video, snapshots, dead and wrong URLs, bad files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import DATA, SAMPLE_VIDEO, StatusLog, frames_after, free_port, offline_reason
from trafficrisk.messages import Camera, CameraState
from trafficrisk.workers.capture import CameraReader, mask_url


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
    first, later = frames_after(Camera(id="file", url=str(SAMPLE_VIDEO)), 1.0)
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
        elif self.path == "/snap.jpg":
            body = (DATA / "dog.jpg").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
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
        ("/dev/video97", "cannot open /dev/video97: no such video device, or it is busy"),
        ("device:97", "cannot open device:97: no such video device, or it is busy"),
    ],
)
def test_bad_source_is_offline_with_reason(url: str, reason: str, fake_camera: str) -> None:
    url = url.replace("{camera}", fake_camera)
    reason = reason.replace("{camera}", fake_camera)
    if "{port}" in reason:
        reason = reason.replace("{port}", str(urlsplit(url).port))
    found = offline_reason(Camera(id="dead", url=url))
    assert found.startswith(reason)
    assert "secret" not in found


def test_snapshot_url_is_polled_at_the_sample_rate(fake_camera: str) -> None:
    camera = Camera(id="snap", url=f"http://{fake_camera}/snap.jpg", snapshot=True, sample_fps=5)
    first, later = frames_after(camera, 1.0)
    assert later.image.shape == (576, 768, 3)  # dog.jpg
    assert 3 <= later.number - first.number <= 7


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/page", "snapshot from http://{camera}/page is not an image"),
        ("/protected", "cannot open http://{camera}/protected: wrong or missing credentials (HTTP 401)"),
        ("/missing", "cannot open http://{camera}/missing: HTTP 404 from the camera URL"),
    ],
)
def test_bad_snapshot_url_is_offline_with_reason(fake_camera: str, path: str, reason: str) -> None:
    found = offline_reason(Camera(id="snap", url=f"http://{fake_camera}{path}", snapshot=True))
    assert found == reason.replace("{camera}", fake_camera)


def test_corrupt_video_file_is_offline_with_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.avi"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00AVI " + bytes(range(256)) * 64)
    found = offline_reason(Camera(id="broken", url=str(garbage)))
    assert found.startswith(f"cannot open {garbage}: not a readable video file") or \
        found.startswith(f"cannot decode {garbage}")


def test_a_file_that_does_not_loop_ends_offline(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    clip = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 20, (64, 48))
    for _ in range(5):
        writer.write(np.full((48, 64, 3), 128, np.uint8))
    writer.release()
    statuses = StatusLog()
    reader = CameraReader(Camera(id="short", url=str(clip), loop=False), statuses)
    reader.start()
    try:
        found = statuses.wait_for(CameraState.OFFLINE, timeout=10)
    finally:
        reader.stop()
    assert found == "end of file (loop is off)"
    assert [s for s, _ in statuses.entries][:2] == [CameraState.CONNECTING, CameraState.ONLINE]
