"""aggregate: the chord callback; stores the frame's result, runs the patterns, pushes it live."""

from __future__ import annotations

import time
from typing import Any

from trafficrisk.events import ALERT, CONFLICT, FRAME_RESULT, STATS
from trafficrisk.messages import Assessment, CameraMinute, FrameResult
from trafficrisk.runtime import get_events, get_pattern_engine, get_store
from trafficrisk.tasks.app import app
from trafficrisk.tasks.evidence import open_alerts
from trafficrisk.tasks.webhook import queue_webhooks
from trafficrisk.workers.aggregation import merge_assessments, record_result


@app.task(name="trafficrisk.aggregate", ignore_result=True)
def aggregate_frame(assessments: list[dict[str, Any] | list[dict[str, Any]]], draft: dict[str, Any]) -> None:
    # A header task returns one group's assessment, or (assess_many) a list of them.
    flat = [a for item in assessments for a in (item if isinstance(item, list) else [item])]
    result = merge_assessments(FrameResult.from_wire(draft), [Assessment.from_wire(a) for a in flat])
    store, events = get_store(), get_events()
    recorded = record_result(store, get_pattern_engine(), result, time.time())
    if recorded.saved.is_latest:
        events.emit(FRAME_RESULT, result)
    for conflict in recorded.conflicts:
        events.emit(CONFLICT, conflict)
    open_alerts(result.camera_id)
    for alert in recorded.alerts:
        if alert.escalated:
            events.emit(ALERT, alert)
            queue_webhooks("alert.escalated", alert)
    # The save returned the minute's counts; alerts just opened add to them.
    opened = any(not alert.escalated for alert in recorded.alerts)
    minute = (
        store.minutes([result.camera_id], result.captured_at, result.captured_at)[0]
        if opened
        else recorded.saved.minute
    )
    if minute is not None:
        events.emit(STATS, CameraMinute(camera_id=result.camera_id, minute=minute))
