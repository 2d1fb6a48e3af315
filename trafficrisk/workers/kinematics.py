"""Surrogate safety measures of two road users on the ground plane, in metres and seconds.

Each road user is a footprint: a rectangle of its class's size (workers/road_users.py)
at its position, turned along its heading. See docs/conflicts.md for the definitions:

- time to collision (TTC): the time until the two footprints touch if both keep their
  velocity; 0 when they overlap and still close in; None when they never touch.
- gap and closing speed: the distance between the footprints, and how fast it shrinks.
- deceleration rate to avoid a crash (DRAC): closing speed² / (2 · gap), on a
  collision course only.
- post-encroachment time (PET), observed: from the two footprints' actual paths, the
  time between the first road user leaving the area both pass through and the second
  entering it, taken when the second arrives.

Each answers None where it has no finite value, never infinity, so that it fits in JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint, Point, Polygon

Vector = tuple[float, float]

# Beyond this a time to collision is no conflict of any severity: not worth reporting.
TTC_HORIZON_S = 10.0
# Step of the closing speed's finite difference; the paths are straight, so any will do.
_CLOSING_DT_S = 0.05
# Paths are resampled this finely to time an observed PET between sampled frames.
PET_STEP_S = 0.04
# The first road user of a PET has left the shared ground when it is this far from the
# second as the second arrives: a few tenths of a metre is what box jitter moves a
# standing road user's footprint on the ground.
LEFT_MARGIN_M = 0.5


@dataclass(frozen=True)
class Footprint:
    """A road user's rectangle on the ground: centre, unit heading, length along it, width."""

    centre: Vector
    heading: Vector
    length: float
    width: float

    def corners(self) -> np.ndarray:
        hx, hy = self.heading
        along = np.array([hx, hy]) * self.length / 2
        across = np.array([-hy, hx]) * self.width / 2
        c = np.array(self.centre)
        return np.array([c + along + across, c - along + across, c - along - across, c + along - across])

    def polygon(self) -> Polygon:
        return Polygon(self.corners())


def unit(vector: Vector, fallback: Vector = (1.0, 0.0)) -> Vector:
    norm = math.hypot(*vector)
    return (vector[0] / norm, vector[1] / norm) if norm > 1e-9 else fallback


def placed(ground_point: Vector, away: Vector, heading: Vector, length: float, width: float) -> Footprint:
    """The footprint whose nearest edge to the camera lies at the box's ground point.

    The bottom centre of a box is where the road user meets the ground nearest the
    camera, not its middle: the centre lies half its depth further along the line of
    sight (`away`, a unit vector), the depth being what its length and width span
    along that line at this heading.
    """
    h = unit(heading)
    depth = length * abs(h[0] * away[0] + h[1] * away[1]) + width * abs(-h[1] * away[0] + h[0] * away[1])
    centre = (ground_point[0] + away[0] * depth / 2, ground_point[1] + away[1] * depth / 2)
    return Footprint(centre, h, length, width)


def _moved(footprint: Footprint, velocity: Vector, t: float) -> Footprint:
    x, y = footprint.centre
    return Footprint(
        (x + velocity[0] * t, y + velocity[1] * t), footprint.heading, footprint.length, footprint.width
    )


def gap(a: Footprint, b: Footprint) -> float:
    """The distance between the two footprints: 0 when they touch or overlap."""
    return float(a.polygon().distance(b.polygon()))


def closing_speed(a: Footprint, va: Vector, b: Footprint, vb: Vector) -> float:
    """How fast the gap between the footprints shrinks (negative while it grows)."""
    later = gap(_moved(a, va, _CLOSING_DT_S), _moved(b, vb, _CLOSING_DT_S))
    return (gap(a, b) - later) / _CLOSING_DT_S


def _deepening(difference: Polygon, w: Vector) -> bool:
    """Overlapping footprints that overlap more a moment later: the point `w dt` lies
    deeper inside A - B than the origin does."""
    later = Point(w[0] * _CLOSING_DT_S, w[1] * _CLOSING_DT_S)
    if not difference.contains(later):
        return False
    return bool(difference.exterior.distance(later) > difference.exterior.distance(Point(0.0, 0.0)))


def _difference(a: Footprint, b: Footprint) -> Polygon:
    """The Minkowski difference A - B: the footprints touch exactly when it holds the origin."""
    corners = (a.corners()[:, None, :] - b.corners()[None, :, :]).reshape(-1, 2)
    hull = MultiPoint(corners).convex_hull
    return hull if isinstance(hull, Polygon) else Polygon()


def time_to_collision(
    a: Footprint, va: Vector, b: Footprint, vb: Vector, horizon_s: float = TTC_HORIZON_S
) -> float | None:
    """The smallest t >= 0 at which the footprints, each at its constant velocity, touch.

    They touch at t when the origin is in (A - B) + (va - vb) t, that is when the ray
    from the origin along vb - va enters A - B. Overlapping footprints give 0 while
    they still close in (None once they part, or with no relative motion).
    """
    difference = _difference(a, b)
    if difference.is_empty:
        return None
    w = (vb[0] - va[0], vb[1] - va[1])
    speed = math.hypot(*w)
    origin = Point(0.0, 0.0)
    if difference.intersects(origin):
        return 0.0 if speed > 1e-9 and _deepening(difference, w) else None
    if speed < 1e-9:
        return None
    reach = speed * horizon_s
    ray = LineString([(0.0, 0.0), (w[0] * horizon_s, w[1] * horizon_s)])
    hit = ray.intersection(difference)
    if hit.is_empty:
        return None
    entry = min(math.hypot(x, y) for x, y in _coords(hit))
    return min(entry, reach) / speed


