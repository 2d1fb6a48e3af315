"""A vehicle's position and velocity from its ground points: a constant-acceleration
Kalman filter.

Vehicles brake and pull away. A least-squares line through the last second lags half
of it (a car braking at 5 m/s² seems 2.5 m/s too fast, so its TTC too short), and a
parabola over a fixed window straddles the moment the braking began; both want evenly
spaced frames, and backpressure drops frames exactly when the fleet is busy. The filter
takes each point at its own time (a dropped frame only widens a step) and weighs it by
how far the detector's box jitter reaches on the ground there: the jitter scales with
the box (measured for the SSD against the scenario truth, matched boxes of vehicles in
view: the bottom centre's column wanders by 6 % of the box's width, its bottom row by
3 % of its height, one standard deviation), and far from the camera, along the line of
sight, one pixel is tens of centimetres.

Model, per ground axis: position, velocity and acceleration, the acceleration driven by
white-noise jerk of spectral density `JERK_DENSITY` (the Wiener-process acceleration
model: Bar-Shalom, Li & Kirubarajan, *Estimation with Applications to Tracking and
Navigation*, 2001, section 6.2.3). Its discrete process noise over a step dt is
q [[dt⁵/20, dt⁴/8, dt³/6], [dt⁴/8, dt³/3, dt²/2], [dt³/6, dt²/2, dt]]. A density of
10 m²/s⁵ lets the acceleration wander by about 3 m/s² in a second: from cruising to hard
braking (AASHTO's comfortable limit is 3.4 m/s²) within one to two seconds.

Stateless: the filter runs over the trail each frame (its last `WINDOW_S`, about 15
points at 5 fps), so nothing but the trail is kept between frames. Pedestrians keep the
least-squares fit (`motion.fit_motion`): they walk at a near-constant speed, and a
filter that follows accelerations follows their leg swing too.
"""

from __future__ import annotations

import numpy as np

from trafficrisk.workers.ground_plane import GroundPlane

JERK_DENSITY = 10.0  # m²/s⁵
# The box's bottom centre, one standard deviation: column, of the box's width; row, of its height.
JITTER_ACROSS, JITTER_DOWN = 0.06, 0.03
WINDOW_S = 3.0
# Before the first point the filter knows nothing of the motion: a prior that any road
# speed and a hard braking are possible.
PRIOR_SPEED_MPS = 20.0
PRIOR_ACCELERATION_MPS2 = 5.0

_I2 = np.eye(2)
_H = np.hstack([_I2, np.zeros((2, 4))])  # the filter sees positions only


def ground_noise(plane: GroundPlane, image_points: np.ndarray, box_size: tuple[float, float]) -> np.ndarray:
    """Each image point's ground covariance (N x 2 x 2), for the jitter of a box of this
    size (width, height in pixels): J S Jᵀ, with J the image-to-ground Jacobian at the
    point (by central differences) and S the jitter's image covariance."""
    points = np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
    dx, dy = np.array([0.5, 0.0]), np.array([0.0, 0.5])
    jacobian = np.stack(
        [
            plane.to_ground_many(points + dx) - plane.to_ground_many(points - dx),
            plane.to_ground_many(points + dy) - plane.to_ground_many(points - dy),
        ],
        axis=2,
    )  # N x 2 (ground axis) x 2 (image axis)
    jitter = np.diag([(JITTER_ACROSS * box_size[0]) ** 2, (JITTER_DOWN * box_size[1]) ** 2])
    return jacobian @ jitter @ jacobian.transpose(0, 2, 1)


def filter_motion(
    times: np.ndarray, points: np.ndarray, noise: np.ndarray
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Filtered position and velocity at the last time of ground points (N x 2) taken at
    `times`, each with its covariance (N x 2 x 2)."""
    if len(times) == 0 or points.shape != (len(times), 2) or noise.shape != (len(times), 2, 2):
        raise ValueError(f"filter_motion: {len(times)} times, points {points.shape}, noise {noise.shape}")
    keep = times >= times[-1] - WINDOW_S
    times, points, noise = times[keep], points[keep], noise[keep]
    state = np.concatenate([points[0], np.zeros(4)])
    covariance = np.zeros((6, 6))
    covariance[:2, :2] = noise[0]
    covariance[2:4, 2:4] = PRIOR_SPEED_MPS**2 * _I2
    covariance[4:, 4:] = PRIOR_ACCELERATION_MPS2**2 * _I2
    for k in range(1, len(times)):
        transition, process = _step(float(times[k] - times[k - 1]))
        state = transition @ state
        covariance = transition @ covariance @ transition.T + process
        innovation = points[k] - state[:2]
        gain = covariance[:, :2] @ np.linalg.inv(covariance[:2, :2] + noise[k])
        state = state + gain @ innovation
        covariance = covariance - gain @ _H @ covariance
    return (float(state[0]), float(state[1])), (float(state[2]), float(state[3]))


def _step(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """The transition and process noise over dt, for the state (x, y, vx, vy, ax, ay)."""
    transition = np.array([[1.0, dt, dt * dt / 2], [0.0, 1.0, dt], [0.0, 0.0, 1.0]])
    process = JERK_DENSITY * np.array(
        [
            [dt**5 / 20, dt**4 / 8, dt**3 / 6],
            [dt**4 / 8, dt**3 / 3, dt**2 / 2],
            [dt**3 / 6, dt**2 / 2, dt],
        ]
    )
    return np.kron(transition, _I2), np.kron(process, _I2)
