"""Tracks across detect workers: two real detect worker processes share one camera's frames.

The near-miss scenario clip (a truck driving at a pedestrian) is a file camera sampled
at 10 fps; a real capture process, two detect workers (SSD, each with two task threads)
and an aggregate worker process it on a real Redis. Frames finish out of order between
the workers; the truck and the pedestrian must each keep one track id throughout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import stop_all, wait_for
from trafficrisk.messages import Detection, FrameResult
from trafficrisk.scenario import SCENARIOS, write
from trafficrisk.workers.store import Store

CAMERA = "scenario"


def is_truck(d: Detection) -> bool:
    return d.label in ("car", "truck", "bus") and d.box.width > 150  # the parked vans are ~80 px


def is_pedestrian(d: Detection) -> bool:
    return d.label == "person" and 560 < (d.box.x1 + d.box.x2) / 2 < 640 and d.box.y2 > 400


@pytest.fixture
def two_detect_workers(redis_server: str, tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    clip, _ = write(SCENARIOS["near-miss"], tmp_path)
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(f"cameras:\n  - {{id: {CAMERA}, url: '{clip}', sample_fps: 10, loop: false}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({"TRAFFICRISK_REDIS_URL": redis_server, "TRAFFICRISK_CAMERAS_FILE": str(cameras),
                "TRAFFICRISK_MODEL": "ssd", "TRAFFICRISK_DEVICE": "cpu", "TRAFFICRISK_DETECT_BATCH_SIZE": "1",
                "TRAFFICRISK_MAX_IN_FLIGHT_PER_CAMERA": "4", "TRAFFICRISK_BURST_S": "0",
                "TRAFFICRISK_CAMERA_SYNC_S": "0.5"})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    commands = {"detect-a": ["worker", "detect", "--name", "detect-a@%h"],
                "detect-b": ["worker", "detect", "--name", "detect-b@%h"],
                "aggregate": ["worker", "aggregate"]}
    try:
        for name, args in commands.items():
            with (tmp_path / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen([sys.executable, "-m", "trafficrisk.cli", *args], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # The clip plays once, in real time: start it when both workers are ready.
        wait_for(lambda: all("ready" in (tmp_path / f"{n}.log").read_text() for n in commands), 60,
                 "the workers to be ready", lambda: logs(tmp_path))
        with (tmp_path / "capture.log").open("wb") as log:
            procs["capture"] = subprocess.Popen([sys.executable, "-m", "trafficrisk.cli", "capture"], env=env,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        yield Store(client), tmp_path
    finally:
        stop_all(procs)
        client.close()


def logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))


def test_tracks_keep_their_ids_across_two_detect_workers(two_detect_workers: tuple[Store, Path]) -> None:
    store, folder = two_detect_workers
    wait_for(lambda: (s := store.statuses().get(CAMERA)) and s.reason == "end of file (loop is off)", 60,
             "the clip to play to its end", lambda: logs(folder))
    results: list[FrameResult] = wait_for(lambda: len(r := store.history(CAMERA, 100)) >= 25 and r, 30,
                                          "results of most frames", lambda: logs(folder))
    truck = {d.track_id for r in results for d in r.detections if is_truck(d)}
    pedestrian = {d.track_id for r in results for d in r.detections if is_pedestrian(d)}
    worked = [name for name in ("detect-a", "detect-b")
              if "trafficrisk.detect" in (folder / f"{name}.log").read_text()]
    assert worked == ["detect-a", "detect-b"], logs(folder)
    assert len(truck) == 1 and None not in truck, truck
    assert len(pedestrian) == 1 and None not in pedestrian, pedestrian
    assert truck != pedestrian
