"""Which road users interact: nearby or converging ones, linked transitively, form a group."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from trafficrisk.messages import Detection

# Two road users are near when their ground points are closer than this many
# (mean) box heights: box height is a rough stand-in for distance from the camera.
DEFAULT_PROXIMITY = 1.2


def normalized_gap(a: Detection, b: Detection) -> float:
    """Edge-to-edge distance on the ground between two road users, in mean box heights.

    Horizontally the gap between the boxes (0 when they overlap); in depth the
    difference of their bottom edges, where they touch the ground.
    """
    dx = max(0.0, max(a.box.x1, b.box.x1) - min(a.box.x2, b.box.x2))
    dy = abs(a.box.y2 - b.box.y2)
    scale = max((a.box.height + b.box.height) / 2, 1.0)
    return math.hypot(dx, dy) / scale


def find_groups(detections: Sequence[Detection], proximity: float = DEFAULT_PROXIMITY,
                converging: Iterable[tuple[int, int]] = ()) -> list[list[int]]:
    """Indices of detections that form groups of two or more, largest group first.

    Pairs in `converging` (say, a short time-to-collision) are linked however far apart.
    """
    parent = list(range(len(detections)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(detections)):
        for j in range(i + 1, len(detections)):
            if normalized_gap(detections[i], detections[j]) < proximity:
                parent[root(j)] = root(i)
    for i, j in converging:
        parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in range(len(detections)):
        members.setdefault(root(i), []).append(i)
    groups = [m for m in members.values() if len(m) >= 2]
    return sorted(groups, key=lambda m: (-len(m), m[0]))
