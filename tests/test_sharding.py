"""Two real capture processes split the cameras; a killed one's cameras move over.

Each camera is sampled at 1 fps, so its frame counter (`tr:seq:<camera>`) grows by
about one a second when exactly one process reads it, and by two if two did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import SAMPLE_VIDEO
from trafficrisk.workers.leases import CameraLeases

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

LEASE_S, SYNC_S = 3.0, 0.5
CAMERAS = [f"cam{i}" for i in range(6)]


def write_cameras(path: Path, ids: list[str]) -> None:
    lines = [f"  - {{id: {c}, url: '{SAMPLE_VIDEO}', sample_fps: 1}}" for c in ids]
    path.write_text("cameras:\n" + "\n".join(lines) + "\n")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Capture:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "trafficrisk.cli", "capture"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def owns(self, owner: str) -> bool:
        return owner.split(":")[1] == str(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(20)


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[tuple[list[Capture], redis.Redis, Path]]:
    cameras = tmp_path / "cameras.yaml"
    write_cameras(cameras, CAMERAS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({"TRAFFICRISK_REDIS_URL": redis_url, "TRAFFICRISK_CAMERAS_FILE": str(cameras),
                "TRAFFICRISK_CAPTURE_LEASE_S": str(LEASE_S), "TRAFFICRISK_CAMERA_SYNC_S": str(SYNC_S),
                "TRAFFICRISK_MAX_IN_FLIGHT_PER_CAMERA": "1000"})
    processes = [Capture(env, tmp_path / f"capture{i}.log") for i in range(2)]
    client = redis.Redis.from_url(redis_url)
    try:
        yield processes, client, cameras
    finally:
        for process in processes:
            process.stop()
        client.close()


def owners(client: redis.Redis, ids: list[str]) -> dict[str, str | None]:
    return CameraLeases(client, "observer", LEASE_S).owners(ids)


def seqs(client: redis.Redis, ids: list[str]) -> dict[str, int]:
    return {c: int(client.get(f"tr:seq:{c}") or 0) for c in ids}


def balanced(client: redis.Redis, processes: list[Capture]) -> bool:
    held = owners(client, CAMERAS)
    counts = [sum(1 for o in held.values() if o and p.owns(o)) for p in processes]
    return counts == [3, 3]


def test_each_camera_is_read_by_exactly_one_process(cluster: tuple[list[Capture], redis.Redis, Path]) -> None:
    processes, client, _ = cluster
    wait_until(lambda: balanced(client, processes), 30, "three cameras on each process")
    before, started = seqs(client, CAMERAS), time.monotonic()
    time.sleep(6)
    elapsed = time.monotonic() - started
    grown = {c: n - before[c] for c, n in seqs(client, CAMERAS).items()}
    # One reader at 1 fps gives ~elapsed frames; two readers would give about twice that.
    assert all(elapsed - 2 <= n <= elapsed + 1.5 for n in grown.values()), grown
    assert balanced(client, processes)


def test_a_killed_process_hands_its_cameras_over(cluster: tuple[list[Capture], redis.Redis, Path]) -> None:
    processes, client, _ = cluster
    wait_until(lambda: balanced(client, processes), 30, "three cameras on each process")
    victim, survivor = processes
    orphans = [c for c, o in owners(client, CAMERAS).items() if o and victim.owns(o)]
    victim.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: all(o and survivor.owns(o) for o in owners(client, CAMERAS).values()),
               LEASE_S + 4 * SYNC_S + 2, "the survivor to hold every camera")
    moved_after = time.monotonic() - killed_at
    assert moved_after <= LEASE_S + 4 * SYNC_S + 2
    before = seqs(client, orphans)
    wait_until(lambda: all(n > before[c] for c, n in seqs(client, orphans).items()), 10,
               "frames from the moved cameras")


def test_cameras_file_edits_take_effect(cluster: tuple[list[Capture], redis.Redis, Path]) -> None:
    processes, client, cameras = cluster
    wait_until(lambda: balanced(client, processes), 30, "three cameras on each process")
    write_cameras(cameras, [*CAMERAS[1:], "cam9"])  # cam0 removed, cam9 added
    os.utime(cameras, (time.time() + 1, time.time() + 1))  # mtime resolution: make the change visible
    wait_until(lambda: owners(client, ["cam9"])["cam9"] is not None, 10, "cam9 to be read")
    wait_until(lambda: owners(client, ["cam0"])["cam0"] is None and not client.hexists("tr:cameras", "cam0"),
               10, "cam0 to be dropped")
    before = seqs(client, ["cam9"])
    wait_until(lambda: seqs(client, ["cam9"])["cam9"] > before["cam9"], 10, "frames from cam9")


def test_cameras_file_is_applied_once_per_change(redis_url: str, tmp_path: Path) -> None:
    from trafficrisk.capture_service import CameraFileWatch
    from trafficrisk.settings import Settings
    from trafficrisk.workers.store import Store

    cameras = tmp_path / "cameras.yaml"
    write_cameras(cameras, ["a", "b"])
    settings = Settings(redis_url=redis_url, cameras_file=cameras)
    store = Store(redis.Redis.from_url(redis_url))
    CameraFileWatch(settings).seed_if_changed(store)
    assert [c.id for c in store.list_cameras()] == ["a", "b"]
    store.delete_camera("a")  # an operator deletes it through the API
    CameraFileWatch(settings).seed_if_changed(store)  # a capture process restarts
    assert [c.id for c in store.list_cameras()] == ["b"]
    write_cameras(cameras, ["c"])  # the file changes: b goes, c comes
    watch = CameraFileWatch(settings)
    watch.seed_if_changed(store)
    assert [c.id for c in store.list_cameras()] == ["c"]
    store.client.flushall()  # Redis restarts without its data
    watch.seed_if_changed(store)  # the same process, the file unchanged: seeded again
    assert [c.id for c in store.list_cameras()] == ["c"]
    store.client.close()
