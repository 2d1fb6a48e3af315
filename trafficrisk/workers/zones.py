"""Zones (polygons such as crosswalks) and counting lines of a camera, in image pixels.

A road user is in a zone when its ground point (the bottom centre of its box) is
inside the polygon and its class is one the zone watches. A track crosses a line
when the segment from its last ground point to its new one cuts the line; the
direction says from which side: facing along the line as drawn (first point to
last, in image coordinates, y downwards), `in` comes from the left, `out` from the
right. Only frames that move the tracks on count, so a crossing counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from trafficrisk.messages import Detection, LineCrossing, Zone

Point = tuple[float, float]


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule; a point on an edge counts as inside."""
    x, y = point
    result = False
    for (x1, y1), (x2, y2) in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        if _on_segment(point, (x1, y1), (x2, y2)):
            return True
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            result = not result
    return result


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    return (abs(_cross(a, b, p)) < 1e-9 and min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
            and min(a[1], b[1]) <= p[1] <= max(a[1], b[1]))


def crossing_side(start: Point, end: Point, line: Sequence[Point]) -> str | None:
    """`in` or `out` when the move from start to end cuts the line (a polyline), else None."""
    for a, b in pairwise(line):
        before, after = _cross(a, b, start), _cross(a, b, end)
        if before == 0 or (before > 0) == (after > 0):
            continue  # starting on the line, or staying on one side, is no crossing
        if (_cross(start, end, a) > 0) != (_cross(start, end, b) > 0):
            return "in" if before < 0 else "out"
    return None


def watches(zone: Zone, detection: Detection) -> bool:
    return not zone.classes or detection.label in zone.classes


def ground(detection: Detection) -> Point:
    return (detection.box.x1 + detection.box.x2) / 2, detection.box.y2


def zones_of(detection: Detection, zones: Sequence[Zone]) -> tuple[str, ...]:
    return tuple(z.name for z in zones
                 if z.kind == "polygon" and watches(z, detection) and inside(ground(detection), z.points))


def crossings(detections: Sequence[Detection], previous: dict[int, Point],
              zones: Sequence[Zone]) -> list[LineCrossing]:
    """Line crossings of tracks between their last ground point (`previous`) and this frame."""
    found = []
    for detection in detections:
        start = previous.get(detection.track_id) if detection.track_id is not None else None
        if start is None:
            continue
        for zone in zones:
            if zone.kind != "line" or not watches(zone, detection):
                continue
            side = crossing_side(start, ground(detection), zone.points)
            if side is not None and detection.track_id is not None:
                found.append(LineCrossing(line=zone.name, track_id=detection.track_id,
                                          label=detection.label, direction=side))
    return found
