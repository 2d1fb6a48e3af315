"""A frame's final result: the draft with each assessed group's verdict, and its alerts."""

from __future__ import annotations

import time
from collections.abc import Sequence

from trafficrisk.messages import Alert, AssessedGroup, Assessment, FrameResult, RiskLevel


def merge_assessments(draft: FrameResult, assessments: Sequence[Assessment]) -> FrameResult:
    """The draft with the assessed verdicts in place of the rules' ones."""
    by_group = {a.group_id: a for a in assessments}
    groups = tuple(
        AssessedGroup(group=g.group, verdict=by_group[g.group.group_id].verdict)
        if g.group.group_id in by_group else g
        for g in draft.groups
    )
    timings = dict(draft.timings)
    if assessments:
        timings["llm_s"] = max(a.latency_s for a in assessments)
    timings["total_s"] = round(time.time() - draft.captured_at, 4)
    return draft.model_copy(update={
        "groups": groups,
        "timings": timings,
        "risk_level": RiskLevel.highest([g.verdict.risk_level for g in groups]),
    })


def alerts_for(result: FrameResult, alert_level: RiskLevel) -> list[Alert]:
    """One alert per group at or above `alert_level`; ids derive from the frame, so a
    redelivered task produces the same alerts, not new ones."""
    return [
        Alert(
            alert_id=f"{result.frame_id}:{g.group.group_id}",
            camera_id=result.camera_id,
            frame_id=result.frame_id,
            created_at=result.captured_at,
            risk_level=g.verdict.risk_level,
            risk_type=g.verdict.risk_type,
            reason=g.verdict.reason,
            source=g.verdict.source,
            group_id=g.group.group_id,
        )
        for g in result.groups
        if g.verdict.risk_level.rank >= alert_level.rank
    ]
