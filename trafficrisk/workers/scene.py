"""A camera's scene, one frame at a time: tracks, scale, motion, pair measures, conflicts.

`advance_scene` is the detect stage's per-camera step, a pure function of the camera's
state and one frame's detections. The fleet keeps the state in Redis and applies a
camera's frames in capture order (`Store.update_scene`); `trafficrisk evaluate` keeps
it in memory. Both run this same code.

A pair of road users is measured only when it can make a traffic conflict: a vehicle
with a pedestrian or another vehicle, both tracks confirmed (seen in
`CONFIRMED_HITS` frames), and a vehicle of the pair moving; a pedestrian walking up
to a parked car is no conflict. TTC and DRAC need the two to close in; PET needs
paths that cross (not one following the other, which TTC covers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal, Protocol

import numpy as np

from trafficrisk.messages import Box, ConflictEvent, Detection, LineCrossing, PairMeasure, Zone
from trafficrisk.workers import kinematics, scale
from trafficrisk.workers.conflicts import Frame, PairObservation, Thresholds, advance_conflicts
from trafficrisk.workers.ground_plane import GroundPlane, away_from_camera
from trafficrisk.workers.kinematics import Footprint, Trail, Vector
from trafficrisk.workers.motion import Motion, estimate
from trafficrisk.workers.road_users import is_vehicle, pair_kind, road_user
from trafficrisk.workers.tracking import Track, TrackerState, track_frame
from trafficrisk.workers.zones import crossings, zones_of

CONFIRMED_HITS = 3
# Pairs further apart than this (footprint to footprint) and on no collision course are
# left out of a frame's result: nothing about them is worth storing.
REPORTED_GAP_M = 10.0
# Two headings within this many degrees go the same way (rear-end), beyond 180 minus
# it the opposite way (head-on); in between their paths cross.
SAME_WAY_DEG = 30.0

State = dict[str, Any]


@dataclass(frozen=True)
class Geometry:
    """What the camera's configuration gives the scene."""

    width: int
    height: int
    calibration: GroundPlane | None = None
    zones: tuple[Zone, ...] = ()


@dataclass(frozen=True)
class SceneFrame:
    detections: tuple[Detection, ...]
    pairs: tuple[PairMeasure, ...]
    conflicts: tuple[ConflictEvent, ...]
    crossings: tuple[LineCrossing, ...]
    scale: Literal["calibrated", "approximate"]
    late: bool = False  # a frame older than the state: ids only, nothing measured


# Advances the camera's scene by one frame's detections.
SceneStep = Callable[[tuple[Detection, ...]], "SceneFrame"]


@dataclass(frozen=True)
class _User:
    """A tracked road user on the ground: in this frame (`index` into its detections), or
    seen a moment ago (`index` None: it may be the first of a post-encroachment)."""

    index: int | None
    track: Track
    motion: Motion
    footprint: Footprint
    zones: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.track.label

    @property
    def seen_whole(self) -> bool:
        return self.index is not None and self.track.in_full_view

    @property
    def confirmed(self) -> bool:
        """Seen in `CONFIRMED_HITS` frames, with its feet on the ground in as many: a road
        user coming into view at the image's edge has hits but no ground points yet."""
        return self.track.hits >= CONFIRMED_HITS and len(self.track.trail) >= CONFIRMED_HITS


