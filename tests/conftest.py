"""Shared fixtures: a real redis-server per test session, flushed between tests."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from trafficrisk.messages import Camera, CameraState
from trafficrisk.workers.capture import CameraReader, CapturedFrame

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SAMPLE_VIDEO = ROOT / "data" / "vtest.avi"
BEFORE_THE_FLOOR = 1_000_000.0  # a time (1970) before the frame-number floor: numbers start at 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start real processes (marked `slow`) run one after another in one
    xdist worker (`--dist loadgroup`, pyproject.toml): a fleet on two cores is timed by
    what else runs, and two fleets at once would miss their deadlines, not find bugs."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("processes"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test, which installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, empty at the start of each test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.close()


@pytest.fixture
def producer(redis_url: str) -> Iterator[Any]:
    """A Celery app that only sends tasks (by name, JSON) to the session's Redis."""
    from celery import Celery

    app = Celery("producer", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"],
                    task_default_priority=5)
    yield app
    app.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    """A client of the session's Redis, empty at the start of the test."""
    import redis

    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


class LlmSim:
    """The project's LLM simulator as a real subprocess on a free port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trafficrisk.llm_sim", "--port", "0", "--seed", "1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"LLM simulator did not start: {line!r}")
        self.url = line.split()[1]
        self.base = self.url.removesuffix("/v1")

    def configure(self, **changes: float | str) -> None:
        defaults = {"error_rate": 0.0, "timeout_rate": 0.0, "malformed_rate": 0.0, "reason": ""}
        response = requests.post(f"{self.base}/sim/config", json={**defaults, **changes}, timeout=10)
        response.raise_for_status()

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = requests.get(f"{self.base}/sim/report", timeout=10).json()
        return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def llm_sim() -> Iterator[LlmSim]:
    sim = LlmSim("--latency-min", "0.05", "--latency-max", "0.2")
    yield sim
    sim.stop()


RTSP_SERVE = Path(__file__).resolve().parent / "rtsp_serve.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi (not installable in a venv)


class RtspServer:
    """tests/rtsp_serve.py (GStreamer's RTSP server) as a child process on loopback."""

    def __init__(self, video: Path, port: int = 0) -> None:
        self.video, self.port = video, port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 15, tries: int = 2) -> str:
        """Start the server; a start that dies before it is ready (GStreamer on a loaded
        machine, seen once in CI) is tried again, and the last one's stderr is reported."""
        for attempt in range(1, tries + 1):
            line, errors = self._launch(timeout)
            if line.startswith("READY"):
                break
            self.stop()
            if attempt == tries:
                raise RuntimeError(f"rtsp_serve.py not ready: {line!r}; stderr: {errors[-2000:]}")
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])  # a restart reuses it
        return self.url

    def _launch(self, timeout: float) -> tuple[str, str]:
        """The server's first line (READY ...) and, when it has none, what it wrote to stderr
        (kept in a file: a pipe nobody reads would fill and block the server)."""
        command = [SYSTEM_PYTHON, str(RTSP_SERVE), str(self.video), "--port", str(self.port)]
        with tempfile.TemporaryFile("w+") as errors:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else ""
            errors.seek(0)
            return line, "" if line.startswith("READY") else errors.read()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def gstreamer_rtsp_available() -> bool:
    code = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True).returncode == 0


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    if not gstreamer_rtsp_available():
        if os.environ.get("CI"):
            pytest.fail("GStreamer's RTSP server is missing: scripts/setup --test installs it")
        pytest.skip("GStreamer's RTSP server is not installed (scripts/setup --test installs it)")
    server = RtspServer(SAMPLE_VIDEO)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)  # in case a test left it stopped
    server.stop()


class StatusLog:
    """Collects a reader's status reports; waits for one of a given state."""

    def __init__(self) -> None:
        self.entries: list[tuple[CameraState, str]] = []
        self.changed = threading.Condition()

    def __call__(self, state: CameraState, reason: str) -> None:
        with self.changed:
            self.entries.append((state, reason))
            self.changed.notify_all()

    def mark(self) -> int:
        with self.changed:
            return len(self.entries)

    def wait_for(self, state: CameraState, timeout: float, since: int = 0) -> str:
        """The reason of the first report of `state` at or after entry number `since`."""
        def found() -> str | None:
            return next((r for s, r in self.entries[since:] if s is state), None)

        with self.changed:
            ok = self.changed.wait_for(lambda: found() is not None, timeout)
            assert ok, f"no {state} within {timeout}s; saw {self.entries[since:]}"
            return found() or ""


def frames_after(camera: Camera, seconds: float,
                 timeout_s: float = 5.0) -> tuple[CapturedFrame, CapturedFrame]:
    """A real reader on `camera`: its newest frame once online, and again `seconds` later."""
    statuses = StatusLog()
    reader = CameraReader(camera, statuses, timeout_s=timeout_s)
    reader.start()
    try:
        statuses.wait_for(CameraState.ONLINE, timeout=15)
        time.sleep(0.3)
        first = reader.latest()
        time.sleep(seconds)
        later = reader.latest()
    finally:
        reader.stop()
    assert first is not None and later is not None
    return first, later


def offline_reason(camera: Camera, timeout_s: float = 2.0) -> str:
    """The reason a real reader gives for `camera` being offline; it never held a frame."""
    statuses = StatusLog()
    reader = CameraReader(camera, statuses, timeout_s=timeout_s)
    reader.start()
    try:
        reason = statuses.wait_for(CameraState.OFFLINE, timeout=15)
    finally:
        reader.stop()
    assert reader.latest() is None
    return reason


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             details: Callable[[], str] | None = None) -> Any:
    """The predicate's first truthy value; fails after `timeout` with `details()` (say, log tails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{details() if details else ''}")


def worker_env(**settings: str) -> dict[str, str]:
    """This environment without its TRAFFICRISK_ settings, plus these (by field name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({f"TRAFFICRISK_{name.upper()}": value for name, value in settings.items()})
    return env


def start_worker(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A real `trafficrisk worker ROLE` process, in a session of its own, writing to `log`."""
    command = [sys.executable, "-m", "trafficrisk.cli", "worker", role]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, then SIGKILL what has not ended in 20 s."""
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# Webhook receivers: loopback HTTP servers that record what they are sent.
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


def receiver_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/hooks/alerts?token=not-for-logs"


@dataclass
class Receiver:
    """A loopback HTTP server answering each POST with the next of `answers` (the last repeats):
    a status, `(status, retry_after)`, or "hang" (no answer for `hang_s`)."""

    answers: list[int | tuple[int, str] | str]
    hang_s: float = 4.0  # how long a "hang" holds the request
    port: int = 0  # 0: any free one
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.received.append(Received(dict(self.headers.items()), body, time.time()))
                    answer = receiver.answers[min(len(receiver.received), len(receiver.answers)) - 1]
                if answer == "hang":
                    receiver.released.wait(receiver.hang_s)
                    return  # the worker gave up long ago: close without an answer
                status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
                assert isinstance(status, int)
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port or free_port()), Handler)
        self.url = receiver_url(self.server.server_port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
