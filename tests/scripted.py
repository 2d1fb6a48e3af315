"""Scripted frame results for the pattern, window and alert tests: one camera at 1 fps."""

from __future__ import annotations

import random
from dataclasses import dataclass

import yaml

from trafficrisk.messages import (
    AssessedGroup,
    Box,
    ConflictChange,
    ConflictEvent,
    ConflictSeverity,
    Detection,
    FrameResult,
    Group,
    PairMeasure,
    RiskLevel,
    Verdict,
    VerdictSource,
)
from trafficrisk.workers.patterns import (
    ConflictPattern,
    LastingGroup,
    LevelFrames,
    PatternBase,
    RiskyGroup,
    ZoneConflict,
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


def scripted_result(
    seq: int,
    *groups: Scripted,
    camera_id: str = CAMERA,
    start: float = START,
    conflicts: tuple[ConflictEvent, ...] = (),
) -> FrameResult:
    detections: list[Detection] = []
    assessed = []
    for number, scripted in enumerate(groups):
        first = len(detections)
        for track, label, x in zip(scripted.tracks, scripted.labels, (100, 160), strict=True):
            zones = (scripted.walker_zone,) if scripted.walker_zone and len(detections) == first else ()
            left = x + 200 * number
            detections.append(
                Detection(
                    label=label,
                    confidence=0.9,
                    track_id=track,
                    zones=zones,
                    box=Box(x1=left, y1=100, x2=left + 50, y2=200),
                )
            )
        verdict = Verdict(
            risk_level=scripted.level,
            risk_type="near miss",
            confidence=0.8,
            reason=f"group {number} at {scripted.level}",
            source=VerdictSource.LLM,
        )
        pair = PairMeasure(first=first, second=first + 1, gap_m=1.5, closing_speed=4.0, ttc_s=scripted.ttc_s)
        group = Group(
            group_id=f"g{number}",
            members=(first, first + 1),
            labels=scripted.labels,
            box=Box.union([d.box for d in detections[first:]]),
            prescore=0.5,
            rules_verdict=verdict,
            pairs=(pair,),
        )
        assessed.append(AssessedGroup(group=group, verdict=verdict))
    return FrameResult(
        camera_id=camera_id,
        frame_id=f"{camera_id}:{seq}",
        seq=seq,
        captured_at=start + seq,
        processed_at=start + seq + 0.5,
        width=640,
        height=480,
        detector="scripted",
        llm_enabled=True,
        detections=tuple(detections),
        groups=tuple(assessed),
        risk_level=RiskLevel.highest([g.level for g in groups]),
        conflicts=conflicts,
    )


HIGH = Scripted(RiskLevel.HIGH)
LASTING = Scripted(RiskLevel.MEDIUM, tracks=(3, 4), labels=("person", "person"))
CONFLICT = Scripted(RiskLevel.MEDIUM, tracks=(5, 6), walker_zone="crosswalk", ttc_s=1.5)
ENCOUNTER = Scripted(RiskLevel.MEDIUM, tracks=(7, 8), labels=("car", "person"), ttc_s=1.2)


# The temporal patterns that were the built-in ones before conflict events, and today's
# built-in one: the story below raises one alert of each.
STORY_PATTERNS: list[PatternBase] = [
    RiskyGroup(name="risky-group", level=RiskLevel.HIGH, cooldown_s=30),
    LevelFrames(name="high-frames", level=RiskLevel.HIGH, frames=3, within_s=10, cooldown_s=60),
    LastingGroup(name="lasting-group", level=RiskLevel.MEDIUM, duration_s=10, cooldown_s=60),
    ZoneConflict(name="crosswalk-conflict", zone="crosswalk", ttc_s=2.0, cooldown_s=30),
    ConflictPattern(name="conflict", severity=ConflictSeverity.SERIOUS),
]


def conflict_event(seq: int, start: float = START, camera_id: str = CAMERA) -> ConflictEvent | None:
    """The story's conflict between tracks 7 and 8: opens potential at frame 25, turns
    serious at 27, ends at 30."""
    if not 25 <= seq <= 30:
        return None
    change = {25: ConflictChange.OPENED, 27: ConflictChange.ESCALATED, 30: ConflictChange.ENDED}
    serious = seq >= 27
    return ConflictEvent(
        conflict_id=f"{camera_id}:7-8:25",
        camera_id=camera_id,
        first_track=7,
        second_track=8,
        first_label="car",
        second_label="person",
        kind="vehicle-pedestrian",
        conflict_type="crossing",
        severity=ConflictSeverity.SERIOUS if serious else ConflictSeverity.POTENTIAL,
        change=change.get(seq, ConflictChange.UPDATED),
        start_at=start + 25,
        end_at=start + min(seq, 29),
        start_frame=f"{camera_id}:25",
        last_frame=f"{camera_id}:{min(seq, 29)}",
        updated_seq=seq,
        min_ttc_s=1.2 if serious else 2.4,
        min_ttc_at=start + (27 if serious else 25),
        min_ttc_frame=f"{camera_id}:{27 if serious else 25}",
        first_speed_mps=8.0,
        second_speed_mps=1.4,
    )


def scripted_story(frames: int = 45, start: float = START) -> list[FrameResult]:
    """Each of STORY_PATTERNS matches once, then again within its cooldown:

    a medium group of two pedestrians together from frame 1 to 15 (lasting-group at 12,
    more than 10 s); a high group at 5, 6, 7 (risky-group at 5, high-frames at 7) and 9
    (both cooling down); a pedestrian in the crosswalk with a car 1.5 s away at 20 and 21
    (crosswalk-conflict at 20, then cooling down); a conflict event of a car and a
    pedestrian grouped at medium from 25 to 30, serious from 27 (conflict at 27, once);
    frames 40.. fall in the next minute.
    """
    story = []
    for seq in range(1, frames + 1):
        groups = [LASTING] if seq <= 15 else []
        if seq in (5, 6, 7, 9):
            groups.append(HIGH)
        if seq in (20, 21):
            groups.append(CONFLICT)
        event = conflict_event(seq, start)
        if event is not None:
            groups.append(ENCOUNTER)
        story.append(scripted_result(seq, *groups, start=start, conflicts=(event,) if event else ()))
    return story


STORY_ALERTS = {
    "cam:risky-group:5",
    "cam:high-frames:7",
    "cam:lasting-group:12",
    "cam:crosswalk-conflict:20",
    "cam:conflict:7-8-25",
}


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
    return [*arrivals[: index + 1], story[seq - 1], *arrivals[index + 1 :]]


def patterns_yaml(patterns: list[PatternBase]) -> str:
    """A patterns file (TRAFFICRISK_PATTERNS_FILE) of these patterns."""
    return yaml.safe_dump({"patterns": [p.model_dump(mode="json") for p in patterns]})