def advance_scene(
    state: State | None,
    samples: scale.Samples | None,
    detections: tuple[Detection, ...],
    frame: Frame,
    geometry: Geometry,
    limits: Thresholds,
) -> tuple[SceneFrame, State | None, scale.Samples | None]:
    """One frame through the camera's scene: what it shows, and the new state and scale
    samples (None for both when the frame is late and changes nothing)."""
    state = state or {}
    size = (geometry.width, geometry.height)
    tracked = track_frame(TrackerState.from_json(state.get("tracks")), detections, frame.seq, frame.at, size)
    found = tuple(
        d.model_copy(update={"zones": zones_of(d, geometry.zones)}) if geometry.zones else d
        for d in tracked.detections
    )
    kind: Literal["calibrated", "approximate"] = "calibrated" if geometry.calibration else "approximate"
    if tracked.state is None:
        return SceneFrame(found, (), (), (), kind, late=True), None, None
    samples = scale.add_sightings(samples, found, tracked.tracks, geometry.width, geometry.height)
    plane = geometry.calibration or scale.fit(samples, geometry.width, geometry.height).plane
    frame = Frame(frame.camera_id, frame.seq, frame.at, plane.approximate)
    users, moved = _on_ground(found, tracked.tracks, plane, frame.at)
    here = {user.track.track_id for user in users.values()}
    everyone = [moved.get(t.track_id, t) for t in tracked.state.tracks]
    recent = _recent(everyone, here, plane, frame.at, limits.potential_pet_s)
    annotated = tuple(_annotated(d, users.get(i)) for i, d in enumerate(found))
    pairs, observations = _measure(users, recent, plane)
    conflicts, conflict_state = advance_conflicts(state.get("conflicts"), observations, frame, limits)
    tracks = TrackerState(tracked.state.seq, tracked.state.next_id, tuple(everyone))
    new_state = {"tracks": tracks.to_json(), "conflicts": conflict_state}
    crossed = tuple(crossings(annotated, tracked.previous, geometry.zones))
    return SceneFrame(annotated, tuple(pairs), tuple(conflicts), crossed, kind), new_state, samples


def _on_ground(
    detections: tuple[Detection, ...], tracks: tuple[Track | None, ...], plane: GroundPlane, at: float
) -> tuple[dict[int, _User], dict[int, Track]]:
    """Each tracked detection's motion and footprint, by detection index, and its track
    with its motion state moved on, by track id."""
    users, moved = {}, {}
    for i, (detection, track) in enumerate(zip(detections, tracks, strict=True)):
        if track is None:
            continue
        motion, track = estimate(track, plane, at)
        moved[track.track_id] = track
        user = _user(i, track, motion, plane, detection.zones)
        if user is not None:
            users[i] = user
    return users, moved


def _recent(
    tracks: list[Track], here: set[int], plane: GroundPlane, at: float, within_s: float
) -> list[_User]:
    """Road users not measurable in this frame (gone, hidden, cut by the image's edge)
    whose trail reaches into the last `within_s` seconds, as they were at its end: the
    first road user of a post-encroachment that one arriving now may make."""
    found = []
    for track in tracks:
        if track.track_id in here or not track.trail or at - track.trail[-1][0] > within_s:
            continue
        motion, _ = estimate(track, plane, track.trail[-1][0])
        user = _user(None, track, motion, plane, ())
        if user is not None and user.confirmed:
            found.append(user)
    return found


def _user(
    index: int | None, track: Track, motion: Motion, plane: GroundPlane, zones: tuple[str, ...]
) -> _User | None:
    if not track.trail or not all(math.isfinite(v) for v in motion.position):
        return None
    x1, y1, x2, y2 = track.box
    return _User(
        index, track, motion, _footprint(track.label, Box(x1=x1, y1=y1, x2=x2, y2=y2), motion, plane), zones
    )


def _footprint(label: str, box: Box, motion: Motion, plane: GroundPlane) -> Footprint:
    cls = road_user(label)
    away = plane.away_from_camera(box.ground_point)
    heading = motion.heading or _resting_heading(label, box, plane, cls.length_m, away)
    return kinematics.placed(motion.position, away, heading, cls.length_m, cls.width_m)


def _resting_heading(label: str, box: Box, plane: GroundPlane, length: float, away: Vector) -> Vector:
    """A road user never seen moving: a vehicle whose box spans most of its length across
    the image stands across the line of sight, otherwise along it."""
    across = plane.metres_per_pixel(box.ground_point) * box.width
    if not is_vehicle(label) or across < 0.75 * length:
        return away
    return -away[1], away[0]


def _annotated(detection: Detection, user: _User | None) -> Detection:
    if user is None:
        return detection
    m, centre = user.motion, user.footprint.centre
    return detection.model_copy(
        update={
            "ground": (round(centre[0], 2), round(centre[1], 2)),
            "velocity_mps": (round(m.velocity[0], 2), round(m.velocity[1], 2)),
            "speed_mps": round(m.speed, 2),
            "moving": m.moving,
            "confirmed": user.confirmed,
        }
    )


