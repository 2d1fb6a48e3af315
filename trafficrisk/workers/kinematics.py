"""Surrogate safety measures for a pair of road users moving at constant velocity.

Positions are ground points (the bottom centre of a box), in metres on a calibrated
camera and in pixels otherwise; velocities in the same unit per second. Each
measure answers None where it has no finite value (moving apart, parallel paths,
paths that never meet), never infinity, so that it fits in JSON.

- time to collision (TTC): when the two, keeping their velocities, come within
  `reach` of each other (the sum of their half sizes); 0 when they already are.
- post-encroachment time (PET): for crossing paths, the time between the first
  leaving the crossing point and the second reaching it (constant velocity: the
  difference of their arrival times there).
- deceleration rate to avoid a crash (DRAC): on a collision course, the deceleration
  that brings their closing speed to zero before the gap between them closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Vector = tuple[float, float]

# Below this a speed or a cross product counts as zero: pixels and metres alike.
EPSILON = 1e-9


@dataclass(frozen=True)
class PairMeasures:
    distance: float
    closing_speed: float  # positive while the gap shrinks
    ttc_s: float | None
    pet_s: float | None
    drac: float | None


def _sub(a: Vector, b: Vector) -> Vector:
    return a[0] - b[0], a[1] - b[1]


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1]


def _cross(a: Vector, b: Vector) -> float:
    return a[0] * b[1] - a[1] * b[0]


def time_to_collision(p1: Vector, v1: Vector, p2: Vector, v2: Vector, reach: float) -> float | None:
    """Smallest t >= 0 with |(p2 + v2 t) - (p1 + v1 t)| <= reach, or None if never."""
    dp, dv = _sub(p2, p1), _sub(v2, v1)
    c = _dot(dp, dp) - reach * reach
    if c <= 0:
        return 0.0
    a, b = _dot(dv, dv), 2 * _dot(dp, dv)
    if a < EPSILON or b >= 0:  # no relative motion, or moving apart
        return None
    discriminant = b * b - 4 * a * c
    if discriminant < 0:  # they pass each other further apart than `reach`
        return None
    return (-b - math.sqrt(discriminant)) / (2 * a)


def post_encroachment_time(p1: Vector, v1: Vector, p2: Vector, v2: Vector) -> float | None:
    """|t1 - t2| where t1, t2 are when each reaches the crossing of their paths, both ahead."""
    cross = _cross(v1, v2)
    if abs(cross) < EPSILON:  # parallel paths (or one standing still) never cross
        return None
    dp = _sub(p2, p1)
    t1 = _cross(dp, v2) / cross
    t2 = _cross(dp, v1) / cross
    if t1 < 0 or t2 < 0:  # the crossing point is behind one of them
        return None
    return abs(t1 - t2)


def closing_speed(p1: Vector, v1: Vector, p2: Vector, v2: Vector) -> float:
    """How fast the distance between them shrinks (negative while it grows)."""
    dp, dv = _sub(p2, p1), _sub(v2, v1)
    distance = math.hypot(*dp)
    if distance < EPSILON:
        return math.hypot(*dv)
    return -_dot(dp, dv) / distance


def deceleration_to_avoid(p1: Vector, v1: Vector, p2: Vector, v2: Vector, reach: float) -> float | None:
    """closing speed² / (2 · gap), the gap being the distance less `reach`; None unless
    they are on a collision course (a finite TTC) and not yet within reach."""
    ttc = time_to_collision(p1, v1, p2, v2, reach)
    gap = math.hypot(*_sub(p2, p1)) - reach
    if ttc is None or gap <= EPSILON:
        return None
    speed = closing_speed(p1, v1, p2, v2)
    return speed * speed / (2 * gap)


def measure_pair(p1: Vector, v1: Vector, p2: Vector, v2: Vector, reach: float) -> PairMeasures:
    return PairMeasures(
        distance=math.hypot(*_sub(p2, p1)),
        closing_speed=closing_speed(p1, v1, p2, v2),
        ttc_s=time_to_collision(p1, v1, p2, v2, reach),
        pet_s=post_encroachment_time(p1, v1, p2, v2),
        drac=deceleration_to_avoid(p1, v1, p2, v2, reach),
    )
