"""Camera readers on real sources: the sample video, a dead RTSP port, a missing file."""

from __future__ import annotations

import threading
import time

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


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"rtsp://127.0.0.1:{free_port()}/nothing", "cannot open rtsp://127.0.0.1"),
        (f"http://user:secret@127.0.0.1:{free_port()}/mjpeg", "cannot open http://user:***@127.0.0.1"),
        ("/nonexistent/clip.avi", "file not found: /nonexistent/clip.avi"),
    ],
)
def test_unreachable_source_is_offline_with_reason(url: str, reason: str) -> None:
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
