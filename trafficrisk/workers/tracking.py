"""Per-camera tracks: stable ids and velocities for road users across sampled frames.

The state is a small JSON document (kept in Redis by the store, so that every detect
worker sees it). Frames are applied in capture order: a frame newer than the state
moves it on; a frame that arrives late (its sequence number is not above the
state's) is only matched against the tracks, moved back to its capture time, and
leaves the state as it was, so a late frame never corrupts a track.

Matching is greedy on the overlap of each detection with where each track is
predicted to be (its box moved by its velocity), falling back to centre distance
for small or fast road users that no longer overlap at a low sample rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from trafficrisk.messages import Box, Detection

# A track not seen for this long is gone.
MAX_AGE_S = 3.0
# A detection may match a track whose predicted centre is within this many box heights.
MAX_CENTRE_DISTANCE = 0.75
MIN_IOU = 0.1
# Weight of the newest measurement in the velocity estimate (exponential smoothing).
VELOCITY_SMOOTHING = 0.6

Corners = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Track:
    track_id: int
    label: str
    box: Corners
    seen_at: float
    velocity: tuple[float, float] = (0.0, 0.0)  # of the ground point, px/s
    hits: int = 1

    def predicted(self, at: float) -> Corners:
        dx, dy = (v * (at - self.seen_at) for v in self.velocity)
        x1, y1, x2, y2 = self.box
        return x1 + dx, y1 + dy, x2 + dx, y2 + dy


@dataclass(frozen=True)
class TrackerState:
    seq: int = 0
    next_id: int = 1
    tracks: tuple[Track, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> TrackerState:
        if not data:
            return cls()
        tracks = tuple(Track(**{**t, "box": tuple(t["box"]), "velocity": tuple(t["velocity"])})
                       for t in data["tracks"])
        return cls(seq=data["seq"], next_id=data["next_id"], tracks=tracks)


@dataclass(frozen=True)
class TrackedFrame:
    detections: tuple[Detection, ...]  # with track_id and velocity where known
    state: TrackerState | None  # the new state, or None for a late frame (state unchanged)
    # Ground points of the followed tracks before this frame, by track id (empty when late).
    previous: dict[int, Point] = field(default_factory=dict)


def _corners(box: Box) -> Corners:
    return box.x1, box.y1, box.x2, box.y2


def iou(a: Corners, b: Corners) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def ground_point(box: Corners) -> Point:
    """Where a road user touches the ground: the bottom centre of its box."""
    return (box[0] + box[2]) / 2, box[3]


def _centre_distance(a: Corners, b: Corners) -> float:
    """Distance between box centres, in mean box heights."""
    scale = max(((a[3] - a[1]) + (b[3] - b[1])) / 2, 1.0)
    return math.dist(((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)) / scale


# Detectors waver between neighbouring classes of one road user (a pickup is a `car` in
# one frame, a `truck` in the next); a track follows its family, and takes the newest label.
FAMILIES = {"car": "vehicle", "truck": "vehicle", "bus": "vehicle",
            "bicycle": "two-wheeler", "motorcycle": "two-wheeler", "person": "person"}


def same_family(a: str, b: str) -> bool:
    return FAMILIES.get(a, a) == FAMILIES.get(b, b)


def match(tracks: Sequence[Track], detections: Sequence[Detection], at: float) -> dict[int, int]:
    """Detection index -> track index, greedily best first; one detection per track."""
    candidates = []
    for t, track in enumerate(tracks):
        predicted = track.predicted(at)
        for d, detection in enumerate(detections):
            if not same_family(detection.label, track.label):
                continue
            box = _corners(detection.box)
            overlap, distance = iou(predicted, box), _centre_distance(predicted, box)
            if overlap >= MIN_IOU or distance <= MAX_CENTRE_DISTANCE:
                candidates.append((-overlap, distance, d, t))
    matches: dict[int, int] = {}
    used: set[int] = set()
    for _, _, d, t in sorted(candidates):
        if d not in matches and t not in used:
            matches[d] = t
            used.add(t)
    return matches


def _followed(track: Track, detection: Detection, at: float) -> Track:
    box = _corners(detection.box)
    dt = at - track.seen_at
    if dt <= 0:
        return replace(track, box=box, label=detection.label)
    (x0, y0), (x1, y1) = ground_point(track.box), ground_point(box)
    measured = ((x1 - x0) / dt, (y1 - y0) / dt)
    weight = VELOCITY_SMOOTHING if track.hits >= 2 else 1.0
    velocity = tuple(weight * m + (1 - weight) * v for m, v in zip(measured, track.velocity, strict=True))
    return Track(track.track_id, detection.label, box, at, (velocity[0], velocity[1]), track.hits + 1)


def _annotated(detection: Detection, track: Track | None) -> Detection:
    if track is None:
        return detection
    velocity = track.velocity if track.hits >= 2 else None
    return detection.model_copy(update={"track_id": track.track_id, "velocity": velocity})


def track_frame(state: TrackerState, detections: Sequence[Detection], seq: int, at: float) -> TrackedFrame:
    """Match a frame's detections to the tracks; move the state on unless the frame is late."""
    live = [t for t in state.tracks if at - t.seen_at <= MAX_AGE_S]
    matches = match(live, detections, at)
    if seq <= state.seq:  # late: ids from the tracks as they are, nothing changes
        return TrackedFrame(tuple(_annotated(d, live[matches[i]] if i in matches else None)
                                  for i, d in enumerate(detections)), None)
    next_id = state.next_id
    followed: dict[int, Track] = {}
    previous: dict[int, Point] = {}
    annotated = []
    for i, detection in enumerate(detections):
        if i in matches:
            last = live[matches[i]]
            previous[last.track_id] = ground_point(last.box)
            track = _followed(last, detection, at)
        else:
            track = Track(next_id, detection.label, _corners(detection.box), at)
            next_id += 1
        followed[track.track_id] = track
        annotated.append(_annotated(detection, track))
    unseen = tuple(t for t in live if t.track_id not in followed)
    new_state = TrackerState(seq=seq, next_id=next_id, tracks=(*followed.values(), *unseen))
    return TrackedFrame(tuple(annotated), new_state, previous)


class TrackStore(Protocol):
    def update_tracks(self, camera_id: str, update: Callable[[Any], tuple[Any, Any]]) -> Any: ...


FrameTracker = Callable[[tuple[Detection, ...]], tuple[tuple[Detection, ...], dict[int, Point]]]


def shared_tracker(store: TrackStore, camera_id: str, seq: int, at: float) -> FrameTracker:
    """Tracks one frame's detections against the camera's state that every worker shares.

    Gives the detections with track ids and velocities, and the followed tracks'
    previous ground points (for line crossings).
    """
    def track(detections: tuple[Detection, ...]) -> tuple[tuple[Detection, ...], dict[int, Point]]:
        def update(state: Any) -> tuple[TrackedFrame, Any]:
            tracked = track_frame(TrackerState.from_json(state), detections, seq, at)
            return tracked, tracked.state.to_json() if tracked.state else None
        tracked: TrackedFrame = store.update_tracks(camera_id, update)
        return tracked.detections, tracked.previous
    return track
