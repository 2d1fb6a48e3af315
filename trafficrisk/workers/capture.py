"""Camera readers: one thread per camera that always holds its newest sampled frame.

A reader decodes every frame of its stream (the only way to stay at the live edge,
with no growing buffer) but converts to BGR only the frames it samples, at the
camera's sample rate: the conversion costs more than the decoding. Video files play
as live cameras at their own frame rate; RTSP and HTTP go through OpenCV's FFmpeg
backend with open and read timeouts, so a dead camera is reported `offline` with a
reason instead of blocking, and is retried with backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

from trafficrisk.messages import Camera, CameraState
from trafficrisk.workers.camera_url import (
    CameraUrlError,
    UrlPolicy,
    is_device_source,
    is_file_source,
    mask_url,
)
from trafficrisk.workers.rtsp_transport import Transport, transport_lock
from trafficrisk.workers.source_diagnosis import diagnose

log = logging.getLogger(__name__)

StatusCallback = Callable[[CameraState, str], None]
FrameCallback = Callable[[str], None]
# Many cameras decode side by side: one decoder thread each, as FFmpeg's frame
# threading would also hold frames back (one per thread) and add latency.
DECODER_THREADS = [cv2.CAP_PROP_N_THREADS, 1]


@dataclass(frozen=True)
class CapturedFrame:
    number: int
    captured_at: float
    image: np.ndarray


class SourceError(RuntimeError):
    """A camera could not be opened or read; the message is its status reason."""


class SourceEnded(Exception):
    """A video file that does not loop reached its end."""


class FileSource:
    """A video file played at its own frame rate, as a live camera would deliver it."""

    def __init__(self, path: str, loop: bool, stop: threading.Event) -> None:
        if not Path(path).is_file():
            raise SourceError(f"file not found: {path}")
        self.capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, DECODER_THREADS)
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(f"cannot open {path}: not a readable video file")
        self.path, self.loop, self.stop = path, loop, stop
        self.interval = 1.0 / (self.capture.get(cv2.CAP_PROP_FPS) or 10.0)
        self.next_at = time.monotonic()
        self.frames = 0
        self.started_at = time.time()

    def grab(self) -> None:
        self.stop.wait(max(0.0, self.next_at - time.monotonic()))
        self.next_at = max(self.next_at + self.interval, time.monotonic() - self.interval)
        ok = self.capture.grab()
        if not ok and self.loop and self.frames > 0:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok = self.capture.grab()
        if not ok:
            if not self.loop and self.frames > 0:
                raise SourceEnded
            raise SourceError(f"cannot decode {self.path}: corrupt or empty video")
        self.frames += 1

    def retrieve(self) -> np.ndarray | None:
        ok, image = self.capture.retrieve()
        return image if ok else None

    def frame_time(self) -> float:
        """When the frame grabbed last is meant to be seen: the file's own clock, begun
        when it was opened. A reader that falls behind (a busy machine) would otherwise
        stamp frames late and unevenly, and speeds measured from them would be wrong."""
        return self.started_at + (self.frames - 1) * self.interval

    def release(self) -> None:
        self.capture.release()


class StreamSource:
    """RTSP or HTTP (MJPEG) through OpenCV's FFmpeg backend, with open and read timeouts."""

    def __init__(self, url: str, timeout_s: float, transport: Transport = "tcp") -> None:
        timeout_ms = int(timeout_s * 1000)
        with transport_lock.opening(transport):
            self.capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
                *DECODER_THREADS])
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(f"cannot open {mask_url(url)}: {diagnose(url, timeout_s)}")
        self.timeout_s = timeout_s

    def grab(self) -> None:
        # The decoder hands out frames as they arrive, so grabbing continuously keeps
        # its buffer empty: the frame we hold is the newest, not seconds old.
        started = time.monotonic()
        ok = self.capture.grab()
        # After a hang FFmpeg still hands out a buffered frame or two, each after a full
        # read timeout: a read that slow is a stall, whatever it returned.
        if not ok or time.monotonic() - started >= 0.9 * self.timeout_s:
            raise SourceError(f"stream stalled or ended: no frame within {self.timeout_s:g} s")

    def retrieve(self) -> np.ndarray | None:
        ok, image = self.capture.retrieve()
        return image if ok else None

    def frame_time(self) -> float:
        """A live source's frame is as old as its arrival: now."""
        return time.time()

    def release(self) -> None:
        self.capture.release()


