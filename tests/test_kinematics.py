"""The ground plane and the surrogate safety measures of footprints, on hand-computed cases.

The calibration maps known image points to known metres, in perspective; bad calibrations
are refused. Road users are rectangles on the ground (a car 4.5 x 1.8 m, a person 0.5 x
0.5 m): their time to collision, gap, closing speed, DRAC and observed post-encroachment
time are checked against values worked out by hand in the comments.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from trafficrisk.workers.ground_plane import CalibrationError, GroundPlane, plane_for
from trafficrisk.workers.kinematics import (
    PET_STEP_S,
    Footprint,
    Trail,
    Vector,
    closing_speed,
    drac,
    gap,
    heading_angle,
    placed,
    post_encroachment_time,
    time_to_collision,
)

Points = list[tuple[float, float]]

# A plain scale: 10 px a metre, image y down is ground y up.
RECTANGLE = [(0, 0), (100, 0), (100, 50), (0, 50)]
RECTANGLE_M = [(0, 0), (10, 0), (10, 5), (0, 5)]
# A road seen in perspective: 4 m wide; its near edge is 100 px wide at row 100, its far edge,
# 20 m away, 20 px wide at row 0. By hand (its edges meet at (50, -25): the horizon is row -25):
#   x = (5u + 2v - 200) / (v + 25),   y = 5 (100 - v) / (v + 25)
# so across a row one pixel is 5 / (v + 25) m, and down a column 625 / (v + 25)² m.
TRAPEZOID = [(0, 100), (100, 100), (60, 0), (40, 0)]
TRAPEZOID_M = [(0, 0), (4, 0), (4, 20), (0, 20)]


def road() -> GroundPlane:
    return GroundPlane.from_points(TRAPEZOID, TRAPEZOID_M)


# --- the ground plane ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "ground", "point", "metres"),
    [
        (RECTANGLE, RECTANGLE_M, (0, 0), (0, 0)),
        (RECTANGLE, RECTANGLE_M, (100, 50), (10, 5)),
        (RECTANGLE, RECTANGLE_M, (50, 25), (5, 2.5)),  # a scale: the middle maps to the middle
        (TRAPEZOID, TRAPEZOID_M, (60, 0), (4, 20)),  # the four points themselves
        (TRAPEZOID, TRAPEZOID_M, (40, 0), (0, 20)),
        (TRAPEZOID, TRAPEZOID_M, (100, 100), (4, 0)),
        (TRAPEZOID, TRAPEZOID_M, (50, 37), (2, 5 * 63 / 62)),  # the centre line stays at x = 2
        (TRAPEZOID, TRAPEZOID_M, (50, 50), (2, 10 / 3)),  # half-way up the image: 1/6 of the way
        (TRAPEZOID, TRAPEZOID_M, (20, 50), (0, 10 / 3)),  # (100 + 100 - 200) / 75 = 0: the left edge
    ],
)
def test_known_points_map_to_known_metres(
    image: Points, ground: Points, point: Vector, metres: Vector
) -> None:
    plane = GroundPlane.from_points(image, ground)
    assert plane.to_ground(point) == pytest.approx(metres, abs=1e-4)
    assert plane.to_image(metres) == pytest.approx(point, abs=1e-3)  # and back
    assert not plane.approximate


@pytest.mark.parametrize(
    ("row", "across", "down"),
    [
        (100, 5 / 125, 625 / 125**2),  # near: 0.04 m a pixel either way
        (50, 5 / 75, 625 / 75**2),
        (0, 5 / 25, 625 / 25**2),  # far: 0.2 m across, 1 m down the column
    ],
)
def test_perspective_makes_far_pixels_worth_more_metres(row: float, across: float, down: float) -> None:
    plane = road()
    assert plane.metres_per_pixel((50, row)) == pytest.approx(across, rel=1e-3)
    # a pixel up the column, measured over +-0.1 px: the derivative 625 / (v + 25)²
    near, far = plane.to_ground((50, row + 0.1))[1], plane.to_ground((50, row - 0.1))[1]
    assert (far - near) / 0.2 == pytest.approx(down, rel=1e-3)


@pytest.mark.parametrize(
    ("points", "finite"),
    [
        ([(50, 0), (50, -20)], [True, True]),  # below the horizon (row -25): on the ground
        ([(50, -25), (50, -40), (0, -1000)], [False, False, False]),  # at and beyond it: NaN
    ],
)
def test_points_at_or_beyond_the_horizon_have_no_ground(points: Points, finite: list[bool]) -> None:
    mapped = road().to_ground_many(np.array(points, dtype=float))
    assert np.isfinite(mapped).all(axis=1).tolist() == finite


def test_to_ground_refuses_a_point_on_the_horizon() -> None:
    with pytest.raises(CalibrationError, match="maps to the horizon"):
        road().to_ground((50, -30))


@pytest.mark.parametrize(
    ("image", "ground", "point", "away"),
    [
        (TRAPEZOID, TRAPEZOID_M, (50, 50), (0.0, 1.0)),  # up the image is further down the road
        (RECTANGLE, RECTANGLE_M, (50, 25), (0.0, -1.0)),  # here ground y grows down the image
        (TRAPEZOID, TRAPEZOID_M, (50, -24.5), (0.0, 1.0)),  # the pixel above is beyond the horizon: fallback
    ],
)
def test_away_from_camera_is_up_the_image(image: Points, ground: Points, point: Vector, away: Vector) -> None:
    assert GroundPlane.from_points(image, ground).away_from_camera(point) == pytest.approx(away, abs=1e-9)


@pytest.mark.parametrize(
    ("image", "ground", "message"),
    [
        ([(0, 0), (1, 1), (2, 2), (0, 5)], RECTANGLE_M, "image points: three of the four points lie on one"),
        (RECTANGLE, [(0, 0), (0, 1), (0, 2), (3, 3)], "ground points: three of the four points lie on one"),
        (RECTANGLE, [(0, 0), (1, 0), (1, 0), (0, 1)], "ground points: three of the four"),  # a repeated point
        (RECTANGLE[:3], RECTANGLE_M, "image points: need four"),
        ([*RECTANGLE, (5, 5)], RECTANGLE_M, "image points: need four"),
        (RECTANGLE, [(0, 0), (1, 0), (1, float("nan")), (0, 1)], "ground points: need four"),
    ],
)
def test_unusable_calibrations_are_refused(image: Points, ground: Points, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        GroundPlane.from_points(image, ground)
    # a camera's configured calibration that is unusable gives no plane (the scale is fitted instead)
    assert plane_for(tuple(map(tuple, image)), tuple(map(tuple, ground))) is None


# --- footprints --------------------------------------------------------------------------------


def car(x: float, y: float = 0.0, heading: Vector = (1.0, 0.0)) -> Footprint:
    return Footprint((x, y), heading, 4.5, 1.8)


def person(x: float, y: float) -> Footprint:
    return Footprint((x, y), (0.0, 1.0), 0.5, 0.5)


def test_footprint_corners() -> None:
    assert car(10, 5).corners() == pytest.approx(
        np.array([[12.25, 5.9], [7.75, 5.9], [7.75, 4.1], [12.25, 4.1]])
    )
    # turned to face north the length runs along y
    assert Footprint((0, 0), (0, 1), 4, 2).corners() == pytest.approx(
        np.array([[-1, 2], [-1, -2], [1, -2], [1, 2]])
    )


@pytest.mark.parametrize(
    ("away", "heading", "centre"),
    [
        ((0, 1), (1, 0), (0, 10.9)),  # side-on: its depth is its width, 1.8 m; half of it further away
        ((0, 1), (0, 1), (0, 12.25)),  # driving away: its depth is its length, 4.5 m
        ((0, 1), (0, -1), (0, 12.25)),  # driving towards the camera: the same
        ((0, 1), (0, 0), (0, 10.9)),  # no heading: east, side-on
        # at 45 degrees: depth (4.5 + 1.8) / sqrt 2 = 4.4548, the centre 2.2274 further
        ((0, 1), (1, 1), (0, 10 + 6.3 / 2 / math.sqrt(2))),
        # a line of sight at (0.6, 0.8), heading east: depth 4.5 * 0.6 + 1.8 * 0.8 = 4.14, half 2.07
        ((0.6, 0.8), (1, 0), (0.6 * 2.07, 10 + 0.8 * 2.07)),
    ],
)
def test_placed_shifts_the_centre_half_its_depth_along_the_line_of_sight(
    away: Vector, heading: Vector, centre: Vector
) -> None:
    footprint = placed((0.0, 10.0), away, heading, 4.5, 1.8)
    assert footprint.centre == pytest.approx(centre)
    assert (footprint.length, footprint.width) == (4.5, 1.8)
    assert math.hypot(*footprint.heading) == pytest.approx(1.0)
    # its nearest corner to the camera is level with the box's ground point along the line of sight
    nearest = min(float(x * away[0] + y * away[1]) for x, y in footprint.corners())
    assert nearest == pytest.approx(10.0 * away[1])


# --- time to collision, gap, closing speed, DRAC -----------------------------------------------

# (a, va, b, vb) -> ttc, gap, closing speed, drac
HEAD_ON = (car(0), (10, 0), car(30, heading=(-1, 0)), (-10, 0))
REAR_END = (car(0), (12, 0), car(14.5), (8, 0))
# A person walking north at 1.5 m/s across the path of a car going east at 10 m/s.
# The car's front (x = 2.25 + 10 t) reaches the person's near side, x = 19.75, at t = 1.75 and
# its rear leaves the far side (x = -2.25 + 10 t = 20.25) at t = 2.25. The car's lane is y in
# [-0.9, 0.9]; the person's front edge is at y0 + 0.25 + 1.5 t.
CROSSING_HIT = (car(0), (10, 0), person(20, -2), (0, 1.5))  # in the lane from t = 0.567: hit at 1.75
CROSSING_MISS = (car(0), (10, 0), person(20, -5), (0, 1.5))  # in the lane at t = 2.567: the car has gone
# Its gap: dx = 19.75 - 2.25, dy = -0.9 - (-1.75); closing (17.5 * 10 + 0.85 * 1.5) / gap = 10.06.
GAP_HIT = math.hypot(17.5, 0.85)
CLOSING_HIT = (17.5 * 10 + 0.85 * 1.5) / GAP_HIT
# A car going east meets one going north side-on: a's front (2.25 + 10 t) reaches b's side
# (14.1) at t = 1.185, when b (its front at -11.75 + 10 t) is already in a's lane. The gap
# between a's front-right corner and b's front-left: dx = 14.1 - 2.25, dy = -11.75 + 0.9.
SIDE_ON = (car(0), (10, 0), car(15, -14, (0, 1)), (0, 10))
GAP_SIDE = math.hypot(11.85, 10.85)
CLOSING_SIDE = (11.85 * 10 + 10.85 * 10) / GAP_SIDE
# A parked car; a person walking past its side 0.5 m away (centre y = 0.9 + 0.5 + 0.25).
WALKING_PAST = (car(0), (0, 0), person(-10, 1.65), (1.4, 0))


@pytest.mark.parametrize(
    ("pair", "ttc", "distance", "closing", "deceleration"),
    [
        (HEAD_ON, 25.5 / 20, 25.5, 20.0, 20**2 / (2 * 25.5)),  # gap 30 - 4.5, closing 10 + 10 m/s
        (REAR_END, 10 / 4, 10.0, 4.0, 4**2 / (2 * 10)),  # gap 14.5 - 4.5, closing 12 - 8: DRAC 0.8
        # the same but barely closing: 10 m at 0.5 m/s is 20 s, beyond the 10 s horizon
        ((car(0), (8.5, 0), car(14.5), (8, 0)), None, 10.0, 0.5, None),
        ((car(0), (9, 0), car(13.5), (8, 0)), 9.0, 9.0, 1.0, 1 / 18),  # 9 m at 1 m/s: inside the horizon
        # collision courses that are not head-on: the gap shrinks at (dx vx + dy vy) / gap
        (CROSSING_HIT, 1.75, GAP_HIT, CLOSING_HIT, CLOSING_HIT**2 / (2 * GAP_HIT)),
        (CROSSING_MISS, None, math.hypot(17.5, 3.85), None, None),
        (SIDE_ON, 1.185, GAP_SIDE, CLOSING_SIDE, CLOSING_SIDE**2 / (2 * GAP_SIDE)),
        (WALKING_PAST, None, math.hypot(7.5, 0.5), None, None),  # passes 0.5 m from the parked car
        ((car(0), (0, 0), car(10), (0, 0)), None, 5.5, 0.0, None),  # a stationary pair
        ((car(0), (5, 3), car(10), (5, 3)), None, 5.5, 0.0, None),  # moving together: no relative motion
        ((car(0), (-10, 0), car(10), (10, 0)), None, 5.5, -20.0, None),  # moving apart
        ((car(0), (10, 0), car(10, 3), (-10, 0)), None, math.hypot(5.5, 1.2), None, None),  # pass 1.2 m apart
    ],
)
def test_pair_measures(
    pair: tuple[Footprint, Vector, Footprint, Vector],
    ttc: float | None,
    distance: float | None,
    closing: float | None,
    deceleration: float | None,
) -> None:
    a, va, b, vb = pair
    assert time_to_collision(a, va, b, vb) == (None if ttc is None else pytest.approx(ttc, abs=1e-6))
    assert time_to_collision(b, vb, a, va) == (None if ttc is None else pytest.approx(ttc, abs=1e-6))
    if distance is not None:
        assert gap(a, b) == pytest.approx(distance)
    if closing is not None:
        # a finite difference over 0.05 s: exact for a straight gap, close for a turning one
        assert closing_speed(a, va, b, vb) == pytest.approx(closing, rel=1e-3)
    assert drac(a, va, b, vb) == (None if deceleration is None else pytest.approx(deceleration, rel=1e-3))


def test_a_pedestrian_walking_past_a_parked_car_never_comes_closer_than_half_a_metre() -> None:
    a, va, b, vb = WALKING_PAST
    for t in np.arange(0.0, 15.0, 0.5):  # from 10 m behind the car to 10 m past it
        walked = Footprint((b.centre[0] + vb[0] * t, b.centre[1]), b.heading, b.length, b.width)
        assert gap(a, walked) >= 0.5 - 1e-9
        assert time_to_collision(a, va, walked, vb) is None
    # alongside (centre x = 0, at t = 7.14 s) the gap is exactly the 0.5 m
    assert gap(a, person(0, 1.65)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("pair", "ttc"),
    [
        ((car(0), (1, 0), car(4), (0, 0)), 0.0),  # overlapping by 0.5 m and driving further in
        ((car(0), (0, 0), car(4, 1), (-1, -1)), 0.0),  # the other drives into it
        ((car(0), (-1, 0), car(4), (0, 0)), None),  # overlapping but backing out: parting
        ((car(0), (0, 0), car(4), (3, 0)), None),  # the other one drives off
        ((car(0), (0, 0), car(4), (0, 0)), None),  # overlapping, standing still
        ((car(0), (2, 0), car(4), (2, 0)), None),  # overlapping, moving together
    ],
)
def test_overlapping_footprints(pair: tuple[Footprint, Vector, Footprint, Vector], ttc: float | None) -> None:
    a, va, b, vb = pair
    assert gap(a, b) == 0.0
    assert time_to_collision(a, va, b, vb) == ttc
    assert drac(a, va, b, vb) is None  # no gap left to brake in


@pytest.mark.parametrize(
    ("a", "b", "degrees"),
    [
        ((1, 0), (0, 1), 90.0),
        ((1, 0), (-1, 0), 180.0),
        ((1, 1), (2, 2), 0.0),  # the length does not matter
        ((1, 0), (1, math.sqrt(3)), 60.0),
        ((0, 0), (0, 1), 90.0),  # no heading counts as east
    ],
)
def test_heading_angle(a: Vector, b: Vector, degrees: float) -> None:
    assert heading_angle(a, b) == pytest.approx(degrees, abs=1e-5)  # acos near 1 is imprecise


# --- observed post-encroachment time -------------------------------------------------------------


def trail(
    times: np.ndarray, x: np.ndarray, y: np.ndarray, heading: Vector, size: tuple[float, float]
) -> Trail:
    return Trail(
        times=np.asarray(times, dtype=float),
        centres=np.stack([np.broadcast_to(x, times.shape), np.broadcast_to(y, times.shape)], axis=1),
        headings=np.tile(np.array(heading, dtype=float), (len(times), 1)),
        length=size[0],
        width=size[1],
    )


# A car going east at 10 m/s along y = 0, sampled at 5 fps from t = 0 to 4 s: its centre is at
# x = 10 t - 20, so its rear (10 t - 22.25) leaves the column x in [-0.25, 0.25] at t = 2.25.
CAR_TIMES = np.arange(0.0, 4.0001, 0.2)
CAR_TRAIL = trail(CAR_TIMES, 10 * CAR_TIMES - 20, np.zeros(1), (1, 0), (4.5, 1.8))


def walker(x: float) -> Trail:
    """A person walking north at 1.5 m/s along the column x, from t = 2 to 5 s at 5 fps: its
    front edge (centre + 0.25) reaches the car's lane (y = -0.9) at t = 3.25."""
    times = np.arange(2.0, 5.0001, 0.2)
    return trail(times, np.full(1, x), -1.15 + 1.5 * (times - 3.25), (0, 1), (0.5, 0.5))


