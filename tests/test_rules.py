"""The rules: groups of road users linked by closeness or an open conflict event, their
pre-score and verdict (which follow from the conflicts only), and the LLM gate.

Detections, pair measures and conflict events are built by hand: detection i has track
id 10 + i, and its box is 40 px wide at x = 100 i, so that group boxes are easy to check.
"""

from __future__ import annotations

from typing import Any

import pytest

from trafficrisk.messages import (
    Box,
    ConflictChange,
    ConflictEvent,
    ConflictSeverity,
    Detection,
    PairMeasure,
    RiskLevel,
)
from trafficrisk.workers.rules import (
    CLOSE_SCORE,
    POTENTIAL_SCORE,
    PROXIMITY_M,
    SERIOUS_SCORE,
    build_groups,
    describe,
    judge,
    level_for,
)


def frame_of(*labels: str) -> tuple[Detection, ...]:
    """Detection i: label i, track 10 + i, a 40 x 80 box at x = 100 i."""
    return tuple(
        Detection(
            label=label,
            confidence=0.9,
            box=Box(x1=100 * i, y1=100, x2=100 * i + 40, y2=180),
            track_id=10 + i,
            confirmed=True,
        )
        for i, label in enumerate(labels)
    )


def near(first: int, second: int, gap_m: float) -> PairMeasure:
    """A pair measure of detections `first` and `second`, `gap_m` apart, not closing in."""
    return PairMeasure(first=first, second=second, gap_m=gap_m, closing_speed=0.0)


def conflict(
    first: int,
    second: int,
    severity: str = "potential",
    change: str = "updated",
    ttc: float | None = 2.0,
    **fields: Any,
) -> ConflictEvent:
    """A conflict event between the tracks of detections `first` and `second` (ids 10 + i)."""
    values: dict[str, Any] = {
        "conflict_id": f"cam:{10 + first}-{10 + second}:1",
        "camera_id": "cam",
        "first_track": 10 + first,
        "second_track": 10 + second,
        "first_label": "car",
        "second_label": "person",
        "kind": "vehicle-pedestrian",
        "conflict_type": "crossing",
        "severity": ConflictSeverity(severity),
        "change": ConflictChange(change),
        "start_at": 1.0,
        "end_at": 2.0,
        "start_frame": "cam:1",
        "last_frame": "cam:6",
        "updated_seq": 6,
        "min_ttc_s": ttc,
        "first_speed_mps": 6.0,
        "second_speed_mps": 1.2,
    }
    return ConflictEvent(**{**values, **fields})


CAR_PERSON = frame_of("car", "person")
# Row: detections, pairs, conflicts -> groups as (members, level, prescore, risk type).
GroupRow = tuple[tuple[int, ...], RiskLevel, float, str]


