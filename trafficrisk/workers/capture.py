"""Camera readers: one thread per camera that always holds the newest decoded frame.

Video files play as live cameras at their own frame rate (looping); RTSP and HTTP
go through OpenCV's FFmpeg backend with open and read timeouts, so a dead camera
is reported `offline` with a reason instead of blocking, and is retried with backoff.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from trafficrisk.messages import Camera, CameraState
from trafficrisk.workers.source_diagnosis import diagnose

log = logging.getLogger(__name__)

# TCP for RTSP: UDP loses packets on busy networks and smears frames; a short
# analyzeduration makes opening take 0.4 s instead of about 3 s.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;100000")

StatusCallback = Callable[[CameraState, str], None]


def mask_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def is_file_source(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


@dataclass(frozen=True)
class CapturedFrame:
    number: int
    captured_at: float
    image: np.ndarray


class SourceError(RuntimeError):
    """A camera could not be opened or read; the message is its status reason."""


def open_source(url: str, timeout_s: float) -> cv2.VideoCapture:
    if is_file_source(url):
        path = url.removeprefix("file://")
        if not Path(path).is_file():
            raise SourceError(f"file not found: {path}")
        capture = cv2.VideoCapture(path)
    else:
        timeout_ms = int(timeout_s * 1000)
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"cannot open {mask_url(url)}: {diagnose(url, timeout_s)}")
    return capture


class CameraReader:
    """Reads one camera on its own thread; `latest()` is the newest frame."""

    def __init__(self, camera: Camera, on_status: StatusCallback, *, timeout_s: float = 5.0,
                 max_backoff_s: float = 5.0) -> None:
        self.camera = camera
        self._on_status = on_status
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: CapturedFrame | None = None
        self._number = 0
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def latest(self) -> CapturedFrame | None:
        with self._lock:
            return self._latest

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            self._on_status(CameraState.CONNECTING, "")
            try:
                capture = open_source(self.camera.url, self._timeout_s)
                try:
                    self._read(capture)
                    backoff = 1.0
                finally:
                    capture.release()
            except SourceError as error:
                log.warning("camera %s offline: %s", self.camera.id, error)
                self._on_status(CameraState.OFFLINE, str(error))
            # Jitter spreads the retries of many cameras behind one failed switch.
            self._stop.wait(backoff * random.uniform(0.75, 1.25))
            backoff = min(backoff * 2, self._max_backoff_s)

    def _read(self, capture: cv2.VideoCapture) -> None:
        """Reads until stopped; raises SourceError when the source fails or ends."""
        is_file = is_file_source(self.camera.url)
        interval = 1.0 / (capture.get(cv2.CAP_PROP_FPS) or 10.0) if is_file else 0.0
        next_at = time.monotonic()
        online = False
        while not self._stop.is_set():
            ok, image = capture.read()
            if not ok and is_file and self.camera.loop and online:
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = capture.read()
            if (not ok or image is None) and is_file and not self.camera.loop:
                self._on_status(CameraState.OFFLINE, "end of file (loop is off)")
                self._stop.set()
                return
            if not ok or image is None:
                raise SourceError("stream ended" if is_file else "read failed or timed out")
            if not online:
                online = True
                log.info("camera %s online: %s", self.camera.id, mask_url(self.camera.url))
                self._on_status(CameraState.ONLINE, "")
            self._publish(image)
            if is_file:
                # Files play at their own pace, as a live camera would deliver them.
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _publish(self, image: np.ndarray) -> None:
        self._number += 1
        with self._lock:
            self._latest = CapturedFrame(self._number, time.time(), image)
