"""The vehicles' constant-acceleration Kalman filter: its measurement noise from the box
size and the ground plane, and what it makes of paths with known motion.

Paths are in metres; the noise is given directly (0.1 m, one standard deviation, per
axis) unless a row says otherwise, so the rows test the filter, not the plane.
"""

from __future__ import annotations

import numpy as np
import pytest

from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.kalman import JITTER_ACROSS, JITTER_DOWN, WINDOW_S, filter_motion, ground_noise

SCALE = GroundPlane(np.diag([0.05, 0.05, 1.0]))  # 1 px = 5 cm, no perspective
# A camera 6.5 m up, looking down the ground's y axis: rows further up the image are
# further away, and each pixel there is worth more metres.
PERSPECTIVE = GroundPlane.from_points(
    [(284, 480), (484, 480), (334, 280), (434, 280)], [(-1.0, 5.0), (1.0, 5.0), (-1.0, 15.0), (1.0, 15.0)]
)


def noise_of(n: int, sigma: float = 0.1) -> np.ndarray:
    return np.tile(np.eye(2) * sigma**2, (n, 1, 1))


def path(times: np.ndarray, x: np.ndarray, y: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    return times, np.stack([x, np.full_like(x, y)], axis=1)


def test_the_noise_is_the_box_jitter_on_the_ground() -> None:
    # a box 100 x 50 px on the plain scale: 6 px across (0.3 m), 1.5 px down (0.075 m)
    (covariance,) = ground_noise(SCALE, np.array([(200.0, 300.0)]), (100.0, 50.0))
    across, down = JITTER_ACROSS * 100 * 0.05, JITTER_DOWN * 50 * 0.05
    assert covariance == pytest.approx(np.diag([across**2, down**2]))


def test_far_points_are_noisier() -> None:
    near, far = ground_noise(PERSPECTIVE, np.array([(384.0, 470.0), (384.0, 290.0)]), (100.0, 50.0))
    # the same pixels are worth more metres up the image, most of all along the line of sight
    assert far[0, 0] > near[0, 0] and far[1, 1] > 4 * near[1, 1]


IRREGULAR = np.array([0.0, 0.2, 0.6, 0.8, 1.4, 1.6, 2.0])
BRAKING = np.arange(0.0, 2.0001, 0.2)  # 5 fps; 20 m/s, braking at 5 m/s² from t = 1


def braking_x(t: np.ndarray) -> np.ndarray:
    return 20 * t - 2.5 * np.maximum(t - 1, 0) ** 2


@pytest.mark.parametrize(
    ("times", "x", "speed", "within"),
    [
        # one point: at rest where it is
        (np.array([1.0]), np.array([3.0]), 0.0, 1e-9),
        # steady 10 m/s at irregular times (frames dropped): the gaps only widen the steps
        (
            np.array([0.0, 0.2, 0.6, 0.8, 1.4, 1.6, 2.0]),
            10 * np.array([0.0, 0.2, 0.6, 0.8, 1.4, 1.6, 2.0]),
            10.0,
            0.05,
        ),
        # braking for the last second: 15 m/s at t = 2 (a line through it would say 17.5)
        (BRAKING, braking_x(BRAKING), 15.0, 0.7),
        # an old stretch at another speed is past WINDOW_S: 5 m/s for 4 s, then at rest
        (np.arange(0.0, 8.0001, 0.2), np.minimum(5 * np.arange(0.0, 8.0001, 0.2), 20.0), 0.0, 0.05),
    ],
)
def test_filtered_speed(times: np.ndarray, x: np.ndarray, speed: float, within: float) -> None:
    position, velocity = filter_motion(*path(times, x), noise_of(len(times)))
    assert velocity[0] == pytest.approx(speed, abs=within)
    assert velocity[1] == pytest.approx(0.0, abs=1e-6)
    assert position[0] == pytest.approx(x[-1], abs=max(within, 0.1))
    assert WINDOW_S < 4.0  # what the last row needs


def test_jitter_is_smoothed() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(0.0, 3.0001, 0.2)
    x = 8 * times + rng.normal(0, 0.1, len(times))
    _, velocity = filter_motion(*path(times, x), noise_of(len(times)))
    # two frames' difference would be off by 0.1 * sqrt(2) / 0.2 = 0.7 m/s on average
    assert velocity[0] == pytest.approx(8.0, abs=0.5)


@pytest.mark.parametrize(
    ("times", "points", "noise", "message"),
    [
        (np.zeros(0), np.zeros((0, 2)), np.zeros((0, 2, 2)), "0 times"),
        (np.zeros(2), np.zeros((3, 2)), np.zeros((2, 2, 2)), "points"),
        (np.zeros(2), np.zeros((2, 2)), np.zeros((2, 2)), "noise"),
    ],
)
def test_bad_input_is_refused(times: np.ndarray, points: np.ndarray, noise: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        filter_motion(times, points, noise)
