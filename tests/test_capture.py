"""Camera readers on real sources: the sample video, snapshots, dead and wrong URLs, bad files."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest
import redis

from conftest import (
    DATA,
    SAMPLE_VIDEO,
    StatusLog,
    frames_after,
    free_port,
    offline_reason,
    stop_all,
    wait_for,
    worker_env,
)
from trafficrisk.messages import Camera, CameraState, CameraStatus
from trafficrisk.workers.capture import CameraReader, image_size, mask_url
from trafficrisk.workers.store import Store


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream", "rtsp://admin:***@10.0.0.5:554/stream"),
        ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
        ("http://u:p@cam.local/mjpeg", "http://u:***@cam.local/mjpeg"),
        ("/data/video.avi", "/data/video.avi"),
        ("rtsp://u:p@host:99999/x", "rtsp://u:***@host:99999/x"),  # a port out of range: no error
        ("rtsp://u:p@ss@host/x", "rtsp://u:***@host/x"),  # a raw @ in the password
        ("rtsp://user@host/x", "rtsp://user@host/x"),  # a user, no password
        ("http://cam/snap?user=a&password=b&x=1", "http://cam/snap?user=a&password=***&x=1"),
        ("http://cam/s.jpg?token=abc#f", "http://cam/s.jpg?token=***#f"),
        ("http://cam/s.jpg?api_key=k;sig=s", "http://cam/s.jpg?api_key=***;sig=***"),
        ("http://[::1/x", "http://[::1/x"),  # not a URL at all: returned as it is
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG that claims `width` x `height` (a decompression bomb's header)."""
    size = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    sof = b"\xff\xc0\x00\x11\x08" + size + b"\x03" + b"\x00" * 9
    return b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof


def encoded(extension: str, **params: int) -> bytes:
    image = cv2.imread(str(DATA / "dog.jpg"))
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if params.get("progressive") else []
    return bytes(cv2.imencode(extension, image, flags)[1])


@pytest.mark.parametrize(
    ("data", "size"),
    [
        ((DATA / "dog.jpg").read_bytes(), (768, 576)),
        (encoded(".png"), (768, 576)),
        (encoded(".jpg", progressive=1), (768, 576)),
        (jpeg_header(40_000, 25_000), (40_000, 25_000)),
        (b"\xff\xd8\xff", (0, 0)),  # truncated
        (b"<html>not an image</html>", (0, 0)),
        (b"", (0, 0)),
    ],
    ids=["jpeg", "png", "progressive", "bomb-header", "truncated", "html", "empty"],
)
def test_image_size_from_the_header(data: bytes, size: tuple[int, int]) -> None:
    assert image_size(data) == size


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
        elif self.path == "/redirect":  # to the snapshot on this very host: not followed
            self.send_response(302)
            self.send_header("Location", "/snap.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path in ("/bomb.jpg", "/huge.jpg"):
            huge = b"\xff\xd8" + bytes(21 * 2**20)  # over the 20 MiB a snapshot may be
            body = jpeg_header(40_000, 25_000) if self.path == "/bomb.jpg" else huge
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
        ("rtsp://{closed}/nothing", "cannot open rtsp://{closed}/nothing: connection refused"),
        ("http://user:secret@{closed}/mjpeg", "cannot open http://user:***@{closed}"),
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
    # {closed}: a loopback port nothing listens on (chosen here, so test ids stay stable).
    closed = f"127.0.0.1:{free_port()}"
    for name, value in (("{camera}", fake_camera), ("{closed}", closed)):
        url, reason = url.replace(name, value), reason.replace(name, value)
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
        ("/redirect",
         "cannot open http://{camera}/redirect: redirected (HTTP 302); redirects are not followed"),
        ("/bomb.jpg", "snapshot from http://{camera}/bomb.jpg is 40000x25000: over 40000000 pixels"),
        ("/huge.jpg", "snapshot from http://{camera}/huge.jpg is over 20971520 bytes"),
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


def test_a_reader_survives_what_its_source_throws() -> None:
    """A URL httpx cannot even parse raises no SourceError: the reader says why, and retries."""
    statuses = StatusLog()
    reader = CameraReader(Camera(id="odd", url="http://[::1/snap.jpg", snapshot=True), statuses, timeout_s=1)
    reader.start()
    try:
        reason = statuses.wait_for(CameraState.OFFLINE, timeout=10)
        statuses.wait_for(CameraState.CONNECTING, timeout=10, since=2)  # it tries again
    finally:
        reader.stop()
    assert reason.startswith("reading failed: ")


@pytest.mark.slow
def test_one_bad_camera_never_stops_another_from_starting(redis_url: str, tmp_path: Path) -> None:
    """A real capture process: cameras whose URLs break parsers (a port out of range) or
    point at the host (its Redis, its files) are refused, offline with the reason, and the
    good one among them reads (the start order is hashed)."""
    urls = ["rtsp://u:p@cam.invalid:99999/x"] * 3 + ["rtsp://127.0.0.1:6379/", "/etc/passwd"]
    bad = [f"bad{n}" for n in range(len(urls))]
    lines = ["cameras:"]
    lines += [f"  - {{id: {c}, url: '{url}', sample_fps: 1}}" for c, url in zip(bad, urls, strict=True)]
    lines.append(f"  - {{id: good, url: '{SAMPLE_VIDEO}', sample_fps: 1}}")
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text("\n".join(lines) + "\n")
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    store = Store(client)
    env = worker_env(redis_url=redis_url, cameras_file=str(cameras), camera_sync_s="0.5")
    log = tmp_path / "capture.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trafficrisk.cli", "capture"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def settled() -> dict[str, CameraStatus] | None:
        found = store.statuses()
        online = "good" in found and found["good"].state is CameraState.ONLINE
        offline = all(c in found and found[c].state is CameraState.OFFLINE for c in bad)
        return found if online and offline else None

    try:
        statuses = wait_for(settled, 30, "every camera's status", log.read_text)
    finally:
        stop_all({"capture": proc})
    assert all(statuses[c].reason.startswith("refused: ") for c in bad), statuses
    assert "p@" not in log.read_text()  # the password never reached the log
