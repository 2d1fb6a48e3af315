"""Pair measures of a frame's tracked road users, in metres where the camera is calibrated."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from trafficrisk.messages import Detection, PairMeasure
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.kinematics import Vector, measure_pair
from trafficrisk.workers.tracking import ground_point


def _on_ground(detection: Detection, plane: GroundPlane | None) -> tuple[Vector, Vector, float]:
    """Ground point, its velocity per second and the footprint's half width, in the plane's unit."""
    box = detection.box
    point = ground_point((box.x1, box.y1, box.x2, box.y2))
    velocity = detection.velocity or (0.0, 0.0)
    if plane is None:
        return point, velocity, box.width / 2
    ahead = plane.to_ground((point[0] + velocity[0], point[1] + velocity[1]))  # where it is in 1 s
    here = plane.to_ground(point)
    left, right = plane.to_ground((box.x1, box.y2)), plane.to_ground((box.x2, box.y2))
    half_width = ((right[0] - left[0]) ** 2 + (right[1] - left[1]) ** 2) ** 0.5 / 2
    return here, (ahead[0] - here[0], ahead[1] - here[1]), half_width


def with_speeds(detections: tuple[Detection, ...], plane: GroundPlane) -> tuple[Detection, ...]:
    """Each tracked road user's ground speed in m/s, through the camera's calibration."""
    speeds = []
    for detection in detections:
        if detection.velocity is None:
            speeds.append(detection)
            continue
        _, (vx, vy), _ = _on_ground(detection, plane)
        speeds.append(detection.model_copy(update={"speed_mps": round((vx * vx + vy * vy) ** 0.5, 2)}))
    return tuple(speeds)


def measure_pairs(detections: Sequence[Detection], plane: GroundPlane | None) -> list[PairMeasure]:
    """Every pair in which someone moves (a known velocity); a frame has a handful of road users."""
    unit = "px" if plane is None else "m"
    grounded = [_on_ground(d, plane) for d in detections]
    pairs = []
    for i, j in combinations(range(len(detections)), 2):
        if detections[i].velocity is None and detections[j].velocity is None:
            continue
        (p1, v1, r1), (p2, v2, r2) = grounded[i], grounded[j]
        m = measure_pair(p1, v1, p2, v2, r1 + r2)
        pairs.append(PairMeasure(first=i, second=j, unit=unit, distance=round(m.distance, 3),
                                 closing_speed=round(m.closing_speed, 3), ttc_s=_rounded(m.ttc_s),
                                 pet_s=_rounded(m.pet_s), drac=_rounded(m.drac)))
    return pairs


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
