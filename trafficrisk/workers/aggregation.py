"""A frame's result recorded: stored with its conflict events, and the camera's patterns run on it."""

from __future__ import annotations

from dataclasses import dataclass

from trafficrisk.messages import (
    Alert,
    ConflictChange,
    ConflictEvent,
    FrameResult,
)
from trafficrisk.workers.patterns import PatternEngine
from trafficrisk.workers.store import SaveOutcome, Store


@dataclass(frozen=True)
class Recorded:
    saved: SaveOutcome
    alerts: list[Alert]  # opened (of this frame or of frames that waited for it) or escalated
    # The conflict events whose new version this frame stored and that opened, escalated or ended.
    conflicts: list[ConflictEvent]


def record_result(
    store: Store, engine: PatternEngine, result: FrameResult, now: float, verify: bool = False
) -> Recorded:
    """Save a frame's result and its conflict events (with `verify`, those that ask wait
    for verification), and run the camera's patterns on it, all once per frame id."""
    store.end_flight(result.camera_id, result.frame_id)
    saved = store.save_result(result)
    stored = store.save_conflicts(result.conflicts, now, verify)
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
