"""A track's motion on the ground plane: smoothed position, velocity, heading, and
whether it moves at all.

Box corners jitter by a few pixels from frame to frame: differencing two frames makes
a parked van "move" at a metre a second. A pedestrian's velocity is instead the
least-squares slope of its ground points of about the last second, a vehicle's the
Kalman filter's of the last three (kalman.py: vehicles brake and pull away). A track is
stationary, with a velocity of zero, until the least-squares fit says it has clearly
left the place where it stood: above its class's moving speed and start distance from
that place. It stops again below its stationary speed; the gap between the two speeds
is the hysteresis that keeps a jittering parked vehicle from flickering between the
states. A pedestrian's are lower
(people walk at 1.2-1.4 m/s and step off a kerb within a second; a pedestrian is no
danger to anyone standing still or walking, so the state only decides what the
vehicles' measures take them to be doing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from trafficrisk.workers import kalman
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.kinematics import Vector, unit
from trafficrisk.workers.road_users import is_pedestrian
from trafficrisk.workers.tracking import Point, Track

VELOCITY_WINDOW_S = 1.0
# A second with too few points to tell a curve (frames dropped by backpressure, a
# detector miss, a low sample rate) reaches back for them, up to this far: a straight
# line through three points of a braking car is half a window late.
MAX_VELOCITY_WINDOW_S = 2.0
MIN_FIT_POINTS = 3
MIN_CURVE_POINTS = 5
CURVE_SIGMAS = 1.5


@dataclass(frozen=True)
class Hysteresis:
    stationary_speed: float  # m/s: below, a moving road user stops
    moving_speed: float  # m/s: above, and start_distance from where it stood, a stationary one moves
    start_distance: float  # m


VEHICLE = Hysteresis(stationary_speed=0.5, moving_speed=1.0, start_distance=0.8)
PEDESTRIAN = Hysteresis(stationary_speed=0.3, moving_speed=0.6, start_distance=0.3)
STATIONARY_SPEED, MOVING_SPEED, START_DISTANCE = (
    VEHICLE.stationary_speed,
    VEHICLE.moving_speed,
    VEHICLE.start_distance,
)
HEADING_SPEED = 1.5  # m/s: below, the heading is kept from when it went faster
# A track whose newest ground point is older than this (hidden, or cut by the image's
# edge) has no motion to measure: where it is now is a guess.
MAX_STALE_S = 0.5


@dataclass(frozen=True)
class Motion:
    position: Vector  # the smoothed ground point (bottom centre of the box), metres
    velocity: Vector  # m/s; zero while stationary
    speed: float  # the measured speed, m/s, even while stationary
    moving: bool
    heading: Vector | None  # unit, the last heading it moved in; None if never seen moving


def ground_trail(track: Track, plane: GroundPlane) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trail's times, ground points (metres) and image points, points beyond the
    horizon left out."""
    if not track.trail:
        return np.zeros(0), np.zeros((0, 2)), np.zeros((0, 2))
    trail = np.asarray(track.trail, dtype=np.float64)
    points = plane.to_ground_many(trail[:, 1:])
    keep = np.isfinite(points).all(axis=1)
    return trail[keep, 0], points[keep], trail[keep, 1:]


def fit_motion(times: np.ndarray, points: np.ndarray, at: float) -> tuple[Vector, Vector]:
    """Least-squares position and velocity at `at` of points over time (one point: at rest).

    A straight line's slope is the mean velocity of the window, half a window late: a
    car braking at 5 m/s² would seem 2.5 m/s too fast. A parabola's slope at `at` follows
    it, but amplifies the jitter of the points at the window's end: a walker at 1.2 m/s
    would seem to go at anything from 0.6 to 2.5. So the two are blended by how far the
    parabola's acceleration stands out of its noise (a weight a² / (a² + (k s)²), s its standard error, from
    `MIN_CURVE_POINTS` points on): a braking car gets the parabola, a walker the line."""
    if len(times) == 1 or np.ptp(times) < 1e-6:
        mean = points.mean(axis=0)
        return (float(mean[0]), float(mean[1])), (0.0, 0.0)
    chosen = np.polynomial.polynomial.polyfit(times - at, points, 1)  # rows: powers of (t - at)
    if len(times) >= MIN_CURVE_POINTS:
        curve = np.polynomial.polynomial.polyfit(times - at, points, 2)
        chosen = chosen + _curve_weight(times - at, points, curve) * (curve[:2] - chosen)
    return (float(chosen[0, 0]), float(chosen[0, 1])), (float(chosen[1, 0]), float(chosen[1, 1]))


