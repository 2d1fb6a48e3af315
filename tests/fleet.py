"""The whole fleet as real processes, and a real browser on its dashboard.

Shared by the end-to-end modules (tests/test_pipeline.py, tests/test_dashboard.py): each
runs one fleet for the module (`running_fleet`), since a fleet takes a while to start
and the machines that run the suite have two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from conftest import LlmSim, free_port, stop_all, wait_for, wait_for_port
from trafficrisk.messages import FrameResult
from trafficrisk.scenario import SCENARIOS, write
from trafficrisk.workers.store import Store

TOKEN = "test-api-token"
PASSWORD = "test-password"
GOOD, DEAD = "campus", "dead"
ROLES = ("detect", "assess", "aggregate", "alerts")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@dataclass
class Fleet:
    env: dict[str, str]
    web_url: str
    llm: LlmSim
    store: Store
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def api(self, path: str) -> requests.Response:
        return self.request("GET", path)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The REST API with the bearer token (scripts need no CSRF header)."""
        return requests.request(method, self.web_url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=10, **kwargs)

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, fleet: Fleet | None = None) -> Any:
    return wait_for(predicate, timeout, what, fleet.log_tails if fleet else None)


def fleet_env(redis_url: str, llm_url: str, cameras_file: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({
        "TRAFFICRISK_REDIS_URL": redis_url,
        "TRAFFICRISK_CAMERAS_FILE": str(cameras_file),
        "TRAFFICRISK_MODEL": "ssd",
        "TRAFFICRISK_DEVICE": "cpu",
        "TRAFFICRISK_LLM_BASE_URL": llm_url,
        "TRAFFICRISK_LLM_API_KEYS": "sk-test-0001",
        "TRAFFICRISK_LLM_TIMEOUT_S": "1",
        "TRAFFICRISK_LLM_CONCURRENCY": "8",
        "TRAFFICRISK_API_TOKEN": TOKEN,
        "TRAFFICRISK_DASHBOARD_PASSWORD": PASSWORD,
        "TRAFFICRISK_SECRET_KEY": "test-secret",
        "TRAFFICRISK_CAMERA_SYNC_S": "0.5",
        # The RTSP test server and the dead camera are on this machine, which cameras may
        # not be by default (docs/operations.md, "Camera URLs").
        "TRAFFICRISK_CAMERA_ALLOW_NETWORKS": "127.0.0.0/8",
        "PORT": str(port),
    })
    return env


# GOOD's pedestrians pass close to the parked cars (a `low` group) every few seconds of
# its clip: with a short cooldown a test sees a new alert within seconds.
PATTERNS = ("patterns:\n"
            "  - {name: risky-group, kind: risky_group, level: low, cooldown_s: 5}\n"
            "  - {name: high-frames, kind: level_frames, frames: 3, within_s: 10, cooldown_s: 60}\n")


def write_cameras(path: Path) -> None:
    """GOOD plays a scenario clip in a loop: two cars parked side by side (a group in every
    frame) and pedestrians walking round them."""
    clip, _ = write(SCENARIOS["side-by-side"], path.parent)
    path.write_text(
        "cameras:\n"
        f"  - {{id: {GOOD}, url: '{clip}', sample_fps: 3}}\n"
        f"  - {{id: {DEAD}, url: 'rtsp://127.0.0.1:{free_port()}/gone', sample_fps: 1}}\n")


def start(fleet: Fleet, name: str, *args: str) -> None:
    with (fleet.logs / f"{name}.log").open("wb") as log:
        fleet.procs[name] = subprocess.Popen([sys.executable, "-m", "trafficrisk.cli", *args], env=fleet.env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextmanager
def running_fleet(redis_url: str, logs: Path) -> Iterator[Fleet]:
    """Workers for every queue, web and capture on the cameras GOOD (a scenario clip) and DEAD,
    against an emptied Redis and the LLM simulator."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    cameras, patterns = logs / "cameras.yaml", logs / "patterns.yaml"
    write_cameras(cameras)
    patterns.write_text(PATTERNS)
    sim = LlmSim("--latency-min", "0.05", "--latency-max", "0.2")
    port = free_port()
    env = {**fleet_env(redis_url, sim.url, cameras, port), "TRAFFICRISK_PATTERNS_FILE": str(patterns)}
    fleet = Fleet(env, f"http://127.0.0.1:{port}", sim, Store(client), logs)
    try:
        for role in ROLES:
            start(fleet, role, "worker", role)
        start(fleet, "web", "web")
        start(fleet, "capture", "capture")
        wait_for_port(port, timeout=30)
        wait_until(lambda: is_answering(fleet.web_url + "/login"), 60, "the web process to answer", fleet)
        yield fleet
    finally:
        stop_all(fleet.procs)
        sim.stop()
        client.close()


def is_answering(url: str) -> bool:
    """gunicorn listens before its worker has loaded the app; this waits for the app."""
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def newest_result(fleet: Fleet, after: float, camera_id: str = GOOD) -> FrameResult | None:
    result = fleet.store.latest(camera_id)
    return result if result is not None and result.captured_at > after else None


# The browser: Debian's Chromium driven by Playwright.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def require_browser() -> None:
    """Skip, saying why, without Chromium or Playwright (fail in CI, which installs both)."""
    missing = None
    if not CHROMIUM.exists():
        missing = "chromium is not installed"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed"
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}: scripts/setup --test installs it")
    pytest.skip(f"{missing} (scripts/setup --test installs it)")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; close it when done."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Any, fleet: Fleet, password: str = PASSWORD) -> None:
    """Through the login form, as an operator would."""
    page.goto(fleet.web_url + "/")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


@contextmanager
def dashboard(fleet: Fleet, viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A real headless Chromium page, logged in to the dashboard."""
    with chromium() as browser:
        page = browser.new_page(viewport=viewport or {"width": 1280, "height": 800})
        log_in(page, fleet)
        yield page


def wait_for_frame(tile: Any, timeout: float = 30) -> str:
    """The src of the tile's frame once one has loaded."""
    img = tile.locator(".frame img")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = img.get_attribute("src") or ""
        if "frame.jpg?seq=" in src and img.evaluate("i => i.complete && i.naturalWidth > 0"):
            return src
        time.sleep(0.2)
    raise AssertionError("the tile never showed a frame")


def ink_on(page: Any, selector: str) -> int:
    """Pixels drawn (not transparent) on the canvas `selector`."""
    return int(page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n; }""", selector))
