"""A camera's ground-plane calibration: four image points matched to four ground points.

The homography from image pixels to metres on the road lets speeds and distances be
measured in m/s and m rather than in pixels, which shrink with distance from the camera.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import cv2
import numpy as np

Point = tuple[float, float]

log = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """Four points that do not define a usable homography."""


def _check_points(points: Sequence[Sequence[float]], what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (4, 2) or not np.all(np.isfinite(array)):
        raise CalibrationError(f"{what}: need four [x, y] points, got {points!r}")
    for i in range(4):  # any three on one line make the mapping degenerate
        others = np.delete(array, i, axis=0)
        a, b = others[1] - others[0], others[2] - others[0]
        if abs(a[0] * b[1] - a[1] * b[0]) < 1e-6 * max(1.0, float(np.abs(array).max()) ** 2):
            raise CalibrationError(f"{what}: three of the four points lie on one line")
    return array


class GroundPlane:
    """Maps image points (pixels) to ground points (metres) through a homography."""

    def __init__(self, image_points: Sequence[Sequence[float]],
                 ground_points: Sequence[Sequence[float]]) -> None:
        source = _check_points(image_points, "image points")
        target = _check_points(ground_points, "ground points")
        self.matrix = cv2.getPerspectiveTransform(source.astype(np.float32), target.astype(np.float32))

    def to_ground(self, point: Point) -> Point:
        x, y, w = self.matrix @ np.array([point[0], point[1], 1.0])
        if abs(w) < 1e-12:
            raise CalibrationError(f"image point {point} maps to the horizon")
        return float(x / w), float(y / w)



@functools.lru_cache(maxsize=1024)
def plane_for(image_points: tuple[Point, ...], ground_points: tuple[Point, ...]) -> GroundPlane | None:
    """A camera's ground plane, made once; None (logged once) when its points are unusable."""
    try:
        return GroundPlane(image_points, ground_points)
    except CalibrationError as error:
        log.warning("calibration ignored, measuring in pixels: %s", error)
        return None
