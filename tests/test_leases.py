"""Camera leases: the fair-share plan, and leases against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from trafficrisk.workers.leases import CameraLeases, fair_share, plan, preference

CAMERAS = [f"cam{i}" for i in range(6)]


@pytest.mark.parametrize(
    ("cameras", "processes", "share"),
    [(6, 1, 6), (6, 2, 3), (7, 2, 4), (1, 3, 1), (0, 2, 0), (5, 0, 5)],
)
def test_fair_share(cameras: int, processes: int, share: int) -> None:
    assert fair_share(cameras, processes) == share


@pytest.mark.parametrize(
    ("held", "processes", "released", "missing"),
    [
        (set(), 1, 0, 6),  # alone: take everything
        (set(CAMERAS), 1, 0, 0),
        (set(CAMERAS), 2, 3, 0),  # a second process joined: give up half
        (set(CAMERAS[:2]), 2, 0, 1),
        ({"gone", *CAMERAS[:3]}, 2, 1, 0),  # a camera no longer wanted is released
    ],
)
def test_plan(held: set[str], processes: int, released: int, missing: int) -> None:
    result = plan("me", CAMERAS, held, processes)
    assert len(result.release) == released
    assert result.missing == missing
    assert not set(result.candidates) & held
    assert "gone" not in result.candidates


def test_preference_differs_between_owners() -> None:
    assert sorted(preference("a", CAMERAS)) == sorted(CAMERAS)
    assert preference("a", CAMERAS) == preference("a", reversed(CAMERAS))
    assert preference("a", CAMERAS) != preference("b", CAMERAS)


def test_leases_are_exclusive_and_expire(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first, second = CameraLeases(client, "first", 0.4), CameraLeases(client, "second", 0.4)
    assert first.acquire(["cam0"], 1) == ["cam0"]
    assert second.acquire(["cam0", "cam1", "cam2", "cam3"], 2) == ["cam1", "cam2"]  # cam0 is taken
    assert second.renew(["cam0", "cam1"]) == {"cam1"}
    assert first.renew(["cam0", "cam1"]) == {"cam0"}
    second.release(["cam0"])  # not its lease: nothing happens
    assert first.owners(["cam0", "cam3"]) == {"cam0": "first", "cam3": None}
    time.sleep(0.6)  # first stopped renewing
    assert second.acquire(["cam0"], 5) == ["cam0"]
    assert first.renew(["cam0"]) == set()
    second.release(["cam0", "cam1"])
    assert second.owners(["cam0", "cam1"]) == {"cam0": None, "cam1": None}
    assert first.acquire([], 3) == [] and first.renew([]) == set()
    client.close()


def test_heartbeat_counts_live_processes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first, second = CameraLeases(client, "first", 0.4), CameraLeases(client, "second", 0.4)
    assert first.heartbeat() == 1
    assert second.heartbeat() == 2
    time.sleep(0.6)
    assert first.heartbeat() == 1  # second fell silent
    first.leave()
    assert second.heartbeat() == 1
    client.close()