def _coords(geometry: shapely.Geometry) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in shapely.get_coordinates(geometry)]


def drac(a: Footprint, va: Vector, b: Footprint, vb: Vector) -> float | None:
    """closing speed² / (2 · gap) on a collision course (a finite TTC) with a gap left."""
    if time_to_collision(a, va, b, vb) is None:
        return None
    distance, closing = gap(a, b), closing_speed(a, va, b, vb)
    if distance <= 1e-6 or closing <= 0:
        return None
    return closing * closing / (2 * distance)


@dataclass(frozen=True)
class Trail:
    """Where a road user's footprint was: sample times (ascending) with centres and headings."""

    times: np.ndarray  # N
    centres: np.ndarray  # N x 2
    headings: np.ndarray  # N x 2, unit
    length: float
    width: float
    onward: Vector = (0.0, 0.0)  # m/s: how it went on after its last sample (unseen since)

    def last_seen(self, at: float) -> shapely.Polygon:
        """Its footprint at a time after its last sample: moved on at `onward` from there."""
        later = at - float(self.times[-1])
        centre = self.centres[-1] + np.asarray(self.onward) * later
        h = self.headings[-1]
        return Footprint(
            (float(centre[0]), float(centre[1])), (float(h[0]), float(h[1])), self.length, self.width
        ).polygon()

    def resampled(self, since: float, step: float = PET_STEP_S) -> tuple[np.ndarray, np.ndarray]:
        """Sample times from `since` (or the first sample) to the last, and the footprints
        there as shapely polygons, positions linearly interpolated between samples."""
        start = max(float(self.times[0]), since)
        if start > float(self.times[-1]):
            return np.zeros(0), np.array([], dtype=object)
        times = np.arange(float(self.times[-1]), start - 1e-9, -step)[::-1]
        if len(times) == 0:
            return times, np.array([], dtype=object)
        x = np.interp(times, self.times, self.centres[:, 0])
        y = np.interp(times, self.times, self.centres[:, 1])
        nearest = np.clip(np.searchsorted(self.times, times), 0, len(self.times) - 1)
        polygons = [
            Footprint((float(cx), float(cy)), (float(h[0]), float(h[1])), self.length, self.width).polygon()
            for cx, cy, h in zip(x, y, self.headings[nearest], strict=True)
        ]
        return times, np.array(polygons, dtype=object)


@dataclass(frozen=True)
class Encroachment:
    """An observed PET: the first road user left the shared area at `left_at`, the second
    entered it at `entered_at`; `first` is 0 or 1 (which of the two trails passed first)."""

    pet_s: float
    first: int
    left_at: float
    entered_at: float
    where: Vector  # the middle of the area both occupied, in metres


def post_encroachment_time(a: Trail, b: Trail, a_since: float, b_since: float) -> Encroachment | None:
    """The PET of two paths, when one of them has entered ground the other occupied in
    the part of its path after its `_since` time (its sample before the newest, so that
    a road user hidden for a while is judged over the whole stretch it was hidden for):
    None otherwise.

    PET is the shortest time between one footprint being somewhere and the other
    being there too: the second's entry time less the first's exit time. The first must
    have left: when the second enters, the first is at least `LEFT_MARGIN_M` clear of it,
    where it was then or, not seen since, where its last motion took it (a car that drove
    out of view went on; one that stood, hidden behind the second, has not left).
    Nearer, the two are side by side, not one after the other (the time to collision and
    the gap speak for that), and a standing road user's jittering box leaves nothing
    behind for a passer-by to "enter".
    """
    found = None
    for first, earlier, later, since in ((0, a, b, b_since), (1, b, a, a_since)):
        new_times, new_polygons = later.resampled(since)
        old_times, old_polygons = earlier.resampled(-math.inf)
        if len(new_times) == 0 or len(old_times) == 0:
            continue
        touching = shapely.intersects(new_polygons[:, None], old_polygons[None, :])
        lag = new_times[:, None] - old_times[None, :]
        left = _has_left(earlier, old_times, old_polygons, new_times, new_polygons)
        candidates = np.where(touching & (lag >= 0) & left[:, None], lag, np.inf)
        if not np.isfinite(candidates.min()):
            continue
        i, j = np.unravel_index(np.argmin(candidates), candidates.shape)
        if found is None or candidates[i, j] < found.pet_s:
            area = new_polygons[i].intersection(old_polygons[j]).centroid
            found = Encroachment(
                float(candidates[i, j]),
                first,
                float(old_times[j]),
                float(new_times[i]),
                (float(area.x), float(area.y)),
            )
    return found


def _has_left(
    first: Trail,
    old_times: np.ndarray,
    old_polygons: np.ndarray,
    new_times: np.ndarray,
    new_polygons: np.ndarray,
) -> np.ndarray:
    """Per new sample: whether the first road user is then `LEFT_MARGIN_M` clear of the
    second, where it was then or where its last motion took it."""
    then = np.clip(np.searchsorted(old_times, new_times - 1e-9), 0, len(old_times) - 1)
    where = np.array(
        [
            first.last_seen(float(t)) if t > old_times[-1] + 1e-9 else old_polygons[k]
            for t, k in zip(new_times, then, strict=True)
        ],
        dtype=object,
    )
    return np.asarray(shapely.distance(new_polygons, where) >= LEFT_MARGIN_M)


def heading_angle(a: Vector, b: Vector) -> float:
    """The angle between two headings, 0 to 180 degrees."""
    ua, ub = unit(a), unit(b)
    cosine = max(-1.0, min(1.0, ua[0] * ub[0] + ua[1] * ub[1]))
    return math.degrees(math.acos(cosine))
