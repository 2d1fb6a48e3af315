"""Tracks: stable ids and velocities, frames applied in capture order, late frames harmless."""

from __future__ import annotations

import threading

import pytest
import redis

from trafficrisk.messages import Box, Detection
from trafficrisk.workers.store import Store
from trafficrisk.workers.tracking import MAX_AGE_S, TrackerState, shared_tracker, track_frame


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
def test_track_ids(frames: list[tuple[int, float, list[Detection]]], ids: list[list[int | None]],
                   final_seq: int) -> None:
    seen, state = run(frames)
    assert seen == ids
    assert state.seq == final_seq


def test_velocity_of_the_ground_point_after_two_sightings() -> None:
    state = TrackerState()
    velocities = []
    for n in range(1, 5):
        tracked = track_frame(state, [walker(100 + 20 * n)], n, float(n))
        velocities.append(tracked.detections[0].velocity)
        state = tracked.state or state
    assert velocities[0] is None
    assert velocities[1:] == [pytest.approx((20.0, 0.0))] * 3


def test_a_late_frame_leaves_the_state_as_it_was() -> None:
    _, state = run(TWO[2:4])
    late = track_frame(state, [walker(120), walker(400), walker(700)], 1, 1.0)
    assert late.state is None
    assert [d.track_id for d in late.detections] == [1, 2, None]  # matched back in time; no new track


def test_state_survives_json() -> None:
    _, state = run(TWO)
    assert TrackerState.from_json(state.to_json()) == state
    assert TrackerState.from_json(None) == TrackerState()


def test_two_workers_share_one_camera_s_tracks(redis_url: str) -> None:
    """Two threads, each with its own Redis client, take turns over one camera's frames,
    as two detect workers do: every frame's walker keeps id 1, and the state ends at
    the last frame."""
    frames = [(n, n * 0.2, [walker(100 + 4 * n)]) for n in range(1, 61)]
    ids: dict[int, int | None] = {}
    barrier = threading.Barrier(2)

    def worker(mine: list[tuple[int, float, list[Detection]]]) -> None:
        store = Store(redis.Redis.from_url(redis_url))
        barrier.wait()
        for seq, at, detections in mine:
            tracked, _ = shared_tracker(store, "cam", seq, at)(tuple(detections))
            ids[seq] = tracked[0].track_id

    threads = [threading.Thread(target=worker, args=(frames[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    final = TrackerState.from_json(Store(redis.Redis.from_url(redis_url)).update_tracks(
        "cam", lambda state: (state, None)))
    assert set(ids.values()) == {1}
    assert len(ids) == 60
    assert final.seq == 60 and final.next_id == 2