class DeviceSource(StreamSource):
    """A local camera through V4L2."""

    def __init__(self, url: str, timeout_s: float) -> None:
        index = url.removeprefix("device:")
        target: int | str = int(index) if index.isdigit() else url
        self.capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(f"cannot open {url}: no such video device, or it is busy")
        self.timeout_s = timeout_s


# A snapshot is one camera image: anything larger is refused before it is decoded.
SNAPSHOT_MAX_BYTES = 20 * 1024 * 1024
SNAPSHOT_MAX_PIXELS = 40_000_000  # 8K is 33 MP


class SnapshotSource:
    """An HTTP URL that returns one JPEG per request, polled at the reader's sample rate.

    Redirects are not followed (a camera's URL is the one configured, not wherever it
    points), and a body over SNAPSHOT_MAX_BYTES or an image over SNAPSHOT_MAX_PIXELS is
    refused before it is decoded.
    """

    def __init__(self, url: str, timeout_s: float, interval_s: Callable[[], float],
                 stop: threading.Event) -> None:
        self.url, self.timeout_s, self.interval_s, self.stop = url, timeout_s, interval_s, stop
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.next_at = time.monotonic()
        self.image: np.ndarray | None = None

    def _fetch(self) -> np.ndarray:
        try:
            with self.http.stream("GET", self.url) as response:
                if response.is_redirect:
                    raise SourceError(f"cannot open {mask_url(self.url)}: redirected (HTTP "
                                      f"{response.status_code}); redirects are not followed")
                if response.status_code != 200:
                    raise self._unavailable()
                body = self._body(response)
        except httpx.HTTPError:
            raise self._unavailable() from None
        return self._decoded(body)

    def _body(self, response: httpx.Response) -> bytes:
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > SNAPSHOT_MAX_BYTES:
                raise SourceError(f"snapshot from {mask_url(self.url)} is over {SNAPSHOT_MAX_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _decoded(self, body: bytes) -> np.ndarray:
        width, height = image_size(body)
        if width * height > SNAPSHOT_MAX_PIXELS:
            raise SourceError(f"snapshot from {mask_url(self.url)} is {width}x{height}: over "
                              f"{SNAPSHOT_MAX_PIXELS} pixels")
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) if width else None
        if image is None:
            raise SourceError(f"snapshot from {mask_url(self.url)} is not an image")
        return image

    def _unavailable(self) -> SourceError:
        return SourceError(f"cannot open {mask_url(self.url)}: {diagnose(self.url, self.timeout_s)}")

    def grab(self) -> None:
        self.stop.wait(max(0.0, self.next_at - time.monotonic()))
        self.next_at = max(self.next_at + self.interval_s(), time.monotonic())
        self.image = self._fetch()

    def retrieve(self) -> np.ndarray | None:
        return self.image

    def frame_time(self) -> float:
        """A live source's frame is as old as its arrival: now."""
        return time.time()

    def release(self) -> None:
        self.http.close()


Source = FileSource | StreamSource | DeviceSource | SnapshotSource


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG from its header, without decoding it; (0, 0) for
    anything else. Decoding first would let a tiny file claim gigapixels of memory."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        return 0, 0
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return 0, 0
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
        elif marker in _SOF_MARKERS:
            return int.from_bytes(data[at + 7:at + 9], "big"), int.from_bytes(data[at + 5:at + 7], "big")
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return 0, 0


