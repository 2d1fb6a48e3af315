"""detect: one sampled frame in, its result out to aggregate at once (it never waits for the LLM)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import celeryd_after_setup

from trafficrisk.messages import FrameRef, FrameResult
from trafficrisk.queues import DETECT_QUEUE
from trafficrisk.runtime import get_pattern_engine, get_store, get_thresholds
from trafficrisk.settings import get_settings
from trafficrisk.tasks.aggregate import aggregate_frame
from trafficrisk.tasks.app import app
from trafficrisk.tasks.evidence import open_alerts
from trafficrisk.workers.aggregation import record_skipped_frame
from trafficrisk.workers.analysis import FrameAnalysis, FrameAnalyzer, FrameDecodeError
from trafficrisk.workers.batching import BatchedDetector
from trafficrisk.workers.conflicts import Frame
from trafficrisk.workers.detection import Detector, load_detector, warm_up
from trafficrisk.workers.ground_plane import plane_for
from trafficrisk.workers.scene import Geometry, shared_scene

log = logging.getLogger(__name__)

_analyzer: FrameAnalyzer | None = None
_analyzer_lock = threading.Lock()


def get_analyzer() -> FrameAnalyzer:
    """The process's analyzer; the model loads once, at worker start or on first use."""
    global _analyzer
    with _analyzer_lock:
        if _analyzer is None:
            settings = get_settings()
            detector: Detector = load_detector(settings.model, settings.device, settings.detect_confidence)
            warm_up(detector, settings.detect_batch_size)
            # Always through the batcher, even batches of one: its single model thread is
            # what keeps the worker's task threads from running one model at once (an
            # OpenCV DNN net or an ultralytics predictor is not thread-safe: two threads in
            # one forward pass give one frame the other's boxes, or garbage).
            detector = BatchedDetector(
                detector, settings.detect_batch_size, settings.detect_batch_wait_ms / 1000
            )
            _analyzer = FrameAnalyzer(detector)
        return _analyzer


@celeryd_after_setup.connect
def _load_model(sender: str, instance: Any, **_: Any) -> None:
    # Before the worker consumes: the first frames must not wait for the model. The
    # detect worker runs its tasks on threads (they share the batcher), so loading in
    # this process is loading where the tasks run; no fork follows to upset CUDA.
    if DETECT_QUEUE in instance.app.amqp.queues.consume_from:
        get_analyzer()


@app.task(name="trafficrisk.detect", ignore_result=True)
def detect_frame(frame_ref: dict[str, Any]) -> None:
    ref = FrameRef.from_wire(frame_ref)
    started = time.time()
    store = get_store()
    jpeg = store.get_blob(ref.frame_key)
    if jpeg is None:
        log.warning("frame %s expired before detection; skipped", ref.frame_id)
        drop(ref, "expired")
        return
    settings = get_settings()
    camera = store.get_camera(ref.camera_id)
    calibration = camera.calibration if camera else None
    plane = plane_for(calibration.image_points, calibration.ground_points) if calibration else None
    geometry = Geometry(ref.width, ref.height, plane, camera.zones if camera else ())
    frame = Frame(ref.camera_id, ref.seq, ref.captured_at, approximate=plane is None)
    scene = shared_scene(store, frame, geometry, get_thresholds())
    try:
        analysis = get_analyzer().analyze(jpeg, scene=scene)
    except FrameDecodeError:
        log.warning("frame %s is not a decodable JPEG; skipped", ref.frame_id)
        drop(ref, "corrupt")
        return
    if settings.burst_s > 0 and any(event.is_open for event in analysis.conflicts):
        store.start_burst(ref.camera_id, settings.burst_s)
    result = draft_result(ref, analysis, queue_wait_s=round(started - ref.captured_at, 4))
    aggregate_frame.apply_async(args=[result.to_wire()])


def drop(ref: FrameRef, reason: str) -> None:
    store = get_store()
    store.end_flight(ref.camera_id, ref.frame_id, dropped=reason)
    record_skipped_frame(store, get_pattern_engine(), ref.camera_id, ref.seq, ref.captured_at, time.time())
    open_alerts(ref.camera_id)


def draft_result(ref: FrameRef, analysis: FrameAnalysis, queue_wait_s: float) -> FrameResult:
    """The frame's result, the rules' verdicts in it: the LLM verifies conflicts later."""
    return analysis.to_result(ref, get_analyzer().detector.name, get_settings().is_llm_enabled, queue_wait_s)
