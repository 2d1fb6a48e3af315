"""Conflicts through the whole fleet: real capture, detect, aggregate and alerts workers,
the web process and a real browser, on a real Redis, with the LLM off (rules only).

Cameras, each added to the cameras file when the one before has played: two scenario
clips played once, the near miss with its calibration and the hard braking without one
(its scale fitted from the pedestrians it sees), then the bundled street clip (vtest.avi:
pedestrians, parked vans, no traffic), looping. Each truth conflict must raise exactly one
alert, its conflict record measured within 20 % of the truth's minimum TTC; the street
must open no alert above `low` in two minutes. One camera at a time, so that each clip
gets its 5 fps from the SSD on a shared two-core machine: what frames dropped by
backpressure do to the measures is bench/conflicts.py's (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from fleet import ARTIFACTS, LAPTOP, chromium, is_answering

from conftest import SAMPLE_VIDEO, free_port, stop_all, wait_for, wait_for_port
from trafficrisk.scenario import SCENARIOS, write
from trafficrisk.workers.store import Store

pytestmark = pytest.mark.slow

TOKEN = "conflict-fleet-token"
PASSWORD = "conflict-fleet-password"
STREET = "campus"
# scenario -> calibrated
CLIPS = {"near-miss": True, "braking": False}
# The street clip is watched at least this long (its frames' capture times) for alerts.
STREET_WATCH_S = 120.0


class ConflictFleet:
    def __init__(self, store: Store, web_url: str, logs: Path, truths: dict[str, dict[str, Any]]) -> None:
        self.store, self.web_url, self.logs, self.truths = store, web_url, logs, truths
        self.cameras: list[str] = []
        self.street_since: float | None = None

    def add(self, camera: str) -> None:
        """The camera, added to the cameras file."""
        self.cameras.append(camera)
        (self.logs / "cameras.yaml").write_text(cameras_yaml(self.logs, self.truths, self.cameras))

    def add_street(self) -> float:
        """The street camera, added (once); when it was added."""
        if self.street_since is None:
            self.add(STREET)
            self.street_since = time.time()
        return self.street_since

    def api(self, path: str) -> Any:
        answer = requests.get(self.web_url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))


def cameras_yaml(folder: Path, truths: dict[str, dict[str, Any]], names: list[str]) -> str:
    lines = ["cameras:"]
    for name in names:
        if name == STREET:
            lines.append(f"  - {{id: {STREET}, url: '{SAMPLE_VIDEO}', sample_fps: 5}}")
            continue
        camera = {"id": name, "url": str(folder / f"{name}.avi"), "sample_fps": 5, "loop": False}
        if CLIPS[name]:
            camera["calibration"] = truths[name]["calibration"]
        lines.append(f"  - {json.dumps(camera)}")
    return "\n".join(lines) + "\n"


def spawn(
    procs: dict[str, subprocess.Popen[bytes]], logs: Path, env: dict[str, str], name: str, *args: str
) -> None:
    with (logs / f"{name}.log").open("wb") as log:
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "trafficrisk.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def conflict_fleet(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConflictFleet]:
    logs = tmp_path_factory.mktemp("conflict-fleet")
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    truths = {}
    for name in CLIPS:
        _, truth_file = write(SCENARIOS[name], logs)
        truths[name] = json.loads(truth_file.read_text())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update(
        {
            "TRAFFICRISK_REDIS_URL": redis_server,
            "TRAFFICRISK_CAMERAS_FILE": str(logs / "cameras.yaml"),
            "TRAFFICRISK_MODEL": "ssd",
            "TRAFFICRISK_DEVICE": "cpu",
            "TRAFFICRISK_API_TOKEN": TOKEN,
            "TRAFFICRISK_DASHBOARD_PASSWORD": PASSWORD,
            "TRAFFICRISK_SECRET_KEY": "conflict-fleet",
            "TRAFFICRISK_CAMERA_SYNC_S": "0.5",
            "PORT": str(port),
        }
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    fleet = ConflictFleet(Store(client), f"http://127.0.0.1:{port}", logs, truths)
    try:
        for role in ("detect", "aggregate", "alerts"):
            spawn(procs, logs, env, role, "worker", role)
        spawn(procs, logs, env, "web", "web")
        # The clips play once, in real time: capture starts when the workers are ready.
        wait_for(
            lambda: all("ready" in (logs / f"{r}.log").read_text() for r in ("detect", "aggregate")),
            90,
            "the workers to be ready",
            fleet.tails,
        )
        wait_for_port(port, timeout=30)
        wait_for(lambda: is_answering(fleet.web_url + "/login"), 60, "the web process", fleet.tails)
        fleet.add(next(iter(CLIPS)))
        spawn(procs, logs, env, "capture", "capture")
        yield fleet
    finally:
        stop_all(procs)
        client.close()


def clips_played(fleet: ConflictFleet) -> bool:
    """Whether every clip has played to its end; the next one is added once one has."""
    statuses = fleet.store.statuses()
    played = [n for n in CLIPS if (s := statuses.get(n)) is not None and "end of file" in s.reason]
    waiting = [n for n in CLIPS if n not in fleet.cameras]
    if waiting and set(played) == set(fleet.cameras) - {STREET}:
        fleet.add(waiting[0])
    return len(played) == len(CLIPS)


@pytest.mark.parametrize("camera", sorted(CLIPS))
def test_one_alert_per_truth_conflict(conflict_fleet: ConflictFleet, camera: str) -> None:
    fleet = conflict_fleet
    wait_for(lambda: clips_played(fleet), 90, "the clips to play to their end", fleet.tails)
    time.sleep(3)  # the last frames' results, and the alerts they open
    (truth,) = fleet.truths[camera]["conflicts"]
    alerts = fleet.api(f"/api/alerts?camera={camera}")
    conflicts = fleet.api(f"/api/conflicts?camera={camera}&severity=serious")
    assert len(alerts) == 1, (alerts, conflicts)
    (alert,) = alerts
    (event,) = [c for c in conflicts if c["conflict_id"] == alert["conflict_id"]]
    assert alert["risk_level"] == "high" and alert["pattern"] == "conflict" and alert["source"] == "rules"
    assert event["kind"] == truth["kind"] == "vehicle-pedestrian"
    played = sorted(round(r.captured_at, 1) for r in fleet.store.history(camera, 200))
    assert event["min_ttc_s"] == pytest.approx(truth["min_ttc_s"], rel=0.2), (event, played)
    assert event["approximate"] is not CLIPS[camera]
    assert {"frame"} <= set(alert["evidence"])


def test_the_dashboard_shows_the_conflict(conflict_fleet: ConflictFleet) -> None:
    fleet = conflict_fleet
    wait_for(
        lambda: fleet.api("/api/conflicts?camera=near-miss&severity=serious"),
        90,
        "the near miss's conflict",
        fleet.tails,
    )
    (event,) = fleet.api("/api/conflicts?camera=near-miss&severity=serious")
    with chromium() as browser:
        page = browser.new_page(viewport=LAPTOP)
        page.goto(fleet.web_url + "/")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        item = page.locator(f"#conflicts li[data-conflict-id='{event['conflict_id']}']")
        item.wait_for(timeout=15000)
        assert item.get_attribute("data-severity") == "serious"
        text = item.inner_text()
        assert "vehicle-pedestrian" in text and f"TTC {event['min_ttc_s']:.1f} s" in text
        assert "null" not in text and "approximate" not in text  # the near miss is calibrated
        alert = page.locator("#alerts li.alert.high").filter(has_text="near-miss")
        alert.first.wait_for(timeout=15000)
        assert "conflict" in alert.first.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "screenshots").mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "screenshots" / "conflicts-laptop.png"), full_page=True)


def test_the_sample_video_opens_no_alert_above_low(conflict_fleet: ConflictFleet) -> None:
    fleet = conflict_fleet
    wait_for(lambda: clips_played(fleet), 90, "the clips to play to their end", fleet.tails)
    since = fleet.add_street()

    def watched() -> float:
        latest = fleet.store.latest(STREET)
        return latest.captured_at - since if latest else 0.0

    wait_for(
        lambda: watched() >= STREET_WATCH_S, STREET_WATCH_S + 90, "two minutes of the street", fleet.tails
    )
    frames = len(fleet.store.history(STREET, 2000))
    assert frames >= 0.8 * 5 * STREET_WATCH_S, f"only {frames} frames of the street"  # most of 5 fps
    assert fleet.api(f"/api/alerts?camera={STREET}") == []
    assert fleet.api(f"/api/conflicts?camera={STREET}&severity=serious") == []
