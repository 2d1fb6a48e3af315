"""Tracks: stable ids and velocities, frames applied in capture order, late frames harmless;
trails that leave out boxes whose feet are hidden or cut off by the image's edge."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from conftest import BEFORE_THE_FLOOR
from trafficrisk.messages import Box, Detection
from trafficrisk.workers.scene import wait_turn
from trafficrisk.workers.store import Store
from trafficrisk.workers.tracking import MAX_AGE_S, Corners, TrackerState, hidden_feet, track_frame


def walker(x: float, label: str = "person", y: float = 100.0) -> Detection:
    """A road user 40 px wide and 100 px tall whose box starts at x."""
    return Detection(label=label, confidence=0.9, box=Box(x1=x, y1=y, x2=x + 40, y2=y + 100))


def run(frames: list[tuple[int, float, list[Detection]]]) -> tuple[list[list[int | None]], TrackerState]:
    """Apply (seq, time, detections) frames in the given order; the ids each frame got."""
    state, ids = TrackerState(), []
    for seq, at, detections in frames:
        tracked = track_frame(state, detections, seq, at)
        ids.append([d.track_id for d in tracked.detections])
        state = tracked.state or state
    return ids, state


# One walker 20 px/s to the right, one still, both sampled once a second.
TWO = [(n, float(n), [walker(100 + 20 * n), walker(400)]) for n in range(1, 6)]


@pytest.mark.parametrize(
    ("frames", "ids", "final_seq"),
    [
        (TWO, [[1, 2]] * 5, 5),
        ([TWO[1], TWO[0], *TWO[2:]], [[1, 2], [1, 2], [1, 2], [1, 2], [1, 2]], 5),  # frame 1 late: same ids
        ([TWO[0], TWO[2], TWO[1], TWO[3]], [[1, 2], [1, 2], [1, 2], [1, 2]], 4),
        # gone longer than the tracks live: new ids
        ([TWO[0], (2, 1 + MAX_AGE_S + 1, [walker(120), walker(400)])], [[1, 2], [3, 4]], 2),
        # a car where a person was is another road user
        ([TWO[0], (2, 2.0, [walker(120, "car"), walker(400)])], [[1, 2], [3, 2]], 2),
        # a pickup that the detector calls a car, then a truck, is one road user
        ([(1, 1.0, [walker(100, "car")]), (2, 2.0, [walker(120, "truck")])], [[1], [1]], 2),
        ([(1, 1.0, [])], [[]], 1),
    ],
)
def test_track_ids(
    frames: list[tuple[int, float, list[Detection]]], ids: list[list[int | None]], final_seq: int
) -> None:
    seen, state = run(frames)
    assert seen == ids
    assert state.seq == final_seq


def test_velocity_of_the_ground_point_after_two_sightings() -> None:
    state = TrackerState()
    velocities = []
    for n in range(1, 5):
        tracked = track_frame(state, [walker(100 + 20 * n)], n, float(n))
        track = tracked.tracks[0]
        assert track is not None
        velocities.append(track.velocity)
        state = tracked.state or state
    assert velocities[0] == (0.0, 0.0)  # one sighting: no velocity yet
    assert velocities[1:] == [pytest.approx((20.0, 0.0))] * 3  # 20 px in 1 s


def test_a_late_frame_leaves_the_state_as_it_was() -> None:
    _, state = run(TWO[2:4])
    late = track_frame(state, [walker(120), walker(400), walker(700)], 1, 1.0)
    assert late.state is None
    assert [d.track_id for d in late.detections] == [1, 2, None]  # matched back in time; no new track


def test_state_survives_json() -> None:
    _, state = run(TWO)
    assert TrackerState.from_json(state.to_json()) == state
    assert TrackerState.from_json(None) == TrackerState()


def boxed(label: str, x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(label=label, confidence=0.9, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


# A parked van 200 x 100 px with its bottom edge at row 200.
VAN = (100.0, 100.0, 300.0, 200.0)


# The van's box as detected, with its track's last box (None: a new track).
TRIMMED = (100.0, 100.0, 160.0, 200.0)  # the detector cut off the part a pedestrian hides


@pytest.mark.parametrize(
    ("van", "last", "others", "hidden"),
    [
        # A pedestrian in front of the van (feet at row 260, below the van's 200; head at 120,
        # above it): widened by a quarter of 40 px each side, x 170..230 covers 60 px of the
        # van's 100..300, over half the pedestrian's width (20): the van's feet are hidden
        # behind the pedestrian's middle column, x 200. The pedestrian's own are not.
        (VAN, None, [(180, 120, 220, 260)], {0: 200.0}),
        (VAN, None, [(400, 120, 440, 260)], {}),  # beside the van: x 390..450 misses 100..300
        (VAN, None, [(180, 210, 220, 310)], {}),  # wholly below the van's bottom edge: not in front
        (VAN, None, [(180, 120, 220, 202)], {}),  # feet level with the van's (within 2 px): not nearer
        (VAN, None, [(180, 120, 220, 203)], {0: 200.0}),  # 3 px nearer
        # touching the van's right edge: x 290..350 covers 10 px of it, under the 20 needed
        (VAN, None, [(300, 120, 340, 260)], {}),
        (VAN, None, [(290, 120, 330, 260)], {0: 310.0}),  # x 280..340 covers exactly 20 px
        # a wide van behind a small pedestrian: a quarter of the van's 1000 px is 250, half
        # the pedestrian's 40 px is 20: the smaller suffices
        ((0, 100, 1000, 200), None, [(500, 120, 540, 260)], {0: 520.0}),
        # trimmed to x 100..160, the van's box is missed by x 170..230; with the track's last
        # box (x 100..300) it is still seen to be covered
        (TRIMMED, None, [(180, 120, 220, 260)], {}),
        (TRIMMED, VAN, [(180, 120, 220, 260)], {0: 200.0}),
        (TRIMMED, TRIMMED, [(180, 120, 220, 260)], {}),
        (VAN, None, [], {}),  # alone
    ],
)
def test_hidden_feet(
    van: Corners, last: Corners | None, others: list[Corners], hidden: dict[int, float]
) -> None:
    detections = [boxed("car", *van), *(boxed("person", *box) for box in others)]
    assert hidden_feet(detections, [last, *[None] * len(others)]) == hidden


SIZE = (640, 480)  # a box within 2 px of the left, right or bottom edge is cut
FIRST, SECOND = "first", "second"


@pytest.mark.parametrize(
    ("first", "second", "size", "trail", "whole"),
    [
        # The walker's second box moves a few px. Its trail gets a point (the bottom centre)
        # only for a box that the image's edge does not cut; `whole` is its last uncut box.
        ((10, 100, 50, 200), (13, 100, 53, 200), SIZE, [(30.0, 200.0), (33.0, 200.0)], SECOND),
        ((5, 100, 45, 200), (2, 100, 42, 200), SIZE, [(25.0, 200.0)], FIRST),  # x1 = 2: cut on the left
        ((5, 100, 45, 200), (2.5, 100, 42.5, 200), SIZE, [(25.0, 200.0), (22.5, 200.0)], SECOND),  # 2.5 px
        ((590, 100, 630, 200), (598, 100, 638, 200), SIZE, [(610.0, 200.0)], FIRST),  # x2 = 638: right
        ((300, 370, 340, 470), (300, 378, 340, 478), SIZE, [(320.0, 470.0)], FIRST),  # y2 = 478: bottom
        ((300, 0, 340, 100), (300, 0, 340, 101), SIZE, [(320.0, 100.0), (320.0, 101.0)], SECOND),  # top: in
        ((0, 100, 40, 200), (13, 100, 53, 200), SIZE, [(33.0, 200.0)], SECOND),  # cut at first, whole then
        ((0, 100, 40, 200), (0, 100, 40, 200), SIZE, [], None),  # never whole: no trail
        ((0, 100, 40, 200), (0, 100, 40, 200), None, [(20.0, 200.0), (20.0, 200.0)], SECOND),  # no size
    ],
)
def test_boxes_cut_by_the_image_edge_stay_out_of_the_trail(
    first: Corners,
    second: Corners,
    size: tuple[int, int] | None,
    trail: list[tuple[float, float]],
    whole: str | None,
) -> None:
    state = TrackerState()
    for seq, box in enumerate((first, second), start=1):
        tracked = track_frame(state, [boxed("person", *box)], seq, float(seq), size)
        state = tracked.state or state
    (track,) = state.tracks
    assert track.hits == 2  # one road user all along, its box followed even where cut
    assert track.box == second
    assert [(x, y) for _, x, y in track.trail] == trail
    assert track.whole == {FIRST: first, SECOND: second, None: None}[whole]


PEDESTRIAN = (180.0, 120.0, 220.0, 260.0)  # in front of the van's middle when there


@pytest.mark.parametrize(
    ("frames", "van_trail"),
    [
        # seen whole at first (bottom 200), then its bottom trimmed to 180 by the pedestrian in
        # front: the box is given back its 100 px height, feet at row 200 again, not 180
        ([(VAN, False), ((100, 100, 300, 180), True)], [(200.0, 200.0), (200.0, 200.0)]),
        # trimmed on the side too, to x 100..160 (under 85 % of its 200 px): the width goes
        # back away from the pedestrian, whose middle (200) is right of the box's (130)
        ([(VAN, False), ((100, 100, 160, 180), True)], [(200.0, 200.0), (200.0, 200.0)]),
        # trimmed to x 240..300: the pedestrian's middle is left of the box's (270): x 100..300
        ([(VAN, False), ((240, 100, 300, 180), True)], [(200.0, 200.0), (200.0, 200.0)]),
        # never seen whole: the hidden box's bottom says nothing, no trail point at all
        ([((100, 100, 300, 180), True), ((100, 100, 300, 180), True)], []),
        # hidden at first, whole then: the whole box's point only
        ([((100, 100, 300, 180), True), (VAN, False)], [(200.0, 200.0)]),
    ],
)
def test_hidden_feet_stay_out_of_the_trail(
    frames: list[tuple[Corners, bool]], van_trail: list[tuple[float, float]]
) -> None:
    state = TrackerState()
    for seq, (van, in_front) in enumerate(frames, start=1):
        detections = [boxed("car", *van), *([boxed("person", *PEDESTRIAN)] if in_front else [])]
        tracked = track_frame(state, detections, seq, float(seq), SIZE)
        state = tracked.state or state
    van_track = next(t for t in state.tracks if t.label == "car")
    assert van_track.hits == len(frames)
    assert [(x, y) for _, x, y in van_track.trail] == van_trail


def moved_on(detections: list[Detection], seq: int, at: float) -> Any:
    """A `Store.update_scene` step that moves the scene's tracks on by one frame: the frame's
    track ids, the new state (None when the frame is late) and the samples as they were."""

    def update(state: Any, samples: Any) -> tuple[list[int | None], Any, Any]:
        tracked = track_frame(TrackerState.from_json(state and state["tracks"]), detections, seq, at)
        new = None if tracked.state is None else {"tracks": tracked.state.to_json()}
        return [d.track_id for d in tracked.detections], new, samples

    return update


def test_two_workers_share_one_camera_s_tracks(redis_url: str) -> None:
    """Two threads, each with its own Redis client, take turns over one camera's frames,
    as two detect workers do: each frame is marked in flight when sampled, waits its turn
    (`wait_turn`) and moves the camera's tracks on in Redis (`Store.update_scene`). Every
    frame's walker keeps id 1, and the state ends at the last frame."""
    frames = [(n, n * 0.2, [walker(100 + 4 * n)]) for n in range(1, 61)]
    sampler = Store(redis.Redis.from_url(redis_url))
    # sampled at a time before the frame-number floor (workers/store.py): numbers from 1
    seqs = [sampler.reserve_frames(["cam"], BEFORE_THE_FLOOR, 100)["cam"] for _ in frames]
    assert seqs == list(range(1, 61))
    ids: dict[int, int | None] = {}
    barrier = threading.Barrier(2)

    def worker(mine: list[tuple[int, float, list[Detection]]]) -> None:
        store = Store(redis.Redis.from_url(redis_url))
        barrier.wait()
        for seq, at, detections in mine:
            assert wait_turn(store, "cam", seq, timeout_s=10)
            (ids[seq],) = store.update_scene("cam", moved_on(detections, seq, at))
            store.end_flight("cam", f"cam:{seq}")

    threads = [threading.Thread(target=worker, args=(frames[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    final = sampler.update_scene("cam", lambda state, samples: (state, None, None))
    tracks = TrackerState.from_json(final["tracks"])
    assert len(ids) == 60 and set(ids.values()) == {1}
    assert tracks.seq == 60 and tracks.next_id == 2
    assert len(tracks.tracks[0].trail) == 26  # the last 5 s at 5 frames a second: 7.0 s to 12.0 s
    assert sampler.scene_seq("cam") == 60
