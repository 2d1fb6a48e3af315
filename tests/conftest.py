"""Shared fixtures: a real redis-server per test session, flushed between tests."""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SAMPLE_VIDEO = ROOT / "data" / "vtest.avi"


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

    def configure(self, **changes: float) -> None:
        defaults = {"error_rate": 0.0, "timeout_rate": 0.0, "malformed_rate": 0.0}
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
