"""The rules: a frame's groups and their verdicts, which follow from its conflict events.

A group is road users linked by an open conflict event or by standing close (their
footprints within `PROXIMITY_M`, a vehicle among them). Its level comes from the most
serious conflict in it: `high` only from a serious one, `medium` from a potential one;
closeness with no conflict is at most `low`, whatever the classes: a pedestrian next to
a parked van is no danger, and one still frame cannot tell more.
"""

from __future__ import annotations

from collections.abc import Sequence

from trafficrisk.messages import (
    Box,
    ConflictEvent,
    ConflictSeverity,
    Detection,
    Group,
    PairMeasure,
    RiskLevel,
    Verdict,
    VerdictSource,
)
from trafficrisk.workers.road_users import is_vehicle

PROXIMITY_M = 2.0

# Pre-scores (0..1) and levels: the dashboard goes by them.
SERIOUS_SCORE, POTENTIAL_SCORE, CLOSE_SCORE = 0.8, 0.5, 0.25
_LEVEL_FLOORS = ((0.7, RiskLevel.HIGH), (0.4, RiskLevel.MEDIUM), (0.2, RiskLevel.LOW))


def level_for(score: float) -> RiskLevel:
    return next((level for floor, level in _LEVEL_FLOORS if score >= floor), RiskLevel.NONE)


def _linked(
    detections: Sequence[Detection], pairs: Sequence[PairMeasure], conflicts: Sequence[ConflictEvent]
) -> list[tuple[int, int]]:
    index = {d.track_id: i for i, d in enumerate(detections) if d.track_id is not None}
    links = [(p.first, p.second) for p in pairs if p.gap_m <= PROXIMITY_M]
    links += [
        (index[c.first_track], index[c.second_track])
        for c in conflicts
        if c.is_open and c.first_track in index and c.second_track in index
    ]
    return links


def _components(size: int, links: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(size))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in range(size):
        members.setdefault(root(i), []).append(i)
    groups = [m for m in members.values() if len(m) >= 2]
    return sorted(groups, key=lambda m: (-len(m), m[0]))


def build_groups(
    detections: Sequence[Detection], pairs: Sequence[PairMeasure], conflicts: Sequence[ConflictEvent]
) -> tuple[Group, ...]:
    """The frame's groups, largest first, each with its pre-score and rules verdict."""
    groups = []
    for number, members in enumerate(_components(len(detections), _linked(detections, pairs, conflicts))):
        inside = set(members)
        tracks = {detections[i].track_id for i in members}
        own_pairs = tuple(p for p in pairs if p.first in inside and p.second in inside)
        own_conflicts = [c for c in conflicts if c.is_open and {c.first_track, c.second_track} <= tracks]
        prescore, verdict = judge(detections, members, own_conflicts)
        groups.append(
            Group(
                group_id=f"g{number}",
                members=tuple(members),
                labels=tuple(detections[i].label for i in members),
                box=Box.union([detections[i].box for i in members]),
                prescore=prescore,
                rules_verdict=verdict,
                pairs=own_pairs,
            )
        )
    return tuple(groups)


def judge(
    detections: Sequence[Detection], members: Sequence[int], conflicts: Sequence[ConflictEvent]
) -> tuple[float, Verdict]:
    """A group's pre-score and the rules verdict that follows from its conflicts."""
    worst = max(conflicts, key=lambda c: (c.severity.rank, -(c.min_ttc_s or 99.0)), default=None)
    if worst is not None:
        serious = worst.severity is ConflictSeverity.SERIOUS
        score = SERIOUS_SCORE if serious else POTENTIAL_SCORE
        risk_type = f"{worst.kind} {worst.conflict_type} conflict"
        reason = f"rules: {worst.severity} {risk_type}, {describe(worst)}"
    else:
        vehicles = any(is_vehicle(detections[i].label) for i in members)
        score = CLOSE_SCORE if vehicles else 0.0
        risk_type = "proximity" if vehicles else "none"
        reason = "rules: road users close together, no conflict (no one on a collision course)"
    level = level_for(score)
    return score, Verdict(
        risk_level=level,
        risk_type=risk_type if level is not RiskLevel.NONE else "none",
        confidence=0.6 if worst else 0.5,
        reason=reason[:400],
        source=VerdictSource.RULES,
    )


def describe(conflict: ConflictEvent) -> str:
    """The measures of a conflict in a few words."""
    parts = []
    if conflict.min_ttc_s is not None:
        parts.append(f"min TTC {conflict.min_ttc_s:.1f} s")
    if conflict.pet_s is not None:
        parts.append(f"PET {conflict.pet_s:.1f} s")
    if conflict.max_drac is not None:
        parts.append(f"DRAC {conflict.max_drac:.1f} m/s²")
    parts.append(
        f"{conflict.first_label} #{conflict.first_track} at {conflict.first_speed_mps or 0:.1f} m/s, "
        f"{conflict.second_label} #{conflict.second_track} at {conflict.second_speed_mps or 0:.1f} m/s"
    )
    if conflict.approximate:
        parts.append("approximate scale")
    return ", ".join(parts)