@pytest.mark.parametrize(
    ("detections", "pairs", "conflicts", "groups"),
    [
        ((), (), (), []),
        (CAR_PERSON, (), (), []),  # no pair measured, no conflict: nothing links them
        # close, no conflict: at most low, whatever the classes
        (CAR_PERSON, (near(0, 1, 1.5),), (), [((0, 1), RiskLevel.LOW, CLOSE_SCORE, "proximity")]),
        (CAR_PERSON, (near(0, 1, PROXIMITY_M),), (), [((0, 1), RiskLevel.LOW, 0.25, "proximity")]),  # 2.0 m
        (CAR_PERSON, (near(0, 1, 2.01),), (), []),  # just beyond 2 m
        (CAR_PERSON, (near(0, 1, 0.0),), (), [((0, 1), RiskLevel.LOW, 0.25, "proximity")]),  # touching
        (frame_of("car", "car"), (near(0, 1, 0.5),), (), [((0, 1), RiskLevel.LOW, 0.25, "proximity")]),
        # pedestrians alone close together: a group, of no risk
        (frame_of("person", "person"), (near(0, 1, 0.5),), (), [((0, 1), RiskLevel.NONE, 0.0, "none")]),
        # an open conflict links them however far apart; its severity sets the level
        (
            CAR_PERSON,
            (near(0, 1, 8.0),),
            (conflict(0, 1),),
            [((0, 1), RiskLevel.MEDIUM, POTENTIAL_SCORE, "vehicle-pedestrian crossing conflict")],
        ),
        (
            CAR_PERSON,
            (),
            (conflict(0, 1, "serious", "escalated"),),
            [((0, 1), RiskLevel.HIGH, SERIOUS_SCORE, "vehicle-pedestrian crossing conflict")],
        ),
        (
            CAR_PERSON,
            (),
            (conflict(0, 1, "potential", "opened"),),
            [((0, 1), RiskLevel.MEDIUM, 0.5, "vehicle-pedestrian crossing conflict")],
        ),
        (
            CAR_PERSON,
            (near(0, 1, 0.3),),
            (conflict(0, 1, "serious"),),
            [((0, 1), RiskLevel.HIGH, 0.8, "vehicle-pedestrian crossing conflict")],
        ),
        # an ended event links nothing; nor one of tracks not in the frame (track 99)
        (CAR_PERSON, (), (conflict(0, 1, "serious", "ended"),), []),
        (
            CAR_PERSON,
            (near(0, 1, 1.0),),
            (conflict(0, 1, "serious", "ended"),),
            [((0, 1), RiskLevel.LOW, 0.25, "proximity")],
        ),
        (CAR_PERSON, (), (conflict(0, 1, "serious", first_track=99),), []),
        # linked transitively: car0-person1 close, person1-person2 close, car3 far from all
        (
            frame_of("car", "person", "person", "car"),
            (near(0, 1, 1.0), near(1, 2, 1.5), near(2, 3, 6.0)),
            (),
            [((0, 1, 2), RiskLevel.LOW, 0.25, "proximity")],
        ),
        # two groups, largest first; a serious conflict in the smaller one does not spread
        (
            frame_of("car", "person", "person", "bus", "person"),
            (near(0, 1, 1.0), near(1, 2, 1.5)),
            (conflict(3, 4, "serious", first_label="bus", conflict_type="head-on"),),
            [
                ((0, 1, 2), RiskLevel.LOW, 0.25, "proximity"),
                ((3, 4), RiskLevel.HIGH, 0.8, "vehicle-pedestrian head-on conflict"),
            ],
        ),
        # a potential and a serious conflict in one group: the serious one decides
        (
            frame_of("car", "person", "car"),
            (),
            (
                conflict(0, 1, "potential", ttc=1.9),
                conflict(1, 2, "serious", ttc=1.2, kind="vehicle-vehicle", conflict_type="rear-end"),
            ),
            [((0, 1, 2), RiskLevel.HIGH, 0.8, "vehicle-vehicle rear-end conflict")],
        ),
        # equal groups: by their first member
        (
            frame_of("car", "car", "person", "person"),
            (near(2, 3, 1.0), near(0, 1, 1.0)),
            (),
            [((0, 1), RiskLevel.LOW, 0.25, "proximity"), ((2, 3), RiskLevel.NONE, 0.0, "none")],
        ),
    ],
)
def test_build_groups(
    detections: tuple[Detection, ...],
    pairs: tuple[PairMeasure, ...],
    conflicts: tuple[ConflictEvent, ...],
    groups: list[GroupRow],
) -> None:
    found = build_groups(detections, pairs, conflicts)
    seen = [(g.members, g.rules_verdict.risk_level, g.prescore, g.rules_verdict.risk_type) for g in found]
    assert seen == groups
    for number, group in enumerate(found):
        assert group.group_id == f"g{number}"
        assert group.labels == tuple(detections[i].label for i in group.members)
        assert group.rules_verdict.source == "rules"
        assert group.rules_verdict.risk_level is level_for(group.prescore)
        assert group.pairs == tuple(p for p in pairs if {p.first, p.second} <= set(group.members))