@pytest.mark.parametrize(
    ("pedestrian", "b_since", "pet", "entered", "where"),
    [
        # the whole path: it steps into the car's lane at 3.25, 1 s after the car's rear left
        # (2.25). Both are seen at the steps just inside: the car at 2.24 (x from 0.15), the person
        # at 3.28 (y up to -0.855): they share x in [0.15, 0.25], y in [-0.9, -0.855]
        (walker(0.0), 2.0, 1.0, 3.25, (0.2, -0.8775)),
        # judged from 3.5 s on (it is in the lane then): 3.5 - 2.25. The first step is 3.52, the
        # person's y in [-0.995, -0.495]: they share y in [-0.9, -0.495]
        (walker(0.0), 3.5, 1.25, 3.5, (0.2, -0.6975)),
        # from 4.8 s on it has crossed the lane (its back edge at y = 0.925): nothing new
        (walker(0.0), 4.8, None, None, None),
        # after the newest sample: nothing new either
        (walker(0.0), 5.5, None, None, None),
        # along x = 30 it never meets the car's path (the car's front ends at x = 22.25)
        (walker(30.0), 2.0, None, None, None),
    ],
)
def test_observed_post_encroachment_time(
    pedestrian: Trail, b_since: float, pet: float | None, entered: float | None, where: Vector | None
) -> None:
    # the car's newest samples (from 3.8 s) are far past the crossing: from the car's side nothing
    found = post_encroachment_time(CAR_TRAIL, pedestrian, a_since=3.8, b_since=b_since)
    if pet is None:
        assert found is None
        return
    assert found is not None
    # paths are resampled every PET_STEP_S (0.04 s) back from each trail's newest sample: the
    # times found are the steps just inside the events, up to a step off each
    assert found.pet_s == pytest.approx(pet, abs=2 * PET_STEP_S)
    assert found.first == 0  # the car (a) passed first
    assert found.left_at == pytest.approx(2.25, abs=PET_STEP_S)
    assert found.entered_at == pytest.approx(entered, abs=PET_STEP_S)
    assert found.pet_s == pytest.approx(found.entered_at - found.left_at)
    # where: the middle of the corner the car's rear left and the person's front reached
    assert found.where == pytest.approx(where, abs=0.01)