def _curve_weight(dt: np.ndarray, points: np.ndarray, curve: np.ndarray) -> float:
    """How much the parabola's acceleration stands out of the noise of its fit, 0..1."""
    design = np.vander(dt, 3, increasing=True)
    dof = len(dt) - 3
    residuals = points - design @ curve
    if dof <= 0:
        return 1.0  # the curve fits exactly: nothing to tell it from
    sigma2 = float((residuals**2).sum()) / dof  # both axes
    error2 = 4 * sigma2 * np.linalg.inv(design.T @ design)[2, 2]
    acceleration2 = 4 * float(np.sum(curve[2] ** 2))
    return acceleration2 / (acceleration2 + (CURVE_SIGMAS**2) * error2 + 1e-12)


def estimate(track: Track, plane: GroundPlane, at: float) -> tuple[Motion, Track]:
    """The track's motion at `at`, and the track with its motion state moved on.

    Only a fresh ground point (one from this frame: not cut by the image's edge nor
    hidden behind someone) can change whether it moves; without one it keeps its state.
    """
    times, points, image = ground_trail(track, plane)
    if len(times) == 0 or at - times[-1] > MAX_STALE_S:
        return Motion((math.nan, math.nan), (0.0, 0.0), 0.0, False, track.heading), track
    recent = _window(times)
    # Whether it moves is the least-squares fit's to say, for every class: a road user
    # standing still has a constant velocity, which the line measures best. How a moving
    # vehicle moves is the filter's (see kalman.py; a parked one needs none, every frame).
    # Both at its newest point, moved on from there in a straight line while it is hidden
    # (a curve's end runs off).
    position, velocity = fit_motion(times[recent], points[recent], float(times[-1]))
    fresh = times[-1] >= at - 1e-6
    moving = _is_moving(track, plane, points, math.hypot(*velocity)) if fresh else track.moving
    if moving and not is_pedestrian(track.label):
        x1, y1, x2, y2 = track.box
        noise = kalman.ground_noise(plane, image, (x2 - x1, y2 - y1))
        position, velocity = kalman.filter_motion(times, points, noise)
    position = (position[0] + velocity[0] * (at - times[-1]), position[1] + velocity[1] * (at - times[-1]))
    speed = math.hypot(*velocity)
    # Slow, the direction of a fitted velocity is mostly noise: keep the last one.
    heading = (
        unit(velocity) if moving and (speed >= HEADING_SPEED or track.heading is None) else track.heading
    )
    newest = (track.trail[-1][1], track.trail[-1][2])
    anchor: Point | None = None if moving else (track.anchor if not track.moving and track.anchor else newest)
    if not moving:  # at rest: where it stands is the mean of the last second, not a line's end
        mean = points[recent].mean(axis=0)
        position = (float(mean[0]), float(mean[1]))
    motion = Motion(position, velocity if moving else (0.0, 0.0), speed, moving, heading)
    return motion, replace(track, moving=moving, anchor=anchor, heading=heading)


def _window(times: np.ndarray) -> np.ndarray:
    """Which trail points the motion is fitted to: the last second's, or the last
    `MIN_CURVE_POINTS` within `MAX_VELOCITY_WINDOW_S`, or at least the last `MIN_FIT_POINTS`."""
    latest = np.arange(len(times))[::-1]  # 0 for the newest point
    recent = times >= times[-1] - VELOCITY_WINDOW_S
    if recent.sum() < MIN_CURVE_POINTS:
        recent |= (latest < MIN_CURVE_POINTS) & (times >= times[-1] - MAX_VELOCITY_WINDOW_S)
    return recent | (latest < MIN_FIT_POINTS)


def _is_moving(track: Track, plane: GroundPlane, points: np.ndarray, speed: float) -> bool:
    """Moving on, or leaving rest: fast enough, and the mean of its last few ground points
    (one displaced box is not a move) far enough from where it stood."""
    limits = PEDESTRIAN if is_pedestrian(track.label) else VEHICLE
    if track.moving:
        return speed >= limits.stationary_speed
    if speed < limits.moving_speed or len(points) < MIN_FIT_POINTS:
        return False
    rest = plane.to_ground_many(np.array([track.anchor]))[0] if track.anchor else points[0]
    if not np.isfinite(rest).all():
        return True
    now = points[-MIN_FIT_POINTS:].mean(axis=0)
    return float(np.hypot(*(now - rest))) >= limits.start_distance
