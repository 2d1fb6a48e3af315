"""aggregate: stores a frame's result as soon as detect has it, runs the patterns, pushes it
live, and sends the conflicts that ask for it to verification."""

from __future__ import annotations

import time
from typing import Any

from trafficrisk.events import ALERT, CONFLICT, FRAME_RESULT, STATS
from trafficrisk.messages import CameraMinute, FrameResult
from trafficrisk.runtime import get_events, get_pattern_engine, get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.tasks.evidence import open_alerts
from trafficrisk.tasks.verification import queue_verifications
from trafficrisk.tasks.webhook import queue_webhooks
from trafficrisk.workers.aggregation import record_result


@app.task(name="trafficrisk.aggregate", ignore_result=True)
def aggregate_frame(draft: dict[str, Any]) -> None:
    result = FrameResult.from_wire(draft)
    result = result.model_copy(
        update={"timings": {**result.timings, "total_s": round(time.time() - result.captured_at, 4)}}
    )
    store, events, verify = get_store(), get_events(), get_settings().is_llm_enabled
    recorded = record_result(store, get_pattern_engine(), result, time.time(), verify)
    if recorded.saved.is_latest:
        events.emit(FRAME_RESULT, result)
    for conflict in recorded.conflicts:
        events.emit(CONFLICT, conflict)
    open_alerts(result.camera_id)
    for alert in recorded.alerts:
        if alert.escalated:
            events.emit(ALERT, alert)
            queue_webhooks("alert.escalated", alert)
    if verify:
        queue_verifications(result.camera_id)
    # The save returned the minute's counts; alerts just opened add to them.
    opened = any(not alert.escalated for alert in recorded.alerts)
    minute = (
        store.minutes([result.camera_id], result.captured_at, result.captured_at)[0]
        if opened
        else recorded.saved.minute
    )
    if minute is not None:
        events.emit(STATS, CameraMinute(camera_id=result.camera_id, minute=minute))
