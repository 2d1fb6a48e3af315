"""Scripted frame results for the pattern, window and alert tests: one camera at 1 fps."""

from __future__ import annotations

import random
from dataclasses import dataclass

from trafficrisk.messages import (
    AssessedGroup,
    Box,
    Detection,
    FrameResult,
    Group,
    PairMeasure,
    RiskLevel,
    Verdict,
    VerdictSource,
)

CAMERA = "cam"
START = 1_000_040.0  # 20 s into a minute (1_000_020): frames 1..39 fall in it, 40..99 in the next


@dataclass(frozen=True)
class Scripted:
    """A group in a scripted frame: its level, its road users' tracks and labels."""

    level: RiskLevel
    tracks: tuple[int, int] = (1, 2)
    labels: tuple[str, str] = ("person", "car")
    walker_zone: str = ""  # the first road user stands in this zone
    ttc_s: float | None = None


def scripted_result(seq: int, *groups: Scripted, camera_id: str = CAMERA,
                    start: float = START) -> FrameResult:
    detections: list[Detection] = []
    assessed = []
    for number, scripted in enumerate(groups):
        first = len(detections)
        for track, label, x in zip(scripted.tracks, scripted.labels, (100, 160), strict=True):
            zones = (scripted.walker_zone,) if scripted.walker_zone and len(detections) == first else ()
            left = x + 200 * number
            detections.append(Detection(label=label, confidence=0.9, track_id=track, zones=zones,
                                        box=Box(x1=left, y1=100, x2=left + 50, y2=200)))
        verdict = Verdict(risk_level=scripted.level, risk_type="near miss", confidence=0.8,
                          reason=f"group {number} at {scripted.level}", source=VerdictSource.LLM)
        pair = PairMeasure(first=first, second=first + 1, unit="px", distance=60, closing_speed=40,
                           ttc_s=scripted.ttc_s)
        group = Group(group_id=f"g{number}", members=(first, first + 1), labels=scripted.labels,
                      box=Box.union([d.box for d in detections[first:]]), prescore=0.5, rules_verdict=verdict,
                      pairs=(pair,))
        assessed.append(AssessedGroup(group=group, verdict=verdict))
    return FrameResult(camera_id=camera_id, frame_id=f"{camera_id}:{seq}", seq=seq, captured_at=start + seq,
                       processed_at=start + seq + 0.5, width=640, height=480, detector="scripted",
                       llm_enabled=True, detections=tuple(detections), groups=tuple(assessed),
                       risk_level=RiskLevel.highest([g.level for g in groups]))


HIGH = Scripted(RiskLevel.HIGH)
LASTING = Scripted(RiskLevel.MEDIUM, tracks=(3, 4), labels=("person", "person"))
CONFLICT = Scripted(RiskLevel.MEDIUM, tracks=(5, 6), walker_zone="crosswalk", ttc_s=1.5)


def scripted_story(frames: int = 45, start: float = START) -> list[FrameResult]:
    """Each built-in pattern matches once, then again within its cooldown:

    a medium group of two pedestrians together from frame 1 to 15 (lasting-group at 12,
    more than 10 s); a high group at 5, 6, 7 (risky-group at 5, high-frames at 7) and 9
    (both cooling down); a pedestrian in the crosswalk with a car 1.5 s away at 20 and 21
    (crosswalk-conflict at 20, then cooling down); frames 40.. fall in the next minute.
    """
    story = []
    for seq in range(1, frames + 1):
        groups = [LASTING] if seq <= 15 else []
        if seq in (5, 6, 7, 9):
            groups.append(HIGH)
        if seq in (20, 21):
            groups.append(CONFLICT)
        story.append(scripted_result(seq, *groups, start=start))
    return story


STORY_ALERTS = {"cam:risky-group:5", "cam:high-frames:7", "cam:lasting-group:12", "cam:crosswalk-conflict:20"}


def jittered(story: list[FrameResult], delay: float, duplicates: int, seed: int) -> list[FrameResult]:
    """Each frame finishes up to `delay` frames late, and some again later (a redelivery)."""
    rng = random.Random(seed)
    arrivals = sorted(story, key=lambda r: r.seq + rng.uniform(0, delay))
    for _ in range(duplicates):
        first = rng.randrange(len(arrivals))
        arrivals.insert(rng.randrange(first + 1, len(arrivals) + 1), arrivals[first])
    return arrivals


def moved(story: list[FrameResult], seq: int, after: int) -> list[FrameResult]:
    """Frame `seq` finishing just after frame `after`."""
    arrivals = [r for r in story if r.seq != seq]
    index = next(i for i, r in enumerate(arrivals) if r.seq == after)
    return [*arrivals[:index + 1], story[seq - 1], *arrivals[index + 1:]]