class CameraReader:
    """Reads one camera on its own thread; `latest()` is its newest sampled frame.

    `sample_fps` starts at the camera's rate and may be raised for a burst; each
    sampled frame is announced through `on_frame(camera_id)`.
    """

    def __init__(self, camera: Camera, on_status: StatusCallback, *, on_frame: FrameCallback | None = None,
                 timeout_s: float = 5.0, max_backoff_s: float = 5.0, policy: UrlPolicy | None = None) -> None:
        self.camera = camera
        self.policy = policy  # which URLs it may open; None: any (tests of the sources themselves)
        self.sample_fps = camera.sample_fps
        self._on_status = on_status
        self._on_frame = on_frame
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: CapturedFrame | None = None
        self._number = 0
        self._sampled_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def latest(self) -> CapturedFrame | None:
        with self._lock:
            return self._latest

    def _open(self) -> Source:
        camera = self.camera
        if camera.snapshot:
            return SnapshotSource(camera.url, self._timeout_s, lambda: 1.0 / self.sample_fps, self._stop)
        if is_device_source(camera.url):
            return DeviceSource(camera.url, self._timeout_s)
        if is_file_source(camera.url):
            return FileSource(camera.url.removeprefix("file://"), camera.loop, self._stop)
        return StreamSource(camera.url, self._timeout_s, camera.rtsp_transport)

    def _report(self, state: CameraState, reason: str) -> None:
        try:
            self._on_status(state, reason)
        except Exception:  # reporting must never stop the reading
            log.exception("camera %s: status callback failed", self.camera.id)

    def _run(self) -> None:
        if not self._allowed():
            return
        backoff = 1.0
        while not self._stop.is_set():
            self._report(CameraState.CONNECTING, "")
            frames_before = self._number
            try:
                source = self._open()
                try:
                    self._read(source)
                finally:
                    source.release()
            except SourceEnded:
                self._report(CameraState.OFFLINE, "end of file (loop is off)")
                return
            except SourceError as error:
                log.warning("camera %s offline: %s", self.camera.id, error)
                self._report(CameraState.OFFLINE, str(error))
                if self._number > frames_before:
                    backoff = 1.0  # it delivered a moment ago: retry soon
            except Exception as error:  # whatever a source throws, the reader goes on
                log.exception("camera %s: reading failed", self.camera.id)
                self._report(CameraState.OFFLINE, f"reading failed: {type(error).__name__}")
            # Jitter spreads the retries of many cameras behind one failed switch.
            self._stop.wait(backoff * random.uniform(0.75, 1.25))
            backoff = min(backoff * 2, self._max_backoff_s)

    def _allowed(self) -> bool:
        """Whether the camera's URL may be opened at all; a refusal is final (offline, with
        the reason), checked here on the reader's thread since it may resolve a host."""
        try:
            if self.policy is not None:
                self.policy.check(self.camera.url)
        except CameraUrlError as error:
            log.warning("camera %s refused: %s", self.camera.id, error)
            self._report(CameraState.OFFLINE, f"refused: {error}")
            return False
        return True

    def _read(self, source: Source) -> None:
        """Reads until stopped; raises SourceError when the source fails."""
        source.grab()
        log.info("camera %s online: %s", self.camera.id, mask_url(self.camera.url))
        self._report(CameraState.ONLINE, "")
        self._sampled_at = 0.0
        while not self._stop.is_set():
            self._number += 1
            self._sample_if_due(source)
            source.grab()

    def _sample_if_due(self, source: Source) -> None:
        now = time.monotonic()
        interval = 1.0 / self.sample_fps  # read each time: a burst may have changed it
        due = self._sampled_at + interval
        # A quarter early still counts: a source delivering at just the sample rate
        # jitters around each due time, and must not lose every other frame to it.
        if now < due - interval / 4:
            return
        image = source.retrieve()
        if image is None:  # a corrupt frame: the next one is sampled instead
            log.debug("camera %s: frame %d could not be decoded", self.camera.id, self._number)
            return
        # Keep the cadence; after a stall or a slower rate, start it again from now.
        self._sampled_at = due if now - due < interval else now
        with self._lock:
            self._latest = CapturedFrame(self._number, source.frame_time(), image)
        if self._on_frame is not None:
            self._on_frame(self.camera.id)
