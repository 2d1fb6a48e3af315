"""The capture process: a reader per camera and a beat that samples each one.

At each camera's beat the newest frame goes to Redis as a JPEG (with a TTL) and a
small FrameRef goes to the `detect` queue. Cameras come from Redis (seeded from the
YAML file, edited through the REST API) and are re-read every few seconds, so
cameras added, changed or removed take effect without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from trafficrisk.events import CAMERA_STATUS
from trafficrisk.messages import Camera, CameraState, CameraStatus, FrameRef
from trafficrisk.runtime import get_events, get_store
from trafficrisk.settings import Settings
from trafficrisk.tasks.detect import detect_frame
from trafficrisk.workers.analysis import encode_jpeg
from trafficrisk.workers.camera_file import load_cameras
from trafficrisk.workers.capture import CameraReader, CapturedFrame, mask_url

log = logging.getLogger(__name__)


@dataclass
class CameraBeat:
    reader: CameraReader
    next_at: float = field(default_factory=time.monotonic)
    last_number: int = 0


class CaptureService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = get_store()
        self.events = get_events()
        self.beats: dict[str, CameraBeat] = {}

    def seed_from_file(self) -> None:
        """Put the YAML file's cameras into Redis, where the API and every process see them."""
        for camera in load_cameras(self.settings.cameras_file):
            self.store.put_camera(camera)

    def run(self, stop: threading.Event) -> None:
        next_sync = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_sync:
                    self._sync_safely()
                    next_sync = now + self.settings.camera_sync_s
                self.sample_due(now)
                stop.wait(self._sleep_for(next_sync))
        finally:
            for camera_id in list(self.beats):
                self._stop_camera(camera_id)

    def _sleep_for(self, next_sync: float) -> float:
        due = min((b.next_at for b in self.beats.values()), default=next_sync)
        return max(0.005, min(due, next_sync) - time.monotonic())

    def _sync_safely(self) -> None:
        try:
            self.sync_cameras()
        except Exception:  # keep reading the cameras we have until Redis answers again
            log.exception("could not read the camera list")

    def sync_cameras(self) -> None:
        wanted = {c.id: c for c in self.store.list_cameras() if c.enabled}
        for camera_id, beat in list(self.beats.items()):
            if wanted.get(camera_id) != beat.reader.camera:
                self._stop_camera(camera_id)
        for camera_id, camera in wanted.items():
            if camera_id not in self.beats:
                self._start_camera(camera)

    def _start_camera(self, camera: Camera) -> None:
        log.info("camera %s: starting reader for %s at %.1f fps", camera.id, mask_url(camera.url),
                 camera.sample_fps)
        reader = CameraReader(camera, lambda state, reason: self._report(camera.id, state, reason))
        self.beats[camera.id] = CameraBeat(reader)
        reader.start()

    def _stop_camera(self, camera_id: str) -> None:
        log.info("camera %s: stopping reader", camera_id)
        self.beats.pop(camera_id).reader.stop()

    def _report(self, camera_id: str, state: CameraState, reason: str) -> None:
        status = CameraStatus(camera_id=camera_id, state=state, reason=reason, updated_at=time.time())
        if self.store.get_camera(camera_id) is None:
            return  # removed meanwhile: don't resurrect its status
        self.store.put_status(status)
        self.events.emit(CAMERA_STATUS, status)

    def sample_due(self, now: float) -> None:
        for camera_id, beat in self.beats.items():
            if now < beat.next_at:
                continue
            # Keep the cadence; after a long stall, restart it rather than burst to catch up.
            beat.next_at = max(beat.next_at + 1.0 / beat.reader.camera.sample_fps, now)
            frame = beat.reader.latest()
            if frame is None or frame.number == beat.last_number:
                continue
            beat.last_number = frame.number
            try:
                self._publish(camera_id, frame)
            except Exception:  # Redis or broker hiccup: lose this beat, keep every camera going
                log.exception("camera %s: could not publish frame", camera_id)

    def _publish(self, camera_id: str, frame: CapturedFrame) -> None:
        seq = self.store.next_seq(camera_id)
        key = self.store.put_frame(camera_id, seq, encode_jpeg(frame.image, self.settings.jpeg_quality))
        height, width = frame.image.shape[:2]
        ref = FrameRef(camera_id=camera_id, seq=seq, captured_at=frame.captured_at, frame_key=key,
                       width=width, height=height)
        detect_frame.apply_async(args=[ref.to_wire()])
