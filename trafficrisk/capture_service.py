"""The capture process: a reader per camera it holds a lease on, and a beat per camera.

At each camera's beat the newest frame goes to Redis as a JPEG (with a TTL) and a
small FrameRef goes to the `detect` queue, unless that camera already has
`max_in_flight_per_camera` frames on their way (then the beat is skipped and counted).
Cameras come from Redis (seeded from the YAML file, edited through the REST API);
every `camera_sync_s` the process re-reads them, renews its leases, takes its fair
share of free cameras and gives up its surplus, so cameras added, changed or removed
take effect within seconds, and any number of capture processes split the cameras.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

from trafficrisk.events import CAMERA_STATUS
from trafficrisk.messages import Camera, CameraState, CameraStatus, FrameRef
from trafficrisk.runtime import get_events, get_redis, get_store
from trafficrisk.settings import Settings
from trafficrisk.tasks.detect import detect_frame
from trafficrisk.workers.analysis import encode_jpeg
from trafficrisk.workers.camera_file import CameraFileError, load_cameras
from trafficrisk.workers.capture import CameraReader, CapturedFrame, mask_url
from trafficrisk.workers.leases import CameraLeases, plan
from trafficrisk.workers.store import Store

log = logging.getLogger(__name__)


@dataclass
class CameraBeat:
    reader: CameraReader
    next_at: float = field(default_factory=time.monotonic)
    last_number: int = 0


class CameraFileWatch:
    """Re-seeds Redis from the YAML file whenever the file changes."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.cameras_file
        self.mtime: float | None = None
        self.ids: set[str] = set()

    def seed_if_changed(self, store: Store) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self.mtime:
            return
        self.mtime = mtime
        try:
            cameras = load_cameras(self.path)
        except CameraFileError as error:  # at run time a bad edit must not stop the cameras we have
            log.error("cameras file not reloaded: %s", error)
            return
        self._apply(store, cameras)

    def _apply(self, store: Store, cameras: tuple[Camera, ...]) -> None:
        for camera in cameras:
            store.put_camera(camera)
        removed = self.ids - {c.id for c in cameras}
        for camera_id in removed:
            store.delete_camera(camera_id)
        self.ids = {c.id for c in cameras}
        log.info("cameras file %s: %d cameras, %d removed", self.path, len(cameras), len(removed))


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class CaptureService:
    def __init__(self, settings: Settings, owner: str | None = None) -> None:
        self.settings = settings
        self.store = get_store()
        self.events = get_events()
        self.leases = CameraLeases(get_redis(), owner or new_owner_id(), settings.capture_lease_s)
        self.file_watch = CameraFileWatch(settings)
        self.beats: dict[str, CameraBeat] = {}

    def seed_from_file(self) -> None:
        """Put the YAML file's cameras into Redis, where the API and every process see them."""
        self.file_watch.seed_if_changed(self.store)

    def run(self, stop: threading.Event) -> None:
        log.info("capture process %s started", self.leases.owner)
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
            self.leases.leave()

    def _sleep_for(self, next_sync: float) -> float:
        due = min((b.next_at for b in self.beats.values()), default=next_sync)
        return max(0.005, min(due, next_sync) - time.monotonic())

    def _sync_safely(self) -> None:
        try:
            self.file_watch.seed_if_changed(self.store)
            self.sync_cameras()
        except Exception:  # keep reading the cameras we have until Redis answers again
            log.exception("could not sync cameras")

    def sync_cameras(self) -> None:
        wanted = {c.id: c for c in self.store.list_cameras() if c.enabled}
        processes = self.leases.heartbeat()
        held = self.leases.renew(self.beats)
        for camera_id in set(self.beats) - held:
            log.warning("camera %s: lease lost to another process", camera_id)
            self._stop_camera(camera_id, release=False)
        for camera_id, beat in list(self.beats.items()):
            if camera_id in wanted and wanted[camera_id] != beat.reader.camera:
                self._stop_camera(camera_id, release=False)  # changed: restart with the new config
                self._start_camera(wanted[camera_id])
        lease_plan = plan(self.leases.owner, wanted, set(self.beats), processes)
        for camera_id in lease_plan.release:
            self._stop_camera(camera_id)
        missing = lease_plan.missing
        for camera_id in lease_plan.candidates:
            if missing <= 0:
                break
            if self.leases.acquire(camera_id):
                self._start_camera(wanted[camera_id])
                missing -= 1

    def _start_camera(self, camera: Camera) -> None:
        log.info("camera %s: reading %s at %.1f fps", camera.id, mask_url(camera.url), camera.sample_fps)
        reader = CameraReader(camera, lambda state, reason: self._report(camera.id, state, reason),
                              timeout_s=self.settings.stall_timeout_s)
        self.beats[camera.id] = CameraBeat(reader)
        reader.start()

    def _stop_camera(self, camera_id: str, release: bool = True) -> None:
        log.info("camera %s: stopping reader", camera_id)
        self.beats.pop(camera_id).reader.stop()
        if release:
            self.leases.release(camera_id)

    def _report(self, camera_id: str, state: CameraState, reason: str) -> None:
        if camera_id not in self.beats or self.store.get_camera(camera_id) is None:
            return  # stopped or removed meanwhile: don't resurrect its status
        status = CameraStatus(camera_id=camera_id, state=state, reason=reason, updated_at=time.time())
        self.store.put_status(status)
        self.events.emit(CAMERA_STATUS, status)

    def sample_due(self, now: float) -> None:
        for camera_id, beat in list(self.beats.items()):
            if now < beat.next_at:
                continue
            # Keep the cadence; after a long stall, restart it rather than burst to catch up.
            beat.next_at = max(beat.next_at + 1.0 / self._sample_fps(beat.reader.camera), now)
            frame = beat.reader.latest()
            if frame is None or frame.number == beat.last_number:
                continue
            beat.last_number = frame.number
            try:
                self._publish(camera_id, frame)
            except Exception:  # Redis or broker hiccup: lose this beat, keep every camera going
                log.exception("camera %s: could not publish frame", camera_id)

    def _sample_fps(self, camera: Camera) -> float:
        if self.settings.burst_s > 0 and self.store.is_bursting(camera.id):
            return max(camera.sample_fps, self.settings.burst_fps)
        return camera.sample_fps

    def _publish(self, camera_id: str, frame: CapturedFrame) -> None:
        if self.store.in_flight(camera_id, time.time()) >= self.settings.max_in_flight_per_camera:
            self.store.count_dropped("backpressure")
            return
        seq = self.store.next_seq(camera_id)
        key = self.store.put_frame(camera_id, seq, encode_jpeg(frame.image, self.settings.jpeg_quality))
        height, width = frame.image.shape[:2]
        ref = FrameRef(camera_id=camera_id, seq=seq, captured_at=frame.captured_at, frame_key=key,
                       width=width, height=height)
        self.store.start_flight(camera_id, ref.frame_id, time.time())
        detect_frame.apply_async(args=[ref.to_wire()])
