"""A camera's scene frame by frame: tracks, motion, pair measures and conflict events, on
scripted road users (trafficrisk/scenario.py) seen by its calibrated pinhole camera.

No video: each frame's detections are the image boxes of the scripted road users
(`Actor.box(t)`, clipped to the image as a detector's would be), sampled at 5 fps, the
default camera rate. The truth is exact, from the scripts: the TTC of the footprints per
time (`truth_measures`) and the observed PET of the whole paths (`truth_pet`).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import redis

from conftest import BEFORE_THE_FLOOR
from trafficrisk.messages import Box, ConflictEvent, Detection
from trafficrisk.scenario import (
    BYSTANDERS,
    CAMERA,
    EAST,
    SCENARIOS,
    Actor,
    Scenario,
    east,
    still,
    truth_measures,
    truth_pet,
    walk,
)
from trafficrisk.workers.conflicts import Frame, Thresholds
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.scene import Geometry, SceneFrame, SceneKeeper, advance_scene, shared_scene
from trafficrisk.workers.store import Store

FPS = 5.0
LIMITS = Thresholds()
PLANE = GroundPlane.from_points(**CAMERA.calibration())
GEOMETRY = Geometry(CAMERA.width, CAMERA.height, calibration=PLANE)


def detection(actor: Actor, t: float) -> Detection | None:
    """The road user's box at time t, clipped to the image; None when it is out of view."""
    box = actor.box(t)
    if box is None:
        return None
    x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
    x2, y2 = min(box[2], CAMERA.width), min(box[3], CAMERA.height)
    if x2 - x1 <= 4 or y2 - y1 <= 4:
        return None
    return Detection(label=actor.label, confidence=0.9, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


@dataclass(frozen=True)
class Shot:
    """One frame: its seq and time, the road users in it (by name) and their detections."""

    seq: int
    at: float
    names: tuple[str, ...]
    detections: tuple[Detection, ...]


def shots(
    actors: Sequence[Actor], seconds: float, seen: Callable[[str, int], bool] | None = None
) -> list[Shot]:
    """The frames of `seconds` at 5 fps (seq 1 at 0 s); `seen(name, seq)` drops some sightings."""
    found = []
    for seq in range(1, int(seconds * FPS) + 1):
        at = (seq - 1) / FPS
        boxes = [(a.name, detection(a, at)) for a in actors]
        kept = [(n, d) for n, d in boxes if d is not None and (seen is None or seen(n, seq))]
        found.append(Shot(seq, at, tuple(n for n, _ in kept), tuple(d for _, d in kept)))
    return found


@dataclass
class Played:
    frames: list[SceneFrame]
    actor_of: dict[int, str]  # track id -> the scripted road user

    def events(self) -> dict[str, ConflictEvent]:
        """The newest version of each conflict event."""
        return {e.conflict_id: e for f in self.frames for e in f.conflicts}

    def track(self, name: str) -> int:
        return next(t for t, n in self.actor_of.items() if n == name)

    def pairs_of(self, a: str, b: str) -> list[tuple[float, float | None, float | None, float | None, float]]:
        """(gap, ttc, pet, drac, closing speed) of every frame's measure of the two road users."""
        found = []
        for f in self.frames:
            names = {i: self.actor_of.get(d.track_id or 0) for i, d in enumerate(f.detections)}
            for p in f.pairs:
                if {names[p.first], names[p.second]} == {a, b}:
                    found.append((p.gap_m, p.ttc_s, p.pet_s, p.drac, p.closing_speed))
        return found


def play(actors: Sequence[Actor], seconds: float, seen: Callable[[str, int], bool] | None = None) -> Played:
    """The frames through a camera's scene kept in memory, in capture order."""
    keeper = SceneKeeper("cam", GEOMETRY, LIMITS)
    frames: list[SceneFrame] = []
    actor_of: dict[int, str] = {}
    for shot in shots(actors, seconds, seen):
        frame = keeper.step(shot.seq, shot.at)(shot.detections)
        frames.append(frame)
        for name, d in zip(shot.names, frame.detections, strict=True):
            assert d.track_id is not None
            assert actor_of.setdefault(d.track_id, name) == name  # one track per road user
    return Played(frames, actor_of)


def truth_min_ttc(a: Actor, b: Actor, seconds: float) -> float:
    """The smallest true TTC of the pair at the sampled times."""
    ttcs = [truth_measures(a, b, (seq - 1) / FPS)[0] for seq in range(1, int(seconds * FPS) + 1)]
    return min(t for t in ttcs if t is not None)


def beside(point: tuple[float, float], metres: float) -> tuple[float, float]:
    """`metres` beyond a point of the eastbound lane, across it (the lane heads -17 degrees:
    across it, away from the camera, is (sin 17, cos 17))."""
    return point[0] + metres * math.sin(math.radians(-EAST)), point[1] + metres * math.cos(math.radians(EAST))


# close-behind with the car slower (4 m/s from 6 m along the lane) and the pedestrian
# waiting 0.8 s: the car is still wholly in view when she steps onto its path.
IN_VIEW_BEHIND = Scenario(
    "close-behind-in-view",
    "a pedestrian steps into the road just behind a passing car that stays in view",
    6.0,
    (
        Actor("car", "pickup", east(6), walk(8.0, EAST, 4.0)),
        Actor("pedestrian", "walker", beside(east(12), 4.0), (*still(0.8, EAST - 90), *walk(8.0, EAST - 90))),
    ),
    safe=False,
    bystanders=BYSTANDERS,
)


@pytest.mark.parametrize("name", ["braking", "near-miss"])
def test_a_car_braking_for_a_pedestrian_makes_one_conflict_with_the_true_ttc(name: str) -> None:
    """braking: 6.5 m/s, braking hard to a stop 1.1 m short of a pedestrian standing in its
    lane; near-miss: 5 m/s, braking for one crossing slowly in front of it. The truth's
    minimum TTC at the sampled times is 0.70 s (braking) and 1.10 s (near-miss)."""
    scenario = SCENARIOS[name]
    car, pedestrian = scenario.actors
    played = play(scenario.everyone, scenario.seconds)
    (event,) = played.events().values()
    assert event.kind == "vehicle-pedestrian"
    assert {played.actor_of[event.first_track], played.actor_of[event.second_track]} == {"car", "pedestrian"}
    truth = truth_min_ttc(car, pedestrian, scenario.seconds)
    assert event.min_ttc_s == pytest.approx(truth, rel=0.2)
    assert event.severity == "serious"  # the truth's is under 1.5 s
    assert event.pet_s is None  # the car stops short: their paths never share ground
    assert not event.is_open  # ended, once the car stood still for 1.5 s


@pytest.mark.parametrize(
    "scenario",
    [
        # the ready-made script: truth PET 0.72 s (the car leaves the shared ground at 1.74 s,
        # fully in view; the pedestrian enters it at 2.46 s); the car's box reaches the
        # image's right edge from 2.0 s on
        SCENARIOS["close-behind"],
        # the car in view all along: truth PET 0.76 s (2.10 s to 2.86 s)
        IN_VIEW_BEHIND,
    ],
    ids=lambda s: s.name,
)
def test_a_pedestrian_just_behind_a_car_makes_a_conflict_with_the_true_pet(scenario: Scenario) -> None:
    car, pedestrian = scenario.actors
    truth = truth_pet(car, pedestrian, scenario.seconds)
    assert truth is not None and truth.pet_s <= 1.0
    played = play(scenario.everyone, scenario.seconds)
    events = [
        e
        for e in played.events().values()
        if {played.actor_of[e.first_track], played.actor_of[e.second_track]} == {"car", "pedestrian"}
    ]
    assert len(events) == 1, f"events of the car and the pedestrian: {events}"
    (event,) = events
    assert event.kind == "vehicle-pedestrian" and event.conflict_type == "crossing"
    assert event.pet_s == pytest.approx(truth.pet_s, abs=0.3)
    assert event.min_ttc_s is None  # she steps in behind it: never on a collision course


@pytest.mark.parametrize(
    ("name", "parked", "closest_m"),
    [
        # a parked car; pedestrians walk past it half a metre from its side (the footprints,
        # placed from the boxes, come within 0.5 m of it)
        ("parked", ("car",), 0.5),
        # two cars parked side by side; a pedestrian walks round them
        ("side-by-side", ("car", "car-2"), None),
        # the safe scripts with moving vehicles: the truth has no conflict in any
        ("parallel", (), None),
        ("arrive-park", (), None),
        ("leave", (), None),
        ("behind", (), None),  # she crosses 3.9 s after the car: a PET beyond 3 s
        ("following", (), None),  # one car 2 s behind another in its lane: no crossing
    ],
)
def test_safe_scenes_make_no_conflict(name: str, parked: tuple[str, ...], closest_m: float | None) -> None:
    scenario = SCENARIOS[name]
    played = play(scenario.everyone, scenario.seconds)
    assert played.events() == {}
    for vehicle in parked:  # never moving, and nothing measured between it and anyone
        track = played.track(vehicle)
        assert not any(d.moving for f in played.frames for d in f.detections if d.track_id == track)
        for other in {a.name for a in scenario.everyone} - {vehicle}:
            measures = played.pairs_of(vehicle, other)
            assert all(m[1:] == (None, None, None, 0.0) for m in measures), (vehicle, other, measures)
    if closest_m is not None:
        gaps = [m[0] for m in played.pairs_of("car", "pedestrian")]
        assert min(gaps) <= closest_m  # they were close, and still no TTC


# braking without bystanders: the car (track 1) and the pedestrian standing in its lane.
BRAKING = SCENARIOS["braking"]


@pytest.mark.parametrize(
    ("pedestrian_frames", "start_frames"),
    [
        # seen in two frames only (0.6 s and 0.8 s, true TTCs 0.84 and 0.77 s): never confirmed,
        # never in a conflict
        ({4, 5}, []),
        ({5}, []),
        # seen from frame 3 (0.4 s): confirmed at its third frame, 5 (0.8 s); in range there
        # and in frame 6: the event opens in frame 6 and starts at frame 5
        ({3, 4, 5, 6}, ["cam:5"]),
        # seen all along: the event starts once both are confirmed and the car moves (frame 4)
        (set(range(1, 41)), ["cam:4"]),
    ],
)
def test_unconfirmed_tracks_are_never_in_a_conflict(
    pedestrian_frames: set[int], start_frames: list[str]
) -> None:
    def seen(name: str, seq: int) -> bool:
        return name != "pedestrian" or seq in pedestrian_frames

    played = play(BRAKING.actors, BRAKING.seconds, seen)
    sightings: dict[int, int] = {}  # with the whole box in view: a box cut by the edge has no ground point
    for frame in played.frames:
        for d in frame.detections:
            assert d.track_id is not None
            whole = d.box.x1 > 2 and d.box.x2 < GEOMETRY.width - 2 and d.box.y2 < GEOMETRY.height - 2
            sightings[d.track_id] = sightings.get(d.track_id, 0) + whole
            assert d.confirmed is (sightings[d.track_id] >= 3)
        for event in frame.conflicts:
            assert sightings[event.first_track] >= 3 and sightings[event.second_track] >= 3
        for p in frame.pairs:
            if p.ttc_s is not None:
                assert frame.detections[p.first].confirmed and frame.detections[p.second].confirmed
    assert [e.start_frame for e in played.events().values()] == start_frames


def braking_state(frames: int) -> tuple[list[Shot], dict | None, dict | None]:
    """The braking script's frames, and the scene's state and samples after the first `frames`."""
    state, samples = None, None
    found = shots(BRAKING.actors, BRAKING.seconds)
    for shot in found[:frames]:
        frame = Frame("cam", shot.seq, shot.at, False)
        _, state, samples = advance_scene(state, samples, shot.detections, frame, GEOMETRY, LIMITS)
    return found, state, samples


@pytest.mark.parametrize(
    ("seq", "late"),
    [
        (5, True),  # older than the state's frame 10
        (10, True),  # the state's own frame again: not above it
        (9, True),  # one frame behind
        (11, False),  # the next frame moves the state on
    ],
)
def test_a_late_frame_changes_nothing(seq: int, late: bool) -> None:
    found, state, samples = braking_state(10)
    before = json.dumps([state, samples])
    shot = found[seq - 1]
    frame = Frame("cam", seq, shot.at, False)
    seen, new_state, new_samples = advance_scene(state, samples, shot.detections, frame, GEOMETRY, LIMITS)
    assert [d.track_id for d in seen.detections] == [1, 2]  # matched to the car's and the pedestrian's
    assert seen.late is late
    if late:
        assert (new_state, new_samples) == (None, None)
        assert (seen.pairs, seen.conflicts, seen.crossings) == ((), (), ())
        assert json.dumps([state, samples]) == before
    else:
        assert new_state is not None and new_state["tracks"]["seq"] == 11
        assert seen.conflicts  # the braking car's open event


def test_advance_scene_leaves_the_state_it_is_given_as_it_was() -> None:
    """A pure step: the state and samples handed in stay as they were, so that a step run
    again on them (an optimistic-locking retry, say) counts nothing twice."""
    found, state, samples = braking_state(10)
    before = json.dumps([state, samples])
    frame = Frame("cam", 11, found[10].at, False)
    advance_scene(state, samples, found[10].detections, frame, GEOMETRY, LIMITS)
    assert json.dumps([state, samples]) == before


def test_two_workers_share_one_camera_s_scene(redis_url: str) -> None:
    """Two threads, each with its own Redis client and Store, take alternate frames of one
    camera, as two detect workers do; each frame is marked in flight when sampled, so that
    `wait_turn` holds a frame until the one before it has gone through the scene. What
    they see equals the same frames through a scene kept in memory, in order."""
    frames = shots(BRAKING.everyone, BRAKING.seconds)
    keeper = SceneKeeper("cam", GEOMETRY, LIMITS)
    expected = [keeper.step(s.seq, s.at)(s.detections) for s in frames]
    sampler = Store(redis.Redis.from_url(redis_url))
    # sampled at a time before the frame-number floor (workers/store.py): numbers from 1
    seqs = [sampler.reserve_frames(["cam"], BEFORE_THE_FLOOR, len(frames))["cam"] for _ in frames]
    assert seqs == [s.seq for s in frames]
    seen: dict[int, SceneFrame] = {}
    barrier = threading.Barrier(2)

    def worker(mine: list[Shot]) -> None:
        store = Store(redis.Redis.from_url(redis_url))
        barrier.wait()
        for shot in mine:
            frame = Frame("cam", shot.seq, shot.at, approximate=False)
            seen[shot.seq] = shared_scene(store, frame, GEOMETRY, LIMITS)(shot.detections)
            store.end_flight("cam", frame.frame_id)

    threads = [threading.Thread(target=worker, args=(frames[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(seen) == [s.seq for s in frames]
    got = [seen[s.seq] for s in frames]

    def ids(frames: list[SceneFrame]) -> list[list[int | None]]:
        return [[d.track_id for d in f.detections] for f in frames]

    assert ids(got) == ids(expected)
    assert [f.conflicts for f in got] == [f.conflicts for f in expected]
    assert [f.pairs for f in got] == [f.pairs for f in expected]
    assert not any(f.late for f in got)
    assert len({e.conflict_id for f in got for e in f.conflicts}) == 1  # the braking car's
    assert sampler.scene_seq("cam") == len(frames)