@pytest.mark.parametrize(
    ("pairs", "error"),
    [
        # a pair measure naming a detection the frame does not have
        ((near(0, 5, 1.0),), IndexError),
        ((near(-3, 1, 1.0),), IndexError),
    ],
)
def test_pairs_out_of_the_frame_are_refused(pairs: tuple[PairMeasure, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        build_groups(CAR_PERSON, pairs, ())


def test_a_group_s_box_and_pairs() -> None:
    # Boxes x 0..40, 100..140, 200..240 (y 100..180): the group of 0 and 2 spans x 0..240.
    detections = frame_of("car", "bus", "person")
    pairs = (near(0, 2, 1.0), near(0, 1, 4.0))
    (group,) = build_groups(detections, pairs, ())
    assert group.members == (0, 2)
    assert group.box == Box(x1=0, y1=100, x2=240, y2=180)
    assert group.pairs == (near(0, 2, 1.0),)  # 0-1 is measured, but 1 is not in the group


@pytest.mark.parametrize(
    ("conflicts", "score", "level", "confidence", "reason"),
    [
        ((), 0.25, RiskLevel.LOW, 0.5, "rules: road users close together, no conflict"),
        (
            (conflict(0, 1, "potential", ttc=2.46),),
            0.5,
            RiskLevel.MEDIUM,
            0.6,
            "rules: potential vehicle-pedestrian crossing conflict, min TTC 2.5 s",
        ),
        (
            (conflict(0, 1, "serious", ttc=1.04),),
            0.8,
            RiskLevel.HIGH,
            0.6,
            "rules: serious vehicle-pedestrian crossing conflict, min TTC 1.0 s",
        ),
        # of two potential conflicts, the one with the lower TTC is the worst
        ((conflict(0, 1, ttc=2.8), conflict(0, 1, ttc=1.9)), 0.5, RiskLevel.MEDIUM, 0.6, "min TTC 1.9 s"),
        # a serious one outranks a lower TTC in a potential one
        (
            (conflict(0, 1, ttc=1.6), conflict(0, 1, "serious", ttc=None, pet_s=0.8)),
            0.8,
            RiskLevel.HIGH,
            0.6,
            "serious vehicle-pedestrian crossing conflict, PET 0.8 s",
        ),
    ],
)
def test_judge(
    conflicts: tuple[ConflictEvent, ...], score: float, level: RiskLevel, confidence: float, reason: str
) -> None:
    prescore, verdict = judge(CAR_PERSON, [0, 1], conflicts)
    assert (prescore, verdict.risk_level, verdict.confidence) == (score, level, confidence)
    assert reason in verdict.reason
    assert verdict.source == "rules"


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        # min TTC 1.234 -> "1.2"; DRAC 3.456 -> "3.5"
        (
            {"min_ttc_s": 1.234, "max_drac": 3.456},
            "min TTC 1.2 s, DRAC 3.5 m/s², car #10 at 6.0 m/s, person #11 at 1.2 m/s",
        ),
        ({"min_ttc_s": None, "pet_s": 0.76}, "PET 0.8 s, car #10 at 6.0 m/s, person #11 at 1.2 m/s"),
        (
            {"first_speed_mps": None, "second_speed_mps": None, "approximate": True},
            "min TTC 2.0 s, car #10 at 0.0 m/s, person #11 at 0.0 m/s, approximate scale",
        ),
    ],
)
def test_describe(fields: dict[str, Any], text: str) -> None:
    assert describe(conflict(0, 1, **fields)) == text


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0.0, RiskLevel.NONE),
        (0.19, RiskLevel.NONE),
        (0.2, RiskLevel.LOW),
        (CLOSE_SCORE, RiskLevel.LOW),
        (0.39, RiskLevel.LOW),
        (0.4, RiskLevel.MEDIUM),
        (POTENTIAL_SCORE, RiskLevel.MEDIUM),
        (0.69, RiskLevel.MEDIUM),
        (0.7, RiskLevel.HIGH),
        (SERIOUS_SCORE, RiskLevel.HIGH),
        (1.0, RiskLevel.HIGH),
    ],
)
def test_level_for(score: float, level: RiskLevel) -> None:
    assert level_for(score) is level
