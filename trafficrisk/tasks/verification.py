"""Verification off the frame's path: a chord of assess tasks for the conflicts that ask,
and its callback `record_verdicts`, which updates the conflicts and their alerts."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import chord

from trafficrisk.events import ALERT, CONFLICT
from trafficrisk.messages import Assessment, AssessRequest, ConflictEvent, ConflictSeverity
from trafficrisk.queues import LLM_HIGH_QUEUE, LLM_LOW_QUEUE
from trafficrisk.runtime import get_events, get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.tasks.assess import assess_conflict, assess_conflicts
from trafficrisk.tasks.evidence import open_alerts
from trafficrisk.tasks.webhook import queue_webhooks
from trafficrisk.workers.llm import fallback_verdict
from trafficrisk.workers.llm_batching import frame_batches
from trafficrisk.workers.store import frame_key
from trafficrisk.workers.verification import HISTORY_READ, encounter, rules_verdict

log = logging.getLogger(__name__)


def queue_verifications(camera_id: str) -> None:
    """Send the camera's conflicts that wait for verification to assess, in one chord."""
    store = get_store()
    claimed = store.claim_verifications(camera_id)
    if not claimed:
        return
    history = store.history(camera_id, HISTORY_READ)
    keys = {result.frame_id: frame_key(result.camera_id, result.seq) for result in history}
    requests = []
    for event in claimed:
        shown = encounter(event, history, keys)
        if shown is None:  # its frames are gone from the history: say so rather than wait
            log.warning("conflict %s: no frames left to verify it", event.conflict_id)
            record_verdict(_unshown(event))
            continue
        frames, box = shown
        requests.append(
            AssessRequest(
                conflict=event,
                frames=frames,
                box=box,
                width=history[0].width,
                height=history[0].height,
                high_priority=event.severity is ConflictSeverity.SERIOUS,
                queued_at=time.time(),
            )
        )
    if requests:
        header = []
        for batch in frame_batches(requests, get_settings().llm_batch_size):
            queue = LLM_HIGH_QUEUE if batch[0].high_priority else LLM_LOW_QUEUE
            task = (
                assess_conflict.s(batch[0].to_wire())
                if len(batch) == 1
                else assess_conflicts.s([request.to_wire() for request in batch])
            )
            header.append(task.set(queue=queue))
        chord(header)(record_verdicts.s())
    for event in claimed:
        store.verification_queued(event)


def _unshown(event: ConflictEvent) -> Assessment:
    reason = "its frames were gone before it could be sent"
    return Assessment(
        conflict_id=event.conflict_id,
        camera_id=event.camera_id,
        severity=event.severity,
        verdict=fallback_verdict(rules_verdict(event), reason),
        error=reason,
    )


@app.task(name="trafficrisk.record_verdicts", ignore_result=True)
def record_verdicts(assessments: list[dict[str, Any] | list[dict[str, Any]]]) -> None:
    # A header task returns one conflict's assessment, or (assess_many) a list of them.
    for item in assessments:
        for assessment in item if isinstance(item, list) else [item]:
            record_verdict(Assessment.from_wire(assessment))


def record_verdict(assessment: Assessment) -> None:
    """Keep the verdict on its conflict and its alerts, and tell the dashboard and webhooks."""
    store, events = get_store(), get_events()
    event = store.save_verdict(assessment.conflict_id, assessment.verdict, assessment.severity)
    if event is None:  # a graver severity's verdict is there already, or the conflict is gone
        return
    events.emit(CONFLICT, event)
    for alert, opened in store.verify_alerts(event, time.time()):
        if opened:  # one still waiting to open goes out verified when it does
            events.emit(ALERT, alert)
            queue_webhooks("alert.verified", alert)
    open_alerts(assessment.camera_id)