STANDING_TIMES = np.arange(0.0, 4.0001, 0.2)
CAR_TRAIL_TO_2_2 = trail(CAR_TIMES[:12], 10 * CAR_TIMES[:12] - 20, np.zeros(1), (1, 0), (4.5, 1.8))


@pytest.mark.parametrize(
    ("first", "pet"),
    [
        # the car drove on: at the person's entry (3.25) it is 10 m clear
        (CAR_TRAIL, 1.0),
        # last seen at 2.4 s (gone from view), its rear 1.5 m clear of the person's column
        (trail(CAR_TIMES[:13], 10 * CAR_TIMES[:13] - 20, np.zeros(1), (1, 0), (4.5, 1.8)), 1.0),
        # last seen at 2.2 s, its rear still at the column's edge (-0.25), then out of view:
        # driving on at 10 m/s it left (1.08 s: its last sample, touching, to the person's
        # entry); not known to move, it stands there still, and nothing was left
        (replace(CAR_TRAIL_TO_2_2, onward=(10.0, 0.0)), 1.1),
        (CAR_TRAIL_TO_2_2, None),
        # standing with its front at x = -0.1 or -0.45 (a box jittering by 0.35 m): its front
        # reached into the person's column in every other frame, but it never left; at the
        # person's entry it is at most 0.2 m away
        (
            trail(STANDING_TIMES, np.where(np.arange(21) % 2, -2.35, -2.7), np.zeros(1), (1, 0), (4.5, 1.8)),
            None,
        ),
        # stopped across the column at 1 s and hidden from 2 s on (behind a bus, say): where it
        # was last seen is where the person steps, so it has not left
        (
            trail(CAR_TIMES[:11], np.minimum(10 * CAR_TIMES[:11] - 10, 0.0), np.zeros(1), (1, 0), (4.5, 1.8)),
            None,
        ),
    ],
)
def test_the_first_road_user_must_have_left(first: Trail, pet: float | None) -> None:
    found = post_encroachment_time(first, walker(0.0), a_since=math.inf, b_since=2.0)
    assert (found and round(found.pet_s, 1)) == pet


def test_post_encroachment_time_names_which_passed_first() -> None:
    # the same paths given the other way round: the first one through is now b
    found = post_encroachment_time(walker(0.0), CAR_TRAIL, a_since=2.0, b_since=3.8)
    assert found is not None
    assert (found.first, found.pet_s) == (1, pytest.approx(1.0, abs=2 * PET_STEP_S))
