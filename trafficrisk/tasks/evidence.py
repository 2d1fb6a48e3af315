"""evidence: an alert's frame and crop as it opens, and its clip once the seconds after it are in."""

from __future__ import annotations

import logging
import time

from trafficrisk.events import ALERT
from trafficrisk.messages import Alert
from trafficrisk.runtime import get_events, get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.tasks.webhook import queue_webhooks
from trafficrisk.workers.evidence import clip_fps, clip_results, crop_evidence, encode_clip, group_box
from trafficrisk.workers.store import frame_key

log = logging.getLogger(__name__)

# Frames of the seconds after an alert are captured by then; most are through the pipeline.
CLIP_SETTLE_S = 5.0
HISTORY_SEARCHED = 300


def open_alerts(camera_id: str) -> None:
    """Open the camera's new alerts, and any that a stopped worker left half opened; with
    `ALERT_VERIFY_WAIT_S`, not those still waiting for their verdict."""
    store, settings = get_store(), get_settings()
    wait_s = settings.alert_verify_wait_s if settings.is_llm_enabled else 0.0
    for alert in store.claim_alerts_to_open(camera_id, now=time.time(), wait_s=wait_s):
        open_alert(alert)
        store.alert_opened(alert)


def open_alert(alert: Alert) -> None:
    """Keep the alert's frame and crop, tell the dashboard and webhooks, and ask for its clip."""
    store, settings = get_store(), get_settings()
    frame = store.get_blob(frame_key(alert.camera_id, alert.seq))
    if frame is not None:
        store.put_evidence(alert, "frame", frame)
        box = None
        if alert.group_id:
            box = group_box(store.history(alert.camera_id, HISTORY_SEARCHED), alert.frame_id, alert.group_id)
        crop = crop_evidence(frame, box, settings.jpeg_quality) if box else None
        if crop is not None:
            store.put_evidence(alert, "crop", crop)
    else:
        log.warning("frame of alert %s expired before its evidence was kept", alert.alert_id)
    get_events().emit(ALERT, store.get_alert(alert.alert_id) or alert)
    queue_webhooks("alert.opened", alert)
    if frame is not None:
        collect_clip.apply_async(args=[alert.to_wire()], countdown=settings.clip_after_s + CLIP_SETTLE_S)


@app.task(name="trafficrisk.collect_clip", ignore_result=True)
def collect_clip(alert_wire: dict[str, object]) -> None:
    alert, store, settings = Alert.from_wire(alert_wire), get_store(), get_settings()
    results = clip_results(store.history(alert.camera_id, HISTORY_SEARCHED), alert.created_at,
                           settings.clip_before_s, settings.clip_after_s)
    frames = [(r.captured_at, store.get_blob(frame_key(alert.camera_id, r.seq))) for r in results]
    kept = [(t, jpeg) for t, jpeg in frames if jpeg is not None]
    if not kept:
        log.warning("no frames left for the clip of alert %s", alert.alert_id)
        return
    started = time.perf_counter()
    clip = encode_clip([jpeg for _, jpeg in kept], clip_fps([t for t, _ in kept]))
    store.put_evidence(alert, "clip", clip)
    log.info("clip of alert %s: %d frames, %d KiB, %.2f s to encode", alert.alert_id, len(kept),
             len(clip) // 1024, time.perf_counter() - started)
    current = store.get_alert(alert.alert_id)
    if current is not None:
        get_events().emit(ALERT, current)
