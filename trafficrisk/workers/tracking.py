"""Per-camera tracks: stable ids and velocities for road users across sampled frames.

The state is a small JSON document (kept in Redis by the store, so that every detect
worker sees it). Frames are applied in capture order: a frame newer than the state
moves it on; a frame that arrives late (its sequence number is not above the
state's) is only matched against the tracks, moved back to its capture time, and
leaves the state as it was, so a late frame never corrupts a track.

Matching is greedy on the overlap of each detection with where each track is
predicted to be (its box moved by its image velocity), falling back to centre distance
for small or fast road users that no longer overlap at a low sample rate.

Each track keeps its trail: the image ground points (bottom centre of the box) of
its last `TRAIL_S` seconds. Speeds, headings and the stationary state are measured
from it on the ground plane (`workers/motion.py`), which also keeps their state here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trafficrisk.messages import Box, Detection
from trafficrisk.workers.road_users import same_family

# A track not seen for this long is gone.
MAX_AGE_S = 3.0
# For this long a track is also looked for where it was last seen (it may have stopped).
STOPPED_LOOK_S = 1.0
# The trail a track keeps: long enough to time a post-encroachment of a few seconds.
TRAIL_S = 5.0
# A box this close to the image's edge is cut by it.
EDGE_PX = 2.0
# A detection may match a track whose predicted centre is within this many box heights.
MAX_CENTRE_DISTANCE = 0.75
MIN_IOU = 0.1
# Weight of the newest measurement in the velocity estimate (exponential smoothing).
VELOCITY_SMOOTHING = 0.6

Corners = tuple[float, float, float, float]
Point = tuple[float, float]
TrailPoint = tuple[float, float, float]  # capture time, image ground point x, y


@dataclass(frozen=True)
class Track:
    track_id: int
    label: str
    box: Corners
    seen_at: float
    velocity: tuple[float, float] = (0.0, 0.0)  # of the ground point in the image, px/s: for matching
    hits: int = 1
    trail: tuple[TrailPoint, ...] = ()
    # Kept for workers/motion.py: moving or stationary (with hysteresis), where it came to
    # rest (an image ground point), and its last ground heading (a unit vector).
    moving: bool = False
    anchor: Point | None = None
    heading: Point | None = None
    # How often each label of its family was seen: `label` is the most frequent, so a
    # pickup the detector calls a car in most frames and a truck in some keeps one footprint.
    labels: dict[str, int] = field(default_factory=dict)
    # Its last box with its feet in view: the size to restore a box that someone in
    # front of it hides the lower part of.
    whole: Corners | None = None
    # Its box in the frame it was last seen in showed it whole: not cut by the image's
    # edge, its feet not hidden. Only then is its position measured, not restored.
    in_full_view: bool = False

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
        return cls(seq=data["seq"], next_id=data["next_id"], tracks=tuple(_track(t) for t in data["tracks"]))


def _track(data: dict[str, Any]) -> Track:
    def pair(value: Any) -> Point | None:
        return None if value is None else (value[0], value[1])

    whole = data.get("whole")
    return Track(
        **{
            **data,
            "box": tuple(data["box"]),
            "velocity": tuple(data["velocity"]),
            "trail": tuple((t, x, y) for t, x, y in data.get("trail", ())),
            "anchor": pair(data.get("anchor")),
            "heading": pair(data.get("heading")),
            "whole": tuple(whole) if whole else None,
        }
    )


@dataclass(frozen=True)
class TrackedFrame:
    detections: tuple[Detection, ...]  # with track_id where known
    state: TrackerState | None  # the new state, or None for a late frame (state unchanged)
    # Ground points of the followed tracks before this frame, by track id (empty when late).
    previous: dict[int, Point] = field(default_factory=dict)
    # The track of each detection after this frame (None when late and unmatched).
    tracks: tuple[Track | None, ...] = ()


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


def match(tracks: Sequence[Track], detections: Sequence[Detection], at: float) -> dict[int, int]:
    """Detection index -> track index, greedily best first; one detection per track."""
    candidates = []
    # Detectors waver between neighbouring classes of one road user (a pickup is a `car`
    # in one frame, a `truck` in the next): a track follows its family, with the newest label.
    # A track is looked for where it would be had it kept its velocity, and, for a
    # moment, where it was last seen: a vehicle that stopped while hidden behind another
    # is still there (later, another road user of its family may be there instead).
    for t, track in enumerate(tracks):
        places = (
            (track.predicted(at), track.box)
            if at - track.seen_at <= STOPPED_LOOK_S
            else (track.predicted(at),)
        )
        for d, detection in enumerate(detections):
            if not same_family(detection.label, track.label):
                continue
            box = _corners(detection.box)
            overlap = max(iou(place, box) for place in places)
            distance = min(_centre_distance(place, box) for place in places)
            if overlap >= MIN_IOU or distance <= MAX_CENTRE_DISTANCE:
                candidates.append((-overlap, distance, d, t))
    matches: dict[int, int] = {}
    used: set[int] = set()
    for _, _, d, t in sorted(candidates):
        if d not in matches and t not in used:
            matches[d] = t
            used.add(t)
    return matches


def _followed(
    track: Track, detection: Detection, at: float, size: tuple[int, int] | None, occluder: float | None
) -> Track:
    """The track moved on to its detection in this frame; `occluder`: the middle column of
    the nearer box that hides its feet, if one does."""
    box = _corners(detection.box)
    dt = at - track.seen_at
    if dt <= 0:
        return replace(track, box=box, label=detection.label)
    (x0, y0), (x1, y1) = ground_point(track.box), ground_point(box)
    measured = ((x1 - x0) / dt, (y1 - y0) / dt)
    weight = VELOCITY_SMOOTHING if track.hits >= 2 else 1.0
    velocity = tuple(weight * m + (1 - weight) * v for m, v in zip(measured, track.velocity, strict=True))
    labels = {**track.labels, detection.label: track.labels.get(detection.label, 0) + 1}
    label = max(labels, key=lambda name: (labels[name], name == detection.label))
    grounded: Corners | None = box if occluder is None else _restored(box, track.whole, occluder)
    whole = box if occluder is None and not is_cut(box, size) else None
    return replace(
        track,
        label=label,
        labels=labels,
        box=box,
        seen_at=at,
        velocity=(velocity[0], velocity[1]),
        hits=track.hits + 1,
        whole=whole or track.whole,
        in_full_view=whole is not None,
        trail=_trail(track.trail, at, grounded, size),
    )


def _restored(box: Corners, whole: Corners | None, occluder: float) -> Corners | None:
    """A box whose lower part is hidden, given back its height (its top is in view) and,
    when the detector trimmed the side towards the one in front, its width."""
    if whole is None:
        return None
    width, height = whole[2] - whole[0], whole[3] - whole[1]
    x1, x2 = box[0], box[2]
    if x2 - x1 < 0.85 * width:
        if occluder < (x1 + x2) / 2:
            x1 = x2 - width
        else:
            x2 = x1 + width
    return x1, box[1], x2, box[1] + height


def hidden_feet(detections: Sequence[Detection], last: Sequence[Corners | None] = ()) -> dict[int, float]:
    """Detections whose bottom edge a nearer road user's box covers, with the middle
    column of that box: a pedestrian passing in front of a parked van moves the van's box
    (the detector trims the part it cannot see), not the van, so such a box's bottom says
    nothing of where it meets the ground.

    Each box is taken with its track's last box (`last`, by detection), so that a box
    already trimmed away from the one in front is still seen to be covered; covered
    means over a quarter of its width or half the width of the one in front, widened
    by a quarter each side.
    """
    hidden = {}
    for i, a in enumerate(detections):
        x1, x2, bottom = a.box.x1, a.box.x2, a.box.y2
        before = last[i] if i < len(last) else None
        if before is not None:
            x1, x2 = min(x1, before[0]), max(x2, before[2])
        for b in detections:
            if b is a or b.box.y2 <= bottom + 2 or b.box.y1 >= bottom:
                continue
            margin = 0.25 * b.box.width
            overlap = min(x2, b.box.x2 + margin) - max(x1, b.box.x1 - margin)
            if overlap >= min(0.25 * (x2 - x1), 0.5 * b.box.width):
                hidden[i] = (b.box.x1 + b.box.x2) / 2
                break
    return hidden


def is_cut(box: Corners, size: tuple[int, int] | None) -> bool:
    """Whether the image's left, right or bottom edge cuts the box: then its bottom centre
    is not where the road user meets the ground."""
    if size is None:
        return False
    width, height = size
    return box[0] <= EDGE_PX or box[2] >= width - EDGE_PX or box[3] >= height - EDGE_PX


def _trail(
    trail: tuple[TrailPoint, ...],
    at: float,
    box: Corners | None,
    size: tuple[int, int] | None,
    hidden: bool = False,
) -> tuple[TrailPoint, ...]:
    kept = tuple(p for p in trail if at - p[0] <= TRAIL_S)
    if box is None or hidden or is_cut(box, size):
        return kept
    x, y = ground_point(box)
    return (*kept, (at, round(x, 2), round(y, 2)))


def _annotated(detection: Detection, track: Track | None) -> Detection:
    """The detection with its track's id, and its track's label (the one it is seen as most)."""
    if track is None:
        return detection
    return detection.model_copy(update={"track_id": track.track_id, "label": track.label})


def track_frame(
    state: TrackerState,
    detections: Sequence[Detection],
    seq: int,
    at: float,
    size: tuple[int, int] | None = None,
) -> TrackedFrame:
    """Match a frame's detections to the tracks; move the state on unless the frame is late.

    Boxes cut by the image's edge (`size`: width, height) or with their feet hidden stay
    out of the trails."""
    live = [t for t in state.tracks if at - t.seen_at <= MAX_AGE_S]
    matches = match(live, detections, at)
    if seq <= state.seq:  # late: ids from the tracks as they are, nothing changes
        known = tuple(live[matches[i]] if i in matches else None for i in range(len(detections)))
        return TrackedFrame(
            tuple(_annotated(d, t) for d, t in zip(detections, known, strict=True)), None, tracks=known
        )
    next_id = state.next_id
    hidden = hidden_feet(
        detections, [live[matches[i]].box if i in matches else None for i in range(len(detections))]
    )
    followed: dict[int, Track] = {}
    previous: dict[int, Point] = {}
    annotated = []
    for i, detection in enumerate(detections):
        if i in matches:
            last = live[matches[i]]
            previous[last.track_id] = ground_point(last.box)
            track = _followed(last, detection, at, size, hidden.get(i))
        else:
            box = _corners(detection.box)
            whole = None if i in hidden or is_cut(box, size) else box
            track = Track(
                next_id,
                detection.label,
                box,
                at,
                trail=_trail((), at, None if i in hidden else box, size),
                in_full_view=whole is not None,
                labels={detection.label: 1},
                whole=whole,
            )
            next_id += 1
        followed[track.track_id] = track
        annotated.append(_annotated(detection, track))
    unseen = tuple(t for t in live if t.track_id not in followed)
    new_state = TrackerState(seq=seq, next_id=next_id, tracks=(*followed.values(), *unseen))
    return TrackedFrame(tuple(annotated), new_state, previous, tuple(followed.values()))
