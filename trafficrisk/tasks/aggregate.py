"""aggregate: the chord callback; stores the frame's result and pushes it live."""

from __future__ import annotations

from typing import Any

from trafficrisk.events import ALERT, FRAME_RESULT
from trafficrisk.messages import Assessment, FrameResult, RiskLevel
from trafficrisk.runtime import get_events, get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.workers.aggregation import alerts_for, merge_assessments


@app.task(name="trafficrisk.aggregate", ignore_result=True)
def aggregate_frame(assessments: list[dict[str, Any]], draft: dict[str, Any]) -> None:
    result = merge_assessments(FrameResult.from_wire(draft), [Assessment.from_wire(a) for a in assessments])
    store, events = get_store(), get_events()
    store.end_flight(result.camera_id, result.frame_id)
    if store.save_result(result):
        events.emit(FRAME_RESULT, result)
    for alert in alerts_for(result, RiskLevel(get_settings().alert_level)):
        if store.add_alert(alert):
            events.emit(ALERT, alert)