def _measure(
    users: dict[int, _User], recent: list[_User], plane: GroundPlane
) -> tuple[list[PairMeasure], list[PairObservation]]:
    """The frame's pair measures (by detection index) and what the conflict engine needs
    of them (by track id): TTC and DRAC between road users of this frame, PET also with
    those seen a moment ago."""
    pairs, observations = [], []
    everyone = [*users.values(), *recent]
    for a, b in combinations(everyone, 2):
        kind = pair_kind(a.label, b.label)
        if kind is None or (a.index is None and b.index is None) or _one_after_the_other(a, b):
            continue
        both_here = a.index is not None and b.index is not None
        gap = kinematics.gap(a.footprint, b.footprint) if both_here else math.inf
        measured = _conflict_measures(a, b, plane, both_here)
        if measured is None:
            if both_here and gap <= REPORTED_GAP_M:
                pairs.append(_pair(a, b, gap, 0.0, None, None, None, plane))
            continue
        ttc, drac, closing, pet, conflict_type = measured
        if both_here and (gap <= REPORTED_GAP_M or ttc is not None):
            pairs.append(_pair(a, b, gap, closing, ttc, pet.pet_s if pet else None, drac, plane))
        observations.append(_observation(a, b, kind, conflict_type, ttc, drac, closing, pet, plane))
    return pairs, observations


def _pair(
    a: _User,
    b: _User,
    gap: float,
    closing: float,
    ttc: float | None,
    pet: float | None,
    drac: float | None,
    plane: GroundPlane,
) -> PairMeasure:
    first, second = sorted((a.index or 0, b.index or 0))
    return PairMeasure(
        first=first,
        second=second,
        gap_m=round(gap, 2),
        closing_speed=round(closing, 2),
        ttc_s=_r(ttc),
        pet_s=_r(pet),
        drac=_r(drac),
        approximate=plane.approximate,
    )


def _one_after_the_other(a: _User, b: _User) -> bool:
    """Two tracks of one family never seen together: most likely one road user whose
    track was lost (hidden, stopped where it was not looked for) and found again, not two
    that could encroach on each other."""
    if road_user(a.label).family != road_user(b.label).family:
        return False
    (a_first, a_last), (b_first, b_last) = ((u.track.trail[0][0], u.track.trail[-1][0]) for u in (a, b))
    return a_last < b_first or b_last < a_first


def _conflict_measures(a: _User, b: _User, plane: GroundPlane, both_here: bool) -> tuple[Any, ...] | None:
    """TTC, DRAC, closing speed, PET and conflict type of a pair that may conflict, else None."""
    vehicle_moves = any(u.motion.moving and is_vehicle(u.label) for u in (a, b))
    if not (a.confirmed and b.confirmed and vehicle_moves):
        return None
    fa, fb, va, vb = a.footprint, b.footprint, a.motion.velocity, b.motion.velocity
    ttc = drac = None
    closing = 0.0
    # A road user half hidden, or cut by the image's edge, is where its last whole box
    # puts it: good enough for the path a PET compares, not for a time to collision.
    if both_here and a.seen_whole and b.seen_whole:
        closing = kinematics.closing_speed(fa, va, fb, vb)
        ttc = kinematics.time_to_collision(fa, va, fb, vb)  # None unless they close in
        drac = kinematics.drac(fa, va, fb, vb) if ttc is not None else None
    conflict_type = _conflict_type(a, b)
    pet = None
    if conflict_type == "crossing":
        pet = kinematics.post_encroachment_time(_trail(a, plane), _trail(b, plane), _since(a), _since(b))
    if not both_here and pet is None:
        return None
    return ttc, drac, closing, pet, conflict_type


def _since(user: _User) -> float:
    """Where the new part of a road user's path begins: its sample before the newest one
    (it may have been hidden in between). Nothing is new for one not in this frame, nor
    for one standing still: it arrives nowhere (a jittering box is no encroachment)."""
    if user.index is None or not user.motion.moving:
        return math.inf
    trail = user.track.trail
    return trail[-2][0] if len(trail) >= 2 else trail[-1][0]


def _conflict_type(a: _User, b: _User) -> str:
    """Crossing, rear-end or head-on, from the angle between their headings; a pedestrian
    standing still has no heading, and is crossed."""
    ha, hb = _heading(a), _heading(b)
    if ha is None or hb is None:
        return "crossing"
    angle = kinematics.heading_angle(ha, hb)
    if angle <= SAME_WAY_DEG:
        return "rear-end"
    return "head-on" if angle >= 180 - SAME_WAY_DEG else "crossing"


