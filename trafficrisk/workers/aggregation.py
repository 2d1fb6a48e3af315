"""A frame's final result: the draft with each assessed group's verdict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from trafficrisk.messages import (
    Alert,
    AssessedGroup,
    Assessment,
    ConflictChange,
    ConflictEvent,
    FrameResult,
    RiskLevel,
)
from trafficrisk.workers.patterns import PatternEngine
from trafficrisk.workers.store import SaveOutcome, Store


def merge_assessments(draft: FrameResult, assessments: Sequence[Assessment]) -> FrameResult:
    """The draft with the assessed verdicts in place of the rules' ones."""
    by_group = {a.group_id: a for a in assessments}
    groups = tuple(
        AssessedGroup(group=g.group, verdict=by_group[g.group.group_id].verdict)
        if g.group.group_id in by_group
        else g
        for g in draft.groups
    )
    timings = dict(draft.timings)
    if assessments:
        timings["llm_s"] = max(a.latency_s for a in assessments)
    timings["total_s"] = round(time.time() - draft.captured_at, 4)
    return draft.model_copy(
        update={
            "groups": groups,
            "timings": timings,
            "risk_level": RiskLevel.highest([g.verdict.risk_level for g in groups]),
        }
    )


@dataclass(frozen=True)
class Recorded:
    saved: SaveOutcome
    alerts: list[Alert]  # opened (of this frame or of frames that waited for it) or escalated
    # The conflict events whose new version this frame stored and that opened, escalated or ended.
    conflicts: list[ConflictEvent]


def record_result(store: Store, engine: PatternEngine, result: FrameResult, now: float) -> Recorded:
    """Save a frame's result and its conflict events, and run the camera's patterns on it,
    all once per frame id."""
    store.end_flight(result.camera_id, result.frame_id)
    saved = store.save_result(result)
    stored = store.save_conflicts(result.conflicts, now)
    announced = [
        event
        for event, new in zip(result.conflicts, stored, strict=True)
        if new and event.change is not ConflictChange.UPDATED
    ]
    frame = engine.frame_facts(result)
    alerts = store.advance_patterns(result.camera_id, lambda state: engine.advance(state, frame), now)
    return Recorded(saved, alerts, announced)


def record_skipped_frame(
    store: Store, engine: PatternEngine, camera_id: str, seq: int, captured_at: float, now: float
) -> list[Alert]:
    """A frame dropped before detection: the patterns go on past it at once; the alerts
    of frames that were waiting for it."""
    frame = engine.skipped_frame(camera_id, seq, captured_at)
    return store.advance_patterns(camera_id, lambda state: engine.advance(state, frame), now)
