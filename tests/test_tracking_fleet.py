"""Tracks across detect workers: two real detect worker processes share one camera's frames.

The near-miss scenario clip (a truck driving at a pedestrian) is a file camera sampled
at 10 fps; a real capture process, two detect workers (SSD, each with two task threads)
and an aggregate worker process it on a real Redis. Frames finish out of order between
the workers; the truck and the pedestrian must each keep one track id throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import stop_all, wait_for
from trafficrisk.messages import Detection, FrameResult
from trafficrisk.scenario import SCENARIOS, write
from trafficrisk.workers.store import Store

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

CAMERA = "scenario"


def iou(a: list[float], d: Detection) -> float:
    b = (d.box.x1, d.box.y1, d.box.x2, d.box.y2)
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def tracks_of(actor: str, results: list[FrameResult], truth: dict[str, Any]) -> set[int | None]:
    """The track ids of the detections where the truth puts the scripted road user. A file
    camera stamps frames on the file's clock, so a result's frame is its time since the
    first result's (the clip's first frame) at 10 fps; one frame either way is allowed."""
    start, found = min(r.captured_at for r in results), set()
    for result in results:
        index = round((result.captured_at - start) * truth["fps"])
        boxes = [b["box"] for i in (index - 1, index, index + 1) if 0 <= i < len(truth["frames"])
                 for b in truth["frames"][i]["boxes"] if b["actor"] == actor]
        found |= {d.track_id for d in result.detections if any(iou(box, d) >= 0.6 for box in boxes)}
    return found


@pytest.fixture
def two_detect_workers(redis_server: str, tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    clip, _ = write(SCENARIOS["near-miss"], tmp_path)  # a car brakes for a pedestrian crossing
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
    truth = json.loads((folder / "near-miss.json").read_text())
    truck = tracks_of("car", results, truth)
    pedestrian = tracks_of("pedestrian", results, truth)
    worked = [name for name in ("detect-a", "detect-b")
              if "trafficrisk.detect" in (folder / f"{name}.log").read_text()]
    assert worked == ["detect-a", "detect-b"], logs(folder)
    seen = [(r.seq, round(r.captured_at, 2), [(d.track_id, d.label, round(d.box.x1), round(d.box.y2))
                                               for d in r.detections])
            for r in sorted(results, key=lambda r: r.seq)]
    assert len(truck) == 1 and None not in truck, (truck, seen)
    assert len(pedestrian) == 1 and None not in pedestrian, (pedestrian, seen)
    assert truck != pedestrian
