"""Zones and counting lines: geometry on hand-drawn cases, and on a scenario's tracks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trafficrisk.messages import Box, Camera, Detection, Zone
from trafficrisk.scenario import SCENARIOS, frames
from trafficrisk.workers.tracking import TrackerState, track_frame
from trafficrisk.workers.zones import crossing_side, crossings, inside, zones_of

SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]
L_SHAPE = [(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)]  # concave


@pytest.mark.parametrize(
    ("point", "polygon", "expected"),
    [
        ((5, 5), SQUARE, True),
        ((15, 5), SQUARE, False),
        ((10, 5), SQUARE, True),  # on an edge
        ((0, 0), SQUARE, True),  # a corner
        ((2, 8), L_SHAPE, True),
        ((8, 8), L_SHAPE, False),  # in the notch of the L
    ],
)
def test_inside(point: tuple[float, float], polygon: list[tuple[float, float]], expected: bool) -> None:
    assert inside(point, polygon) is expected


HORIZONTAL = [(0, 100), (200, 100)]  # drawn left to right: its left is up in the image


@pytest.mark.parametrize(
    ("start", "end", "line", "side"),
    [
        ((50, 80), (50, 120), HORIZONTAL, "in"),  # down the image, from the line's left
        ((50, 120), (50, 80), HORIZONTAL, "out"),
        ((50, 80), (50, 95), HORIZONTAL, None),  # not reaching it
        ((250, 80), (250, 120), HORIZONTAL, None),  # past its end
        ((50, 100), (50, 120), HORIZONTAL, None),  # starting on it
        ((0, 80), (200, 80), HORIZONTAL, None),  # along it
        ((150, 50), (150, 150), [(0, 100), (100, 100), (100, 0)], None),  # misses both legs of the polyline
        ((50, 50), (150, 50), [(0, 100), (100, 100), (100, 0)], "in"),  # cuts its second leg, drawn upwards
    ],
)
def test_crossing_side(start: tuple[float, float], end: tuple[float, float],
                       line: list[tuple[float, float]], side: str | None) -> None:
    assert crossing_side(start, end, line) == side


def person_at(x: float, y: float, label: str = "person") -> Detection:
    return Detection(label=label, confidence=0.9, box=Box(x1=x - 10, y1=y - 50, x2=x + 10, y2=y))


CROSSWALK = Zone(name="crosswalk", points=((0, 0), (100, 0), (100, 100), (0, 100)), classes=("person",))
JUNCTION = Zone(name="junction", points=((50, 50), (300, 50), (300, 300), (50, 300)))


@pytest.mark.parametrize(
    ("detection", "zones"),
    [
        (person_at(20, 80), ("crosswalk",)),
        (person_at(80, 80), ("crosswalk", "junction")),
        (person_at(80, 80, "car"), ("junction",)),  # the crosswalk watches people only
        (person_at(200, 400), ()),
    ],
)
def test_zone_membership_by_ground_point_and_class(detection: Detection, zones: tuple[str, ...]) -> None:
    assert zones_of(detection, [CROSSWALK, JUNCTION]) == zones


@pytest.mark.parametrize(
    ("zone", "error"),
    [
        ({"name": "a", "points": [[0, 0], [1, 1]]}, "a polygon needs at least 3 points, got 2"),
        ({"name": "a", "kind": "line", "points": [[0, 0]]}, "a line needs at least 2 points, got 1"),
        ({"name": "a", "kind": "circle", "points": [[0, 0], [1, 1]]}, "Input should be 'polygon' or 'line'"),
        ({"name": "<b>", "points": [[0, 0], [1, 0], [1, 1]]}, "String should match pattern"),
    ],
)
def test_bad_zones_are_refused(zone: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Camera.model_validate({"id": "c", "url": "x.mp4", "zones": [zone]})


def test_zone_names_are_unique() -> None:
    square = [[0, 0], [1, 0], [1, 1]]
    with pytest.raises(ValidationError, match="zone names must be unique"):
        Camera.model_validate({"id": "c", "url": "x.mp4", "zones": [{"name": "a", "points": square}] * 2})


def test_the_road_users_of_a_scenario_cross_a_counting_line_once_each() -> None:
    # Across the road and the grass beside it, above the bystanders: the car driving along
    # the road and the pedestrian walking the same way on the grass cross it, left to right.
    line = Zone(name="gate", kind="line", points=((300, 150), (300, 420)))
    state, crossed = TrackerState(), []
    for seq, (t, _, boxes) in enumerate(frames(SCENARIOS["parallel"]), start=1):
        detections = [Detection(label=b["label"], confidence=0.9, box=Box(x1=b["box"][0], y1=b["box"][1],
                                                                          x2=b["box"][2], y2=b["box"][3]))
                      for b in boxes]
        tracked = track_frame(state, detections, seq, t)
        state = tracked.state or state
        crossed += crossings(tracked.detections, tracked.previous, [line])
    assert sorted((c.line, c.label, c.direction) for c in crossed) == [("gate", "car", "out"),
                                                                        ("gate", "person", "out")]
