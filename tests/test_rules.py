"""Grouping and the rules' pre-score, on hand-placed boxes."""

from __future__ import annotations

import pytest

from trafficrisk.messages import Box, Detection, RiskLevel
from trafficrisk.workers.analysis import build_groups
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.grouping import find_groups
from trafficrisk.workers.interaction import with_speeds
from trafficrisk.workers.rules import LlmGate, level_for, score_group


def person(x: float, y: float = 300, h: float = 100) -> Detection:
    return Detection(label="person", confidence=0.9, box=Box(x1=x, y1=y - h, x2=x + h / 3, y2=y))


def car(x: float, y: float = 300, h: float = 100) -> Detection:
    return Detection(label="car", confidence=0.9, box=Box(x1=x, y1=y - h, x2=x + 2 * h, y2=y))


@pytest.mark.parametrize(
    ("detections", "groups"),
    [
        ([], []),
        ([person(0)], []),
        ([person(0), person(60)], [[0, 1]]),
        ([person(0), person(600)], []),
        ([person(0), person(80), person(160), person(900)], [[0, 1, 2]]),  # linked transitively
        ([person(0), person(500), person(60), person(560)], [[0, 2], [1, 3]]),
        ([person(0, y=300), person(0, y=600)], []),  # same column, far apart in depth
    ],
)
def test_find_groups(detections: list[Detection], groups: list[list[int]]) -> None:
    assert find_groups(detections) == groups


@pytest.mark.parametrize(
    ("detections", "lowest", "highest", "risk_type"),
    [
        ([person(0), person(40)], RiskLevel.NONE, RiskLevel.LOW, "crowding"),
        ([person(0), car(50)], RiskLevel.MEDIUM, RiskLevel.MEDIUM, "vehicle-pedestrian proximity"),
        ([person(0), car(100)], RiskLevel.LOW, RiskLevel.MEDIUM, "vehicle-pedestrian proximity"),
        ([person(0), car(20)], RiskLevel.MEDIUM, RiskLevel.MEDIUM, "vehicle-pedestrian proximity"),  # overlap
        ([car(0), car(300)], RiskLevel.NONE, RiskLevel.LOW, "vehicle-vehicle proximity"),
        ([car(0), car(150), car(300)], RiskLevel.LOW, RiskLevel.LOW, "vehicle-vehicle proximity"),  # parked
        ([person(0), person(20), person(40), car(60)], RiskLevel.MEDIUM, RiskLevel.MEDIUM,
         "vehicle-pedestrian proximity"),
    ],
)
def test_score_group_levels(detections: list[Detection], lowest: RiskLevel, highest: RiskLevel,
                            risk_type: str) -> None:
    score, verdict = score_group(detections, range(len(detections)))
    assert 0 <= score <= 1
    assert lowest.rank <= verdict.risk_level.rank <= highest.rank
    assert verdict.source == "rules"
    if verdict.risk_level is not RiskLevel.NONE:
        assert verdict.risk_type == risk_type


def test_closer_is_riskier() -> None:
    far, _ = score_group([person(0), car(110)], [0, 1])
    near, _ = score_group([person(0), car(40)], [0, 1])
    assert near > far


@pytest.mark.parametrize(
    ("score", "level"),
    [(0.0, RiskLevel.NONE), (0.19, RiskLevel.NONE), (0.2, RiskLevel.LOW), (0.45, RiskLevel.MEDIUM),
     (0.7, RiskLevel.HIGH), (1.0, RiskLevel.HIGH)],
)
def test_level_for(score: float, level: RiskLevel) -> None:
    assert level_for(score) is level


@pytest.mark.parametrize(
    ("prescore", "wants", "high"),
    [(0.1, False, False), (0.35, True, False), (0.69, True, False), (0.7, True, True)],
)
def test_gate(prescore: float, wants: bool, high: bool) -> None:
    gate = LlmGate(min_score=0.35, high_priority_score=0.7)
    assert gate.wants_llm(prescore) is wants
    assert gate.is_high_priority(prescore) is high


def moving(detection: Detection, vx: float, vy: float = 0.0) -> Detection:
    return detection.model_copy(update={"velocity": (vx, vy)})


# A car (box 0..200 px, ground point x=100) and a pedestrian 400 px further on (x 600..633,
# ground point 616.7): reach 100 + 16.7 px, gap 400 px. Not near: only motion can group them.
STILL_PERSON = moving(person(600), 0.0)


@pytest.mark.parametrize(
    ("car_velocity", "level", "ttc"),
    [
        (400.0, RiskLevel.HIGH, 1.0),  # closing at 400 px/s: TTC 1.0 s, a serious conflict
        (160.0, RiskLevel.MEDIUM, 2.5),  # TTC 2.5 s, a potential one
        (100.0, None, 4.0),  # TTC 4 s: not converging yet, no group
        (-200.0, None, None),  # driving away
    ],
)
def test_time_to_collision_groups_and_scores(car_velocity: float, level: RiskLevel | None,
                                             ttc: float | None) -> None:
    detections = (moving(car(0), car_velocity), STILL_PERSON)
    groups = build_groups(detections)
    if level is None:
        assert groups == ()
        return
    (group,) = groups
    assert group.members == (0, 1)
    assert group.rules_verdict.risk_level is level
    assert group.pairs[0].ttc_s == pytest.approx(ttc, abs=0.01)
    assert group.pairs[0].unit == "px"
    assert f"time to collision {ttc:.1f} s" in group.rules_verdict.reason


def test_calibrated_camera_measures_in_metres() -> None:
    # 10 px to the metre everywhere (a plain scale), so TTC is the same in seconds.
    square = [(0, 0), (1000, 0), (1000, 1000), (0, 1000)]
    plane = GroundPlane(square, [(x / 10, y / 10) for x, y in square])
    (group,) = build_groups((moving(car(0), 400.0), STILL_PERSON), plane)
    pair = group.pairs[0]
    assert pair.unit == "m"
    assert pair.distance == pytest.approx(51.667, abs=0.01)
    assert pair.closing_speed == pytest.approx(40.0, abs=0.01)
    assert pair.ttc_s == pytest.approx(1.0, abs=0.01)
    car_speed, person_speed = (d.speed_mps for d in with_speeds((moving(car(0), 400.0), STILL_PERSON), plane))
    assert (car_speed, person_speed) == (40.0, 0.0)
