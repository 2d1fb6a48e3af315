"""A track's motion on the ground plane: the measured velocity (a pedestrian's
least-squares fit, a vehicle's Kalman filter) and the stationary state (the fit's, for
every class).

The plane is a plain scale, 1 px = 5 cm (20 px a metre, no perspective), so a trail in
metres is written here and handed to `estimate` in pixels. Tracks are built directly as
the tracker keeps them: a trail of (time, x px, y px) ground points and the motion state
(moving, anchor, heading) that `estimate` moves on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.kinematics import Vector
from trafficrisk.workers.motion import (
    MAX_STALE_S,
    MOVING_SPEED,
    START_DISTANCE,
    STATIONARY_SPEED,
    Motion,
    estimate,
    fit_motion,
)
from trafficrisk.workers.tracking import TRAIL_S, Track

PLANE = GroundPlane(np.diag([0.05, 0.05, 1.0]))
PX_PER_M = 20.0

Path = Sequence[tuple[float, float, float]]  # (t, x m, y m)


def track(
    path: Path,
    moving: bool = False,
    anchor: Vector | None = None,
    heading: Vector | None = None,
) -> Track:
    """A car's track whose trail is the path (metres), its anchor given in metres too."""
    trail = tuple((t, x * PX_PER_M, y * PX_PER_M) for t, x, y in path)
    t, u, v = trail[-1] if trail else (0.0, 0.0, 0.0)
    return Track(
        track_id=1,
        label="car",
        box=(u - 45, v - 30, u + 45, v),
        seen_at=t,
        trail=trail,
        moving=moving,
        anchor=None if anchor is None else (anchor[0] * PX_PER_M, anchor[1] * PX_PER_M),
        heading=heading,
    )


def follow(path: Path) -> list[tuple[float, Motion]]:
    """The path frame by frame, as the tracker would: each frame adds its ground point to the
    trail (its last TRAIL_S seconds) and moves the motion state on."""
    state = track(path[:1])
    seen = []
    for i, (t, _, _) in enumerate(path):
        fresh = track([p for p in path[: i + 1] if p[0] >= t - TRAIL_S])
        motion, state = estimate(replace(state, trail=fresh.trail, box=fresh.box, seen_at=t), PLANE, at=t)
        seen.append((t, motion))
    return seen


def sampled(
    fps: float, start: float, end: float, x: Callable[[float], float]
) -> list[tuple[float, float, float]]:
    """(t, x(t), 0) at `fps` from start to end; times as k / fps, exact at whole seconds."""
    ks = range(round(start * fps), round(end * fps) + 1)
    return [(k / fps, float(x(k / fps)), 0.0) for k in ks]


def approx(value: Vector | None) -> object:
    return None if value is None else pytest.approx(value)


def parked_jittering() -> list[tuple[float, float, float]]:
    """A parked car at (10 m, 5 m) whose box's bottom centre jitters by up to 3 px either way."""
    rng = np.random.default_rng(7)
    noise = rng.uniform(-3, 3, size=(26, 2)) / PX_PER_M
    return [(k / 5, 10 + dx, 5 + dy) for k, (dx, dy) in enumerate(noise)]  # 5 s at 5 fps


def jumping() -> list[tuple[float, float, float]]:
    """Standing at x = 0 at 10 fps, but one box (at 1.5 s) lands a metre off."""
    return [(k / 10, 1.0 if k == 15 else 0.0, 0.0) for k in range(31)]