def _heading(user: _User) -> Vector | None:
    """Where it goes, or, standing still, which way a vehicle faces (a person: nowhere)."""
    if user.motion.moving:
        return user.motion.heading
    return None if road_user(user.track.label).family == "person" else user.footprint.heading


def _trail(user: _User, plane: GroundPlane) -> Trail:
    """Where the user's footprint was over its trail, turned as it is now."""
    trail = np.asarray(user.track.trail, dtype=np.float64)
    image = trail[:, 1:]
    points = plane.to_ground_many(image)
    away = away_from_camera(plane, image)
    f = user.footprint
    h = np.array(f.heading)
    depth = f.length * np.abs(away @ h) + f.width * np.abs(away @ np.array([-h[1], h[0]]))
    centres = points + away * depth[:, None] / 2
    keep = np.isfinite(centres).all(axis=1)
    times = trail[keep, 0]
    return Trail(times, centres[keep], np.tile(h, (len(times), 1)), f.length, f.width, user.motion.velocity)


def _observation(
    a: _User,
    b: _User,
    kind: str,
    conflict_type: str,
    ttc: float | None,
    drac: float | None,
    closing: float,
    pet: kinematics.Encroachment | None,
    plane: GroundPlane,
) -> PairObservation:
    first, second = sorted((a, b), key=lambda u: u.track.track_id)
    if pet is not None and ttc is None:
        location = pet.where
    else:
        location = (
            (a.footprint.centre[0] + b.footprint.centre[0]) / 2,
            (a.footprint.centre[1] + b.footprint.centre[1]) / 2,
        )
    return PairObservation(
        first_track=first.track.track_id,
        second_track=second.track.track_id,
        first_label=first.label,
        second_label=second.label,
        kind=kind,
        conflict_type=conflict_type,
        ttc_s=ttc,
        drac=drac,
        closing_speed=closing,
        pet_s=pet.pet_s if pet else None,
        first_speed=first.motion.speed,
        second_speed=second.motion.speed,
        location=location,
        image_point=plane.to_image(location),
        zones=tuple(sorted(set(a.zones) | set(b.zones))),
    )


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class SceneStore(Protocol):
    def update_scene(self, camera_id: str, update: Callable[[Any, Any], tuple[Any, Any, Any]]) -> Any: ...

    def scene_seq(self, camera_id: str) -> int: ...

    def is_in_flight(self, camera_id: str, seq: int) -> bool: ...


# How long a frame waits for the camera's frame before it to go through the scene: the
# measures are only right in capture order. Past it, the frame goes on as late.
TURN_WAIT_S = 2.0
_TURN_POLL_S = 0.01


def wait_turn(store: SceneStore, camera_id: str, seq: int, timeout_s: float = TURN_WAIT_S) -> bool:
    """Wait until the frame before `seq` has gone through the scene, or is no longer on
    its way (dropped, expired); False when that took longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while store.scene_seq(camera_id) < seq - 1 and store.is_in_flight(camera_id, seq - 1):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_TURN_POLL_S)
    return True


def shared_scene(store: SceneStore, frame: Frame, geometry: Geometry, limits: Thresholds) -> SceneStep:
    """The step of a camera's scene that every detect worker shares, in capture order."""

    def step(detections: tuple[Detection, ...]) -> SceneFrame:
        wait_turn(store, frame.camera_id, frame.seq)

        def update(state: Any, samples: Any) -> tuple[SceneFrame, Any, Any]:
            return advance_scene(state, samples, detections, frame, geometry, limits)

        seen: SceneFrame = store.update_scene(frame.camera_id, update)
        return seen

    return step


class SceneKeeper:
    """A camera's scene kept in memory: `trafficrisk evaluate`, and tests."""

    def __init__(self, camera_id: str, geometry: Geometry, limits: Thresholds) -> None:
        self.camera_id, self.geometry, self.limits = camera_id, geometry, limits
        self.state: State | None = None
        self.samples: scale.Samples | None = None

    def step(self, seq: int, at: float) -> SceneStep:
        def run(detections: tuple[Detection, ...]) -> SceneFrame:
            frame = Frame(self.camera_id, seq, at, approximate=False)
            seen, state, samples = advance_scene(
                self.state, self.samples, detections, frame, self.geometry, self.limits
            )
            if state is not None:
                self.state, self.samples = state, samples
            return seen

        return run
