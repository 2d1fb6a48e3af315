"""A camera's ground plane: a homography from image pixels to metres on the road.

Every measure is taken on the ground plane, in metres and seconds: pixels shrink with
distance from the camera, so a speed or a gap in pixels means nothing. A calibrated
camera's plane comes from four image points matched to four ground points; an
uncalibrated camera's is fitted from the pedestrians it sees (`workers/scale.py`) and
is `approximate`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import cv2
import numpy as np

Point = tuple[float, float]

log = logging.getLogger(__name__)


# Larger coordinates are no pixel and no road (UTM northings stay below 1e7 m); they would
# overflow the collinearity test below (found by the API fuzz test: a 1.8e308 → a 500).
MAX_COORDINATE = 1e7


class CalibrationError(ValueError):
    """Four points that do not define a usable homography."""


def _check_points(points: Sequence[Sequence[float]], what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (4, 2) or not np.all(np.isfinite(array)):
        raise CalibrationError(f"{what}: need four [x, y] points, got {points!r}")
    if np.abs(array).max() > MAX_COORDINATE:
        raise CalibrationError(f"{what}: coordinates must be within ±{MAX_COORDINATE:g}")
    for i in range(4):  # any three on one line make the mapping degenerate
        others = np.delete(array, i, axis=0)
        a, b = others[1] - others[0], others[2] - others[0]
        if abs(a[0] * b[1] - a[1] * b[0]) < 1e-6 * max(1.0, float(np.abs(array).max()) ** 2):
            raise CalibrationError(f"{what}: three of the four points lie on one line")
    return array


class GroundPlane:
    """Maps image points (pixels) to ground points (metres) and back."""

    def __init__(self, matrix: np.ndarray, approximate: bool = False, side: float = 1.0) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.inverse = np.linalg.inv(self.matrix)
        self.approximate = approximate
        # The sign of the homogeneous w on the ground side of the horizon: beyond the
        # horizon the homography wraps round to points that are not on the ground.
        self.side = 1.0 if side >= 0 else -1.0

    @classmethod
    def from_points(
        cls, image_points: Sequence[Sequence[float]], ground_points: Sequence[Sequence[float]]
    ) -> GroundPlane:
        source = _check_points(image_points, "image points")
        target = _check_points(ground_points, "ground points")
        matrix = cv2.getPerspectiveTransform(source.astype(np.float32), target.astype(np.float32))
        side = float((matrix @ np.array([*source.mean(axis=0), 1.0]))[2])
        return cls(matrix, side=side)

    def to_ground_many(self, points: np.ndarray) -> np.ndarray:
        """N image points (N x 2) in metres; NaN for points at or beyond the horizon."""
        return _apply(self.matrix, points, self.side)

    def to_image_many(self, points: np.ndarray) -> np.ndarray:
        return _apply(self.inverse, points, 0.0)

    def to_ground(self, point: Point) -> Point:
        x, y = self.to_ground_many(np.array([point]))[0]
        if not np.isfinite(x):
            raise CalibrationError(f"image point {point} maps to the horizon")
        return float(x), float(y)

    def to_image(self, point: Point) -> Point:
        x, y = self.to_image_many(np.array([point]))[0]
        return float(x), float(y)

    def away_from_camera(self, point: Point) -> Point:
        """The unit ground direction across the image row through the point, away from the
        camera. A box's bottom row is a ground line that its road user's footprint touches
        on the near side: the footprint lies beyond it, along this direction."""
        x, y = away_from_camera(self, np.array([point]))[0]
        return float(x), float(y)

    def metres_per_pixel(self, point: Point) -> float:
        """Across the image at this point: the ground length of one pixel along the row."""
        left, right = self.to_ground_many(np.array([(point[0] - 0.5, point[1]), (point[0] + 0.5, point[1])]))
        return float(np.hypot(*(right - left)))


def away_from_camera(plane: GroundPlane, points: np.ndarray) -> np.ndarray:
    """`GroundPlane.away_from_camera` of N image points at once (N x 2); (0, 1) where the
    plane gives no direction (beyond the horizon)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    half = np.array([0.5, 0.0])
    row = plane.to_ground_many(points + half) - plane.to_ground_many(points - half)
    up = plane.to_ground_many(points - np.array([0.0, 1.0])) - plane.to_ground_many(points)
    normal = np.stack([-row[:, 1], row[:, 0]], axis=1)
    normal *= np.where((normal * up).sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    norm = np.linalg.norm(normal, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = normal / norm
    return np.where(np.isfinite(unit).all(axis=1, keepdims=True) & (norm > 0), unit, np.array([0.0, 1.0]))


def _apply(matrix: np.ndarray, points: np.ndarray, side: float) -> np.ndarray:
    """Points through a homography; NaN where w is (near) zero or, with a `side`, of the
    other sign."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    w = homogeneous[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        mapped = homogeneous[:, :2] / w
    valid = (w * side > 1e-12) if side else (np.abs(w) > 1e-12)
    return np.where(valid, mapped, np.nan)


@functools.lru_cache(maxsize=1024)
def plane_for(image_points: tuple[Point, ...], ground_points: tuple[Point, ...]) -> GroundPlane | None:
    """A camera's calibrated plane, made once; None (logged once) when its points are unusable."""
    try:
        return GroundPlane.from_points(image_points, ground_points)
    except CalibrationError as error:
        log.warning("calibration ignored, scale fitted from pedestrians instead: %s", error)
        return None