@pytest.mark.parametrize(
    ("path", "starts_at"),
    [
        # +-0.15 m of jitter: its fitted speed may pass MOVING_SPEED, but the mean of its last
        # three points never gets START_DISTANCE (0.8 m) from where it stood
        (parked_jittering(), None),
        # at rest until 2 s, then 2 m/s² (x = (t - 2)²). It is past MOVING_SPEED from 2.5 s (at
        # 0.25 m), but the mean of its last three points first reaches 0.8 m at 3.0 s:
        #   2.9 s: (0.49 + 0.64 + 0.81) / 3 = 0.647;   3.0 s: (0.64 + 0.81 + 1.00) / 3 = 0.817
        (sampled(10, 0, 4, lambda t: max(t - 2, 0) ** 2), 3.0),
        # creeping on at 0.5 m/s: 2 m from where it stood, but never past MOVING_SPEED
        (sampled(10, 0, 4, lambda t: 0.5 * t), None),
        # one displaced box: a leap in speed, but the mean of three points moves 0.33 m at most
        (jumping(), None),
    ],
)
def test_leaving_rest_takes_speed_and_distance(path: Path, starts_at: float | None) -> None:
    seen = follow(path)
    moving = [t for t, motion in seen if motion.moving]
    assert (moving[0] if moving else None) == (None if starts_at is None else pytest.approx(starts_at))
    assert moving == [t for t, _ in seen if starts_at is not None and t >= starts_at - 1e-9]
    for _, motion in seen:
        if not motion.moving:
            assert motion.velocity == (0.0, 0.0)  # stationary: no velocity at all
    if starts_at is not None:
        _, first = next((t, m) for t, m in seen if m.moving)
        # 2 m/s² for 1 s: the filter, a second after it left rest, measures 1.86
        assert first.speed == pytest.approx(2.0, abs=0.2)
        assert first.velocity == pytest.approx((first.speed, 0.0))
        assert first.heading == pytest.approx((1.0, 0.0))


def test_a_jittering_parked_car_stands_where_it_is() -> None:
    path = parked_jittering()
    for t, motion in follow(path):
        assert not motion.moving and motion.velocity == (0.0, 0.0) and motion.heading is None
        # its position is the mean of its last second of points: within the 0.15 m jitter
        assert motion.position == pytest.approx((10.0, 5.0), abs=0.15), t
    # the parabola's slope at the newest of six jittered points is noisy: some frames measure
    # more than MOVING_SPEED (1.17 m/s with this seed), and only START_DISTANCE keeps it parked
    assert max(m.speed for _, m in follow(path)) > MOVING_SPEED


def steady(speed: float) -> list[tuple[float, float, float]]:
    """A second at `speed` m/s east from x = 0 at 10 fps: it ends at x = speed m."""
    return sampled(10, 0, 1, lambda t: speed * t)


@pytest.mark.parametrize(
    ("before", "anchor", "heading", "speed", "moving", "heading_after"),
    [
        (True, None, (0, 1), 3.0, True, (1, 0)),  # fast: the heading follows the velocity
        (True, None, (0, 1), 1.0, True, (0, 1)),  # below HEADING_SPEED: the old heading is kept
        (True, None, None, 0.7, True, (1, 0)),  # between the speeds: still moving; first heading
        (True, None, (1, 0), 0.4, False, (1, 0)),  # below STATIONARY_SPEED: it stops
        (False, (-2, 0), None, 0.7, False, None),  # between the speeds: still stationary
        (False, (-2, 0), None, 1.2, True, (1, 0)),  # past MOVING_SPEED, 3 m from its anchor
        # past MOVING_SPEED, but the mean of its last three points (1.2 * 0.9 = 1.08 m) is
        # 0.12 m from where it stood (1.2 m): no start
        (False, (1.2, 0), None, 1.2, False, None),
        (False, None, None, 1.2, True, (1, 0)),  # no anchor: from its first point, 1.08 m
    ],
)
def test_hysteresis_between_the_two_speeds(
    before: bool,
    anchor: Vector | None,
    heading: Vector | None,
    speed: float,
    moving: bool,
    heading_after: Vector | None,
) -> None:
    assert STATIONARY_SPEED < 0.7 < MOVING_SPEED < 1.2 and START_DISTANCE < 1.08  # what the rows need
    motion, after = estimate(track(steady(speed), before, anchor, heading), PLANE, at=1.0)
    assert (motion.moving, after.moving) == (moving, moving)
    # the measured speed, moving or not: the filter's, within 0.2 % on a steady path
    assert motion.speed == pytest.approx(speed, rel=0.002)
    assert motion.velocity == (pytest.approx((speed, 0.0), rel=0.002) if moving else (0.0, 0.0))
    assert (motion.heading, after.heading) == (approx(heading_after), approx(heading_after))
    if moving:
        assert after.anchor is None
        assert motion.position == pytest.approx((speed, 0.0), abs=0.001)  # at its newest point
    else:
        # where it stands: kept, or (stopping, or never anchored) its newest point
        assert after.anchor == ((anchor[0] * PX_PER_M, 0.0) if anchor else (speed * PX_PER_M, 0.0))
        assert motion.position == pytest.approx((speed * 0.5, 0.0))  # the mean of the second


