"""The capture process: a reader per camera it holds a lease on.

Each reader samples its camera at the camera's rate (higher during a burst) and
announces the frame; the main loop collects announcements for a few milliseconds and
publishes them in one go: the JPEGs to Redis (with a TTL) and small FrameRefs to the
`detect` queue, except for cameras that already have `max_in_flight_per_camera`
frames on their way (those frames are skipped and counted).
Cameras come from Redis (seeded from the YAML file, edited through the REST API);
every `camera_sync_s` the process re-reads them, renews its leases, takes its fair
share of free cameras and gives up its surplus, so cameras added, changed or removed
take effect within seconds, and any number of capture processes split the cameras."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import secrets
import socket
import threading
import time

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

BURST_POLL_S = 0.5
MAX_STARTS_PER_SYNC = 20
# Frames announced within this window go out in one batch: fewer Redis round trips,
# at the price of this much added frame age.
GATHER_S = 0.02


class CameraFileWatch:
    """Applies the YAML file to Redis whenever its content differs from what Redis holds.

    What was applied last (a digest and the camera ids) is kept in Redis, not in the
    process: a restarted capture process does not bring back cameras deleted through
    the API, and a camera removed from the file is deleted whichever process sees it.
    A Redis that lost its data has no digest, so the file's cameras are seeded again.
    """

    def __init__(self, settings: Settings) -> None:
        self.path = settings.cameras_file
        self.mtime: float | None = None
        self.digest: str | None = None  # of the file as of `mtime`
        self.refused: str | None = None  # the digest of a bad file, once logged

    def seed_if_changed(self, store: Store) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self.mtime:  # read the file only when it changed
            self.mtime, self.digest = mtime, hashlib.sha256(self.path.read_bytes()).hexdigest()
        applied_digest, applied_ids = store.cameras_file_state(str(self.path.resolve()))
        if self.digest == applied_digest:
            return
        try:
            cameras = load_cameras(self.path)
        except CameraFileError as error:  # at run time a bad edit must not stop the cameras we have
            if self.digest != self.refused:
                log.error("cameras file not reloaded: %s", error)
                self.refused = self.digest
            return
        self._apply(store, cameras, str(self.digest), applied_ids)

    def _apply(self, store: Store, cameras: tuple[Camera, ...], digest: str, applied_ids: set[str]) -> None:
        for camera in cameras:
            store.put_camera(camera)
        ids = {c.id for c in cameras}
        for camera_id in applied_ids - ids:
            store.delete_camera(camera_id)
        store.save_cameras_file_state(str(self.path.resolve()), digest, ids)
        log.info("cameras file %s: %d cameras, %d removed", self.path, len(cameras), len(applied_ids - ids))


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class CaptureService:
    def __init__(self, settings: Settings, owner: str | None = None) -> None:
        self.settings = settings
        self.store = get_store()
        self.events = get_events()
        self.leases = CameraLeases(get_redis(), owner or new_owner_id(), settings.capture_lease_s)
        self.file_watch = CameraFileWatch(settings)
        self.url_policy = settings.url_policy()
        self.readers: dict[str, CameraReader] = {}
        self.processes = 0  # capture processes alive, as of the last heartbeat
        self.lost: set[str] = set()  # cameras whose lease renewal failed
        self.status_updates: queue.SimpleQueue[CameraStatus] = queue.SimpleQueue()
        self.sampled: queue.SimpleQueue[str] = queue.SimpleQueue()  # camera ids, from reader threads
        self.bursts_checked_at = 0.0
        self.unpublished = 0  # frames sampled while Redis did not answer, not yet in the ledger
        self.renewed_at = time.monotonic()  # when the leases were last renewed

    def seed_from_file(self) -> None:
        """Put the YAML file's cameras into Redis, where the API and every process see them."""
        self.file_watch.seed_if_changed(self.store)

    def run(self, stop: threading.Event) -> None:
        log.info("capture process %s started", self.leases.owner)
        keeper = threading.Thread(target=self._keep_leases, args=(stop,), name="lease-keeper", daemon=True)
        keeper.start()
        next_sync = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_sync:
                    self._sync_safely()
                    next_sync = now + self.settings.camera_sync_s
                self._refresh_bursts(now)
                self.publish_sampled(wait_s=min(BURST_POLL_S, max(0.0, next_sync - time.monotonic())))
                self._flush_safely()
        finally:
            keeper.join(self.settings.camera_sync_s + 5)
            held = list(self.readers)
            self._stop_cameras(held)
            self.leases.release(held)
            self.leases.leave()

    def _flush_safely(self) -> None:
        try:
            self.flush_statuses()
        except Exception:  # a missed status is repaired by the next change of that camera
            log.exception("could not store camera statuses")

    def _sync_safely(self) -> None:
        self._stop_lost()  # first, and without Redis: it may be what is away
        try:
            self.file_watch.seed_if_changed(self.store)
            self.sync_cameras()
        except Exception:  # keep reading the cameras we have until Redis answers again
            log.exception("could not sync cameras")

    def _keep_leases(self, stop: threading.Event) -> None:
        """Heartbeat and renew leases on a thread of their own, so that a main loop busy
        with publishing frames can never let them lapse."""
        interval = min(self.settings.camera_sync_s, self.settings.capture_lease_s / 3)
        while not stop.is_set():
            try:
                self.processes = self.leases.heartbeat()
                reading = list(self.readers)
                self.lost.update(set(reading) - self.leases.renew(reading))
                self.renewed_at = time.monotonic()
            except Exception:  # Redis unreachable: leases lapse, and others take over
                log.exception("could not renew camera leases")
                if time.monotonic() - self.renewed_at > self.settings.capture_lease_s:
                    # Another process may hold these cameras by now: stop reading them.
                    self.lost.update(list(self.readers))
            stop.wait(interval)

    def _stop_lost(self) -> None:
        lost = sorted(self.lost & set(self.readers))
        self.lost.clear()
        if lost:
            log.warning("cameras %s: leases lost (taken by another process, or not renewed in time)",
                        ", ".join(lost))
            self._stop_cameras(lost)

    def sync_cameras(self) -> None:
        wanted = {c.id: c for c in self.store.list_cameras() if c.enabled}
        if self.processes == 0:  # before the keeper's first heartbeat
            self.processes = self.leases.heartbeat()
        changed = [c for c, reader in self.readers.items() if c in wanted and wanted[c] != reader.camera]
        self._stop_cameras(changed)  # restarted below with the new configuration, lease kept
        for camera_id in changed:
            self._start_camera(wanted[camera_id])
        lease_plan = plan(self.leases.owner, wanted, set(self.readers), self.processes)
        self._stop_cameras(lease_plan.release)
        self.leases.release(lease_plan.release)
        # A few at a time: starting hundreds of readers in one sync takes longer than a
        # lease lasts on a busy machine, and the leases renewed above would lapse.
        wanted_now = min(lease_plan.missing, MAX_STARTS_PER_SYNC)
        for camera_id in self.leases.acquire(lease_plan.candidates, wanted_now):
            self._start_camera(wanted[camera_id])

    def _start_camera(self, camera: Camera) -> None:
        """Start the camera's reader; one that cannot start is offline with the reason, and
        never stops the cameras after it from starting."""
        try:
            log.info("camera %s: reading %s at %.1f fps", camera.id, mask_url(camera.url), camera.sample_fps)
            reader = CameraReader(camera, lambda state, reason: self._report(camera.id, state, reason),
                                  on_frame=self.sampled.put, timeout_s=self.settings.stall_timeout_s,
                                  policy=self.url_policy)
            reader.start()
        except Exception as error:
            log.exception("camera %s: its reader could not start", camera.id)
            self._report(camera.id, CameraState.OFFLINE, f"could not start: {type(error).__name__}")
            return
        self.readers[camera.id] = reader

    def _stop_cameras(self, camera_ids: list[str]) -> None:
        """Stop these readers: all asked at once, then waited for."""
        readers = [self.readers.pop(camera_id) for camera_id in camera_ids]
        for reader in readers:
            log.info("camera %s: stopping reader", reader.camera.id)
            reader.request_stop()
        for reader in readers:
            reader.stop()

    def _report(self, camera_id: str, state: CameraState, reason: str) -> None:
        # Called on reader threads: queue it; the main loop writes them all in one go,
        # rather than hundreds of threads each taking a Redis connection.
        self.status_updates.put(CameraStatus(camera_id=camera_id, state=state, reason=reason,
                                             updated_at=time.time()))

    def flush_statuses(self) -> None:
        updates: dict[str, CameraStatus] = {}
        while not self.status_updates.empty():
            status = self.status_updates.get_nowait()
            if status.camera_id in self.readers:  # stopped or removed meanwhile: don't resurrect it
                updates[status.camera_id] = status
        if updates:
            self.store.put_statuses(list(updates.values()))
            for status in updates.values():
                self.events.emit(CAMERA_STATUS, status)

    def publish_sampled(self, wait_s: float) -> None:
        """Publish the frames readers announce, waiting up to `wait_s` for the first."""
        try:
            first = self.sampled.get(timeout=wait_s)
        except queue.Empty:
            return
        time.sleep(GATHER_S)
        announced = {first}
        while not self.sampled.empty():
            announced.add(self.sampled.get_nowait())
        due: list[tuple[str, CapturedFrame]] = []
        for camera_id in announced:
            reader = self.readers.get(camera_id)
            frame = reader.latest() if reader is not None else None
            if frame is not None:
                due.append((camera_id, frame))
        if due:
            try:
                self._publish(due)
            except Exception:  # Redis or broker hiccup: these frames count as lost, cameras go on
                log.exception("could not publish %d frames", len(due))

    def _refresh_bursts(self, now: float) -> None:
        # One round trip a few times a second for all cameras, not one per frame.
        if self.settings.burst_s <= 0 or now < self.bursts_checked_at + BURST_POLL_S:
            return
        self.bursts_checked_at = now
        try:
            bursting = self.store.bursting(list(self.readers))
        except Exception:  # Redis hiccup: keep the rates we have
            log.exception("could not read camera bursts")
            return
        for camera_id, reader in self.readers.items():
            rate = reader.camera.sample_fps
            reader.sample_fps = max(rate, self.settings.burst_fps) if camera_id in bursting else rate

    def _publish(self, due: list[tuple[str, CapturedFrame]]) -> None:
        """JPEGs to Redis and FrameRefs to `detect` for the due cameras with room in flight."""
        try:
            seqs = self.store.reserve_frames([c for c, _ in due], time.time(),
                                             self.settings.max_in_flight_per_camera, self.unpublished)
        except Exception:  # Redis away: count these in the ledger once it answers again
            self.unpublished += len(due)
            log.warning("could not offer %d frames (Redis not answering; %d so far)", len(due),
                        self.unpublished)
            return
        self.unpublished = 0
        chosen = [(c, seqs[c], frame) for c, frame in due if seqs[c]]
        quality = self.settings.jpeg_quality
        keys = self.store.put_frames([(c, seq, encode_jpeg(f.image, quality)) for c, seq, f in chosen])
        for (camera_id, seq, frame), key in zip(chosen, keys, strict=True):
            height, width = frame.image.shape[:2]
            ref = FrameRef(camera_id=camera_id, seq=seq, captured_at=frame.captured_at, frame_key=key,
                           width=width, height=height)
            detect_frame.apply_async(args=[ref.to_wire()])
