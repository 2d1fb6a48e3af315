"""Ground-plane calibration and surrogate safety measures on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from trafficrisk.workers.ground_plane import CalibrationError, GroundPlane
from trafficrisk.workers.kinematics import (
    deceleration_to_avoid,
    measure_pair,
    post_encroachment_time,
    time_to_collision,
)

RECTANGLE = [(0, 0), (100, 0), (100, 50), (0, 50)]
RECTANGLE_M = [(0, 0), (10, 0), (10, 5), (0, 5)]
# A road seen in perspective: 4 m wide, the far edge 20 m away looks 20 px wide.
TRAPEZOID = [(0, 100), (100, 100), (60, 0), (40, 0)]
TRAPEZOID_M = [(0, 0), (4, 0), (4, 20), (0, 20)]


@pytest.mark.parametrize(
    ("image", "ground", "point", "metres"),
    [
        (RECTANGLE, RECTANGLE_M, (0, 0), (0, 0)),
        (RECTANGLE, RECTANGLE_M, (100, 50), (10, 5)),
        (RECTANGLE, RECTANGLE_M, (50, 25), (5, 2.5)),  # a scale: the middle maps to the middle
        (TRAPEZOID, TRAPEZOID_M, (60, 0), (4, 20)),  # the four points themselves
        (TRAPEZOID, TRAPEZOID_M, (40, 0), (0, 20)),
        (TRAPEZOID, TRAPEZOID_M, (100, 100), (4, 0)),
        (TRAPEZOID, TRAPEZOID_M, (50, 37), (2, None)),  # the centre line stays the centre line
    ],
)
def test_known_points_map_to_known_metres(
    image: list[tuple[float, float]], ground: list[tuple[float, float]],
    point: tuple[float, float], metres: tuple[float, float | None],
) -> None:
    x, y = GroundPlane(image, ground).to_ground(point)
    assert x == pytest.approx(metres[0], abs=1e-3)
    if metres[1] is not None:
        assert y == pytest.approx(metres[1], abs=1e-3)


def test_perspective_makes_far_pixels_worth_more_metres() -> None:
    plane = GroundPlane(TRAPEZOID, TRAPEZOID_M)
    near = plane.to_ground((50, 90))[1] - plane.to_ground((50, 100))[1]  # metres in the bottom 10 px
    far = plane.to_ground((50, 0))[1] - plane.to_ground((50, 10))[1]  # and in the top 10 px
    assert near > 0 and far > 3 * near


@pytest.mark.parametrize(
    ("image", "ground", "message"),
    [
        ([(0, 0), (1, 1), (2, 2), (0, 5)], RECTANGLE_M, "image points: three of the four points lie on one"),
        (RECTANGLE, [(0, 0), (0, 1), (0, 2), (3, 3)], "ground points: three of the four points lie on one"),
        (RECTANGLE[:3], RECTANGLE_M, "image points: need four"),
        (RECTANGLE, [(0, 0), (1, 0), (1, float("nan")), (0, 1)], "ground points: need four"),
    ],
)
def test_unusable_calibrations_are_refused(
    image: list[tuple[float, float]], ground: list[tuple[float, float]], message: str
) -> None:
    with pytest.raises(CalibrationError, match=message.replace("[", r"\[")):
        GroundPlane(image, ground)


# p1, v1, p2, v2, reach -> ttc, pet, drac
HEAD_ON = ((0, 0), (1, 0), (10, 0), (-1, 0), 2.0)
CROSSING_HIT = ((0, 0), (10, 0), (20, -4), (0, 2), 1.0)  # both reach (20, 0) at t = 2
CROSSING_MISS = ((0, 0), (10, 0), (20, -6), (0, 2), 1.0)  # car there at 2 s, pedestrian at 3 s


@pytest.mark.parametrize(
    ("pair", "ttc", "pet", "drac"),
    [
        (HEAD_ON, 4.0, None, 0.25),  # gap 8 m closing at 2 m/s; 2² / (2 · 8)
        (CROSSING_HIT, 2 - math.sqrt(416) / 208, 0.0, 104 / (2 * (math.sqrt(416) - 1))),
        (CROSSING_MISS, None, 1.0, None),  # they miss by more than the reach; PET still 1 s
        (((0, 0), (0, 0), (10, 0), (1, 0), 2.0), None, None, None),  # moving apart
        (((0, 0), (1, 0), (0, 5), (1, 0), 2.0), None, None, None),  # parallel, same speed
        (((0, 0), (1, 0), (10, 3), (-1, 0), 2.0), None, None, None),  # parallel, passing 3 m apart
        (((0, 0), (1, 0), (1, 0), (-1, 0), 2.0), 0.0, None, None),  # already within reach
        (((0, 0), (10, 0), (20, 6), (0, 2), 1.0), None, None, None),  # crossing point behind one
        (((0, 0), (0, 0), (0, 0), (0, 0), 1.0), 0.0, None, None),  # standing on the same spot
    ],
)
def test_pair_measures(pair: tuple, ttc: float | None, pet: float | None, drac: float | None) -> None:
    p1, v1, p2, v2, reach = pair
    assert time_to_collision(p1, v1, p2, v2, reach) == (None if ttc is None else pytest.approx(ttc))
    assert post_encroachment_time(p1, v1, p2, v2) == (None if pet is None else pytest.approx(pet))
    assert deceleration_to_avoid(p1, v1, p2, v2, reach) == (None if drac is None else pytest.approx(drac))


def test_measure_pair_is_the_sum_of_its_parts() -> None:
    measures = measure_pair(*HEAD_ON)
    assert measures.distance == 10
    assert measures.closing_speed == 2
    assert (measures.ttc_s, measures.pet_s, measures.drac) == (4.0, None, 0.25)
