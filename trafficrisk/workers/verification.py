"""A conflict event's verification: what the LLM is shown, and what its verdict does.

The unit is the conflict event, not the frame (docs/verification.md): the scene marks the
versions that ask (`ConflictEvent.to_verify`), aggregate queues one request for each with
a few frames of the encounter, and the verdict, when it comes, updates the conflict and
its alerts. Nothing on a frame's own path waits for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from trafficrisk.messages import (
    Alert,
    AlertState,
    Box,
    ConflictEvent,
    ConflictSeverity,
    EncounterFrame,
    FrameResult,
    RiskLevel,
    Verdict,
    VerdictSource,
    Verification,
)

# The approach: a frame about this long before the conflict's first frame in range.
BEFORE_S = 1.0
MOST_FRAMES = 3  # before, at the closest moment, now (the start when closest is now)
# Results read back to find the encounter's frames: about 20 s at 5 fps.
HISTORY_READ = 100


def _pair_boxes(result: FrameResult, event: ConflictEvent) -> list[Box]:
    tracks = {event.first_track, event.second_track}
    return [d.box for d in result.detections if d.track_id in tracks]


def _chosen(event: ConflictEvent, shown: list[FrameResult]) -> list[tuple[str, FrameResult]]:
    """(moment, result) for the frames to show, in capture order, at most MOST_FRAMES."""
    by_id = {r.frame_id: r for r in shown}
    before = [r for r in shown if r.captured_at <= event.start_at - BEFORE_S]
    closest = event.min_ttc_frame or event.pet_frame
    now = max((r for r in shown if r.seq <= event.updated_seq), key=lambda r: r.seq, default=None)
    moments = [
        ("before", max(before, key=lambda r: r.seq) if before else None),
        ("start", by_id.get(event.start_frame)),
        ("closest", by_id.get(closest) if closest else None),
        ("now", now),
    ]
    unique: dict[str, tuple[str, FrameResult]] = {}
    for moment, result in moments:
        if result is not None and result.frame_id not in unique:
            unique[result.frame_id] = (moment, result)
    chosen = sorted(unique.values(), key=lambda item: item[1].seq)
    if len(chosen) > MOST_FRAMES:
        chosen = [item for item in chosen if item[0] != "start"][:MOST_FRAMES]
    return chosen


def encounter(
    event: ConflictEvent, history: Sequence[FrameResult], frame_key_of: dict[str, str]
) -> tuple[tuple[EncounterFrame, ...], Box] | None:
    """The frames that show the conflict (the approach, its closest moment, now) and one
    box around the pair in all of them, so the crops show the same place over time; None
    when the camera's recent results no longer show the pair. `frame_key_of` maps a frame
    id to its JPEG's key."""
    shown = [r for r in history if r.camera_id == event.camera_id and _pair_boxes(r, event)]
    chosen = _chosen(event, shown)
    if not chosen:
        return None
    frames = tuple(
        EncounterFrame(
            frame_id=result.frame_id,
            frame_key=frame_key_of[result.frame_id],
            moment=moment,
            offset_s=round(result.captured_at - event.start_at, 2),
        )
        for moment, result in chosen
    )
    box = Box.union([b for _, result in chosen for b in _pair_boxes(result, event)])
    return frames, box


def rules_verdict(event: ConflictEvent) -> Verdict:
    """What the measures alone say of a conflict: the verdict a failed verification keeps."""
    serious = event.severity is ConflictSeverity.SERIOUS
    return Verdict(
        risk_level=RiskLevel.HIGH if serious else RiskLevel.MEDIUM,
        risk_type=f"{event.kind} {event.conflict_type} conflict",
        confidence=0.6,
        reason=f"rules: {event.severity} conflict",
        source=VerdictSource.RULES,
        verification=Verification.UNVERIFIED,
    )


def verified(alert: Alert, verdict: Verdict, resolve_rejected: bool, now: float) -> Alert:
    """The alert with its conflict's verdict; a rejected one resolved, when so configured
    and its lifecycle allows (an operator's acknowledgement is kept until then)."""
    verification = verdict.verification or Verification.UNVERIFIED
    update: dict[str, object] = {"verification": verification, "verdict": verdict, "updated_at": now}
    if (
        verification is Verification.REJECTED
        and resolve_rejected
        and alert.state.can_become(AlertState.RESOLVED)
    ):
        update["state"] = AlertState.RESOLVED
    return alert.model_copy(update=update)


def is_held(alert: Alert, wait_s: float, now: float) -> bool:
    """Whether an alert still waits for its verdict before it opens (`ALERT_VERIFY_WAIT_S`)."""
    waiting = alert.verification is Verification.UNVERIFIED and alert.verdict is None
    return waiting and now - alert.created_at < wait_s