def braking(fps: float) -> list[tuple[float, float, float]]:
    """20 m/s east until t = 0, then braking at 5 m/s² to 15 m/s at t = 1: x = 20 t - 2.5 t²."""
    return sampled(fps, -1, 1, lambda t: 20 * t - 2.5 * max(t, 0) ** 2)


@pytest.mark.parametrize("fps", [10, 5, 4])
def test_the_least_squares_fit_follows_a_curve(fps: float) -> None:
    # the last second (from t = 0: only the braking) holds 11, 6 or 5 points: a parabola,
    # whose slope at t = 1 is the true 20 - 5 = 15 m/s, and its value x(1) = 17.5
    window = np.array([(t, x, y) for t, x, y in braking(fps) if t >= 0])
    position, velocity = fit_motion(window[:, 0], window[:, 1:], at=1.0)
    assert velocity == pytest.approx((15.0, 0.0))
    assert position == pytest.approx((17.5, 0.0))
    # what a straight line through the same second gives: 17.5 m/s whatever the rate
    assert np.polyfit(window[:, 0], window[:, 1], 1)[0] == pytest.approx(17.5)


@pytest.mark.parametrize(
    ("path", "within"),
    [
        # the filter, at t = 1 (true: 15 m/s at x = 17.5): 15.37 at 10 fps, 15.56 at 5, 15.67
        # at 3; a straight line through the last second would be 2.5 m/s too fast
        (braking(10), 0.4),
        (braking(5), 0.6),
        (braking(3), 0.7),
        # every third frame of 10 fps dropped: the gaps only widen its steps (15.50)
        ([p for i, p in enumerate(braking(10)) if i % 3 != 1], 0.6),
    ],
)
def test_a_braking_car_is_followed_by_the_filter(path: Path, within: float) -> None:
    motion, _ = estimate(track(path, moving=True, heading=(1, 0)), PLANE, at=1.0)
    assert motion.velocity == pytest.approx((15.0, 0.0), abs=within)
    assert motion.position == pytest.approx((17.5, 0.0), abs=0.15)


@pytest.mark.parametrize(
    ("path", "before", "at", "moving", "x"),
    [
        (steady(3.0), True, 1.0, True, 3.0),  # fresh
        # no point for 0.3 s: moved on in a straight line, 3 + 3 * 0.3
        (steady(3.0), True, 1.3, True, 3.9),
        (steady(3.0), True, 1.0 + MAX_STALE_S, True, 4.5),  # the oldest still measured
        (steady(3.0), True, 1.6, False, math.nan),  # past MAX_STALE_S: no position
        # no fresh point: the state is kept even when the trail says otherwise
        (steady(0.0), True, 1.2, True, 0.0),  # moving, though its trail stands still
        (steady(3.0), False, 1.2, False, 1.5),  # stationary, though its trail moves (x: the mean)
        ([], True, 1.0, False, math.nan),  # no trail at all
    ],
)
def test_without_a_fresh_point_the_state_is_kept(
    path: Path, before: bool, at: float, moving: bool, x: float
) -> None:
    given = track(path, moving=before, heading=(1, 0))
    motion, after = estimate(given, PLANE, at=at)
    assert motion.moving is moving
    assert motion.heading == (1, 0)
    if math.isnan(x):
        assert math.isnan(motion.position[0]) and math.isnan(motion.position[1])
        assert motion.velocity == (0.0, 0.0)
        assert after is given  # nothing to move on
    else:
        assert motion.position == pytest.approx((x, 0.0), abs=0.005)
        assert after.moving is before
